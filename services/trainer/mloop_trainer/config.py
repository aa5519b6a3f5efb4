from mloop_common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Trainer settings (env prefix MLOOP_TRAINER_)."""

    workers: int = 1
