import sys
from typing import ClassVar

from pydantic import Field

from mloop_common.settings import ServiceSettings, service_config


class ValidatorSettings(ServiceSettings):
    """Validator settings (env prefix MLOOP_VALIDATOR_)."""

    model_config = service_config("validator")
    service: ClassVar[str] = "validator"

    # The interpreter of the infra check's fresh process; point it at serving's to check with serving's libraries.
    infra_python: str = sys.executable
    infra_timeout_seconds: float = Field(120, gt=0)
