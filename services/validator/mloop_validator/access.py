"""Who may call which of the validator's routes (deny by default: a route missing here stops the service at start)."""

from mloop_common.auth import Permission
from mloop_common.http import Rules

RULES: Rules = {
    ("GET", "/v1/evaluations"): Permission.READ,
    ("GET", "/v1/evaluations/{evaluation_id}"): Permission.READ,
    ("GET", "/v1/evaluations/{evaluation_id}/report.html"): Permission.READ,
}
