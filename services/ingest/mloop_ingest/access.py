"""Who may call which of ingest's routes (deny by default: a route missing here stops the service at start)."""

from mloop_common.auth import Permission
from mloop_common.http import Rules

RULES: Rules = {
    ("POST", "/v1/datasets/{name}/versions"): Permission.PUBLISH,
    ("GET", "/v1/datasets"): Permission.READ,
    ("GET", "/v1/datasets/{name}/versions"): Permission.READ,
    ("GET", "/v1/datasets/{name}/versions/{version}"): Permission.READ,
    ("GET", "/v1/datasets/{name}/versions/{version}/contract"): Permission.READ,
    ("GET", "/v1/datasets/{name}/contract"): Permission.READ,
    ("GET", "/v1/datasets/{name}/diff"): Permission.READ,
    ("GET", "/v1/datasets/{name}/policy"): Permission.READ,
    ("PUT", "/v1/datasets/{name}/policy"): Permission.PUBLISH,
    ("GET", "/v1/artifacts/references"): Permission.READ,
}
