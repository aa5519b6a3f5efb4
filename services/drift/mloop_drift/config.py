from typing import ClassVar

from mloop_common.settings import ServiceSettings, service_config


class DriftSettings(ServiceSettings):
    """Drift settings (env prefix MLOOP_DRIFT_)."""

    model_config = service_config("drift")
    service: ClassVar[str] = "drift"

    # A retrain recommendation needs at least this many labelled production rows of the version.
    min_labelled_rows: int = 1000
    # How many of the newest labelled rows a retrain recommendation carries.
    recent_rows: int = 20_000
