"""Who may call which of drift's routes (deny by default: a route missing here stops the service at start)."""

from mloop_common.auth import Permission
from mloop_common.http import Rules

RULES: Rules = {
    ("GET", "/v1/drift/{model}/reports"): Permission.READ,
    ("GET", "/v1/drift/{model}/reports/{report_id}"): Permission.READ,
    ("GET", "/v1/drift/{model}/reports/{report_id}/histograms"): Permission.READ,
    ("GET", "/v1/predictions/{request_id}"): Permission.READ,
}
