import re
import socket
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from mloop_common.settings import ServiceSettings, service_config


class ServingSettings(ServiceSettings):
    """Serving settings (env prefix MLOOP_SERVING_)."""

    model_config = service_config("serving")
    service: ClassVar[str] = "serving"
    uses_database: ClassVar[bool] = False

    # Every serving replica must see every promotion, so each has its own consumer group.
    instance_id: str = Field(default_factory=socket.gethostname)
    max_instances: int = Field(10_000, ge=1)
    max_body_bytes: int = 20 * 1024 * 1024
    # Shadow scorings running at once; a request arriving past it is not shadowed (counted), never delayed.
    max_shadow_pending: int = Field(8, ge=1)
    log_batch_size: int = Field(500, ge=1)
    log_interval_seconds: float = Field(0.5, gt=0)
    # The broker refuses messages over its limit (1 MiB by default); the rest is room for the trace headers.
    log_max_event_bytes: int = Field(900_000, ge=4096)
    # Prediction-log events Kafka does not take wait here (one file per instance id) and are replayed in order.
    log_spill_dir: Path = Path(".run/serving-spill")
    log_spill_max_bytes: int = Field(1024**3, ge=1024 * 1024)
    # How long one publish may wait for Kafka before its event is spilled (the producer alone would wait 40 s).
    log_publish_timeout_seconds: float = Field(5.0, gt=0)
    # At shutdown: how long to wait for Kafka before spilling what is left.
    log_stop_grace_seconds: float = Field(5.0, gt=0)

    # Off: predictions are answered but not logged (no drift, no feedback joins downstream); to measure the log.
    log_predictions: bool = True
    # Threads of the numeric libraries (OpenMP, BLAS) per serving process; 0 leaves their default (one per core).
    # A request scores a row or a small batch: more threads only add hand-offs, and several workers (or
    # processes) on a machine would each start a thread per core. OMP_NUM_THREADS etc. set by hand win.
    native_threads: int = Field(1, ge=0)
    # Adaptive micro-batching of concurrent small requests (see batching.py); off: each request scored alone.
    batching: bool = True
    # How long a request may wait for others to join its batch (only while requests come concurrently): in
    # slices of batch_quiet_us, as long as each slice brings more requests, at most batch_max_wait_us in all.
    batch_max_wait_us: int = Field(3000, ge=0, le=100_000)
    batch_quiet_us: int = Field(700, ge=1, le=100_000)
    batch_max_rows: int = Field(256, ge=1)

    @property
    def log_spill_path(self) -> Path:
        return self.log_spill_dir / (re.sub(r"[^A-Za-z0-9._-]", "_", self.instance_id) + ".spill")
