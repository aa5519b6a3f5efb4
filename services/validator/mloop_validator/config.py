from mloop_common.settings import ServiceSettings


class ValidatorSettings(ServiceSettings):
    """Validator settings (env prefix MLOOP_VALIDATOR_)."""
