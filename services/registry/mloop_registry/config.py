from typing import ClassVar

from mloop_common.settings import ServiceSettings, service_config
from mloop_common.spec import SpecLimits
from mloop_registry import alerts as alerting  # a module: RegistrySettings stays the one *Settings name here


class RegistrySettings(ServiceSettings):
    """Registry settings (env prefix MLOOP_REGISTRY_)."""

    model_config = service_config("registry")
    service: ClassVar[str] = "registry"

    max_spec_bytes: int = 256 * 1024
    # How much work a spec may ask for; the trainer holds the same limits (MLOOP_TRAINER_LIMITS__...).
    limits: SpecLimits = SpecLimits()
    # Alerts to people (webhook, e-mail): MLOOP_REGISTRY_ALERTS__CHANNELS (JSON) and the rest of AlertSettings.
    alerts: alerting.AlertSettings = alerting.AlertSettings()
