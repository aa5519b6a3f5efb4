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
