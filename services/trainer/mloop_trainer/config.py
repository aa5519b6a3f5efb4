from typing import ClassVar

from pydantic import Field

from mloop_common.settings import ServiceSettings, service_config


class TrainerSettings(ServiceSettings):
    """Trainer settings (env prefix MLOOP_TRAINER_)."""

    model_config = service_config("trainer")
    service: ClassVar[str] = "trainer"

    workers: int = Field(1, ge=1, description="training worker processes (each fits one model at a time)")
