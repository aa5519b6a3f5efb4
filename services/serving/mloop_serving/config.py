import socket

from pydantic import Field

from mloop_common.settings import ServiceSettings


class ServingSettings(ServiceSettings):
    """Serving settings (env prefix MLOOP_SERVING_)."""

    # Every serving replica must see every promotion, so each has its own consumer group.
    instance_id: str = Field(default_factory=socket.gethostname)
    max_instances: int = 10_000
    max_body_bytes: int = 20 * 1024 * 1024
    log_batch_size: int = 500
    log_interval_seconds: float = 0.5
