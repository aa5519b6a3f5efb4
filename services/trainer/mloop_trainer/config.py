from typing import ClassVar

from pydantic import Field

from mloop_common.settings import ServiceSettings, service_config
from mloop_common.spec import SpecLimits


class TrainerSettings(ServiceSettings):
    """Trainer settings (env prefix MLOOP_TRAINER_)."""

    model_config = service_config("trainer")
    service: ClassVar[str] = "trainer"

    workers: int = Field(1, ge=1, description="training worker processes (each fits one model at a time)")
    # A run over either budget ends failed, with the reason, and is not retried (see workers.py).
    memory_budget_mb: int = Field(4096, ge=512, description="private memory of one run's worker process, MB")
    time_budget_seconds: float = Field(3600, gt=0, description="wall-clock time one run may take")
    # At SIGTERM a fit still running after this is stopped and its event left for the next trainer, so a
    # deployment's rollout never waits for an hour-long fit (nor kills it without a word after its grace).
    stop_grace_seconds: float = Field(2.0, ge=0, description="how long a stopping trainer lets a job finish")
    # The registry holds the same limits (MLOOP_REGISTRY_LIMITS__...); a spec stored under looser ones fails here.
    limits: SpecLimits = SpecLimits()
