"""Who may call which of the registry's routes (deny by default: a route missing here stops the service at start)."""

from mloop_common.auth import Permission
from mloop_common.http import Rules

RULES: Rules = {
    ("POST", "/v1/models"): Permission.SPECS,
    ("GET", "/v1/models"): Permission.READ,
    ("GET", "/v1/models/{name}"): Permission.READ,
    ("GET", "/v1/models/{name}/versions"): Permission.READ,
    ("POST", "/v1/models/{name}/versions"): Permission.REGISTER,
    ("GET", "/v1/models/{name}/versions/{version}"): Permission.READ,
    ("GET", "/v1/models/{name}/aliases/{alias}"): Permission.READ,
    ("PUT", "/v1/models/{name}/aliases/{alias}"): Permission.RELEASE,
    ("DELETE", "/v1/models/{name}/aliases/{alias}"): Permission.RELEASE,
    ("POST", "/v1/models/{name}/versions/{version}/approve"): Permission.RELEASE,
    ("POST", "/v1/models/{name}/versions/{version}/reject"): Permission.RELEASE,
    ("GET", "/v1/lineage/{name}/{version}"): Permission.READ,
    ("PUT", "/v1/models/{name}/tags"): Permission.ANNOTATE,
    ("DELETE", "/v1/models/{name}/tags/{key}"): Permission.ANNOTATE,
    ("PUT", "/v1/models/{name}/versions/{version}/tags"): Permission.ANNOTATE,
    ("DELETE", "/v1/models/{name}/versions/{version}/tags/{key}"): Permission.ANNOTATE,
    ("PUT", "/v1/models/{name}/description"): Permission.ANNOTATE,
    ("PUT", "/v1/models/{name}/versions/{version}/description"): Permission.ANNOTATE,
    ("GET", "/v1/search/versions"): Permission.READ,
    ("GET", "/v1/audit"): Permission.READ,
    ("GET", "/v1/audit/verify"): Permission.READ,
    ("POST", "/v1/keys"): Permission.ADMIN,
    ("GET", "/v1/keys"): Permission.ADMIN,
    ("DELETE", "/v1/keys/{key_id}"): Permission.ADMIN,
    ("POST", "/v1/auth/introspect"): Permission.INTROSPECT,
    ("GET", "/v1/artifacts/references"): Permission.READ,
    ("POST", "/v1/artifacts/gc"): Permission.ADMIN,
}
