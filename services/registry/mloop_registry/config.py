from mloop_common.settings import ServiceSettings


class RegistrySettings(ServiceSettings):
    """Registry settings (env prefix MLOOP_REGISTRY_)."""

    max_spec_bytes: int = 256 * 1024
