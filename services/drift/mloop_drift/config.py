from typing import ClassVar

from pydantic import Field

from mloop_common.settings import ServiceSettings, service_config


class DriftSettings(ServiceSettings):
    """Drift settings (env prefix MLOOP_DRIFT_)."""

    model_config = service_config("drift")
    service: ClassVar[str] = "drift"

    # A retrain recommendation needs at least this many labelled production rows of the version.
    min_labelled_rows: int = 1000
    # How many of the newest labelled rows a retrain recommendation carries.
    recent_rows: int = 20_000
    # A retrain asked for and not decided yet blocks the next one at most this long (a failed run says nothing).
    retrain_timeout_seconds: float = Field(6 * 3600, gt=0)
    # Hysteresis: a signal (a feature's drift, the performance check) that raised a retrain alarm raises
    # none again until a later window has it below this share of its alarm threshold.
    hysteresis_clear_fraction: float = Field(0.8, gt=0, le=1)

    # Retention (docs/drift.md#retention). A judged window is revised by labels and late predictions until
    # this many days passed since its last judgement; then it is closed.
    label_horizon_days: float = Field(14, gt=0)
    # Observations (predictions with their labels) are deleted this many days after their window closed.
    observation_retention_days: float = Field(7, ge=0)
    # Report revisions are deleted this many days after their window closed, except those that raised an
    # alarm and the latest revision of a window that raised one.
    report_retention_days: float = Field(90, ge=0)
    # How often the retention task runs, and how many rows one of its transactions deletes at most.
    purge_interval_seconds: float = Field(3600, gt=0)
    purge_batch: int = Field(5000, ge=1, le=100_000)
