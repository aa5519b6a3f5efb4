from mloop_common.settings import ServiceSettings


class TrainerSettings(ServiceSettings):
    """Trainer settings (env prefix MLOOP_TRAINER_)."""

    workers: int = 1
    # A long fit must not get the consumer thrown out of its group.
    max_poll_interval_ms: int = 3_600_000
