from typing import ClassVar

from mloop_common.settings import ServiceSettings, service_config


class RegistrySettings(ServiceSettings):
    """Registry settings (env prefix MLOOP_REGISTRY_)."""

    model_config = service_config("registry")
    service: ClassVar[str] = "registry"

    max_spec_bytes: int = 256 * 1024
