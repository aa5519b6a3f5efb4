"""Who may call which of the trainer's routes (deny by default: a route missing here stops the service at start)."""

from mloop_common.auth import Permission
from mloop_common.http import Rules

RULES: Rules = {
    ("GET", "/v1/runs"): Permission.READ,
    ("GET", "/v1/runs/{run_id}"): Permission.READ,
    ("POST", "/v1/runs/{run_id}/reproduce"): Permission.TRAIN,
    ("GET", "/v1/artifacts/references"): Permission.READ,
}
