from typing import ClassVar

from mloop_common.settings import ServiceSettings, service_config


class DriftSettings(ServiceSettings):
    """Drift settings (env prefix MLOOP_DRIFT_)."""

    model_config = service_config("drift")
    service: ClassVar[str] = "drift"

    # A full window waits for labels until this share of it is labelled, or until this many
    # windows' worth of predictions are queued behind it.
    min_label_share: float = 0.5
    label_wait_windows: int = 2
    # A retrain recommendation needs at least this many labelled production rows.
    min_labelled_rows: int = 1000
    recent_rows: int = 20_000
    # New extremes beyond the reference range are flagged as a data-quality problem only when
    # they are common; a few are what covariate shift looks like.
    out_of_range_share: float = 0.1
