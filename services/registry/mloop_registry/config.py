from typing import ClassVar

from pydantic import BaseModel, Field

from mloop_common.settings import ServiceSettings, service_config
from mloop_common.spec import SpecLimits
from mloop_registry import alerts as alerting  # a module: RegistrySettings stays the one *Settings name here


class RetentionSettings(BaseModel):
    """Artifact retention (``MLOOP_REGISTRY_RETENTION__*``, mloop_registry.artifact_gc): unreferenced artifacts
    older than the grace period are deleted, by the background task (off unless an interval is set) or by
    ``mloop artifacts gc``."""

    # Seconds between background runs; 0: no background runs (the CLI still runs one on demand).
    interval_seconds: float = Field(0.0, ge=0)
    # Unreferenced artifacts younger than this are kept: long enough for any row about to name one to commit, and
    # for an event naming one to be consumed (a consumer may lag behind, e.g. a trainer down for hours). At least
    # an hour: storing the same bytes again restarts an artifact's age only once it is half an hour old.
    grace_hours: float = Field(24.0, ge=1)
    # The other services that hold references, by name: their base URLs (the registry asks itself directly).
    sources: dict[str, str] = {"ingest": "http://127.0.0.1:8001", "trainer": "http://127.0.0.1:8002"}
    timeout_seconds: float = Field(60.0, gt=0)  # of one service's answer


class RegistrySettings(ServiceSettings):
    """Registry settings (env prefix MLOOP_REGISTRY_)."""

    model_config = service_config("registry")
    service: ClassVar[str] = "registry"

    max_spec_bytes: int = 256 * 1024
    # How much work a spec may ask for; the trainer holds the same limits (MLOOP_TRAINER_LIMITS__...).
    limits: SpecLimits = SpecLimits()
    # Alerts to people (webhook, e-mail): MLOOP_REGISTRY_ALERTS__CHANNELS (JSON) and the rest of AlertSettings.
    alerts: alerting.AlertSettings = alerting.AlertSettings()
    retention: RetentionSettings = RetentionSettings()
