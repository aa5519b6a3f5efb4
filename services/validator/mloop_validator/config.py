from typing import ClassVar

from mloop_common.settings import ServiceSettings, service_config


class ValidatorSettings(ServiceSettings):
    """Validator settings (env prefix MLOOP_VALIDATOR_)."""

    model_config = service_config("validator")
    service: ClassVar[str] = "validator"
