"""Who may call which of serving's routes (deny by default: a route missing here stops the service at start).

Prediction and feedback need the ``app`` role (or admin) unless ``MLOOP_AUTH__OPEN_PREDICT=true``. The OIP
health endpoints stay open, as load balancers and inference clients probe them without credentials; model
metadata and readiness go with prediction, since a client reads them before it infers.
"""

from mloop_common.auth import Permission
from mloop_common.http import Rules

RULES: Rules = {
    ("POST", "/v1/models/{name}:predict"): Permission.PREDICT,
    ("POST", "/v1/models/{name}/versions/{version}:predict"): Permission.PREDICT,
    ("POST", "/v1/models/{name}/aliases/{alias}:predict"): Permission.PREDICT,
    ("POST", "/v1/feedback"): Permission.FEEDBACK,
    ("GET", "/v2/health/live"): Permission.PUBLIC,
    ("GET", "/v2/health/ready"): Permission.PUBLIC,
    ("GET", "/v2"): Permission.PREDICT,
    ("GET", "/v2/models/{name}"): Permission.PREDICT,
    ("GET", "/v2/models/{name}/versions/{version}"): Permission.PREDICT,
    ("GET", "/v2/models/{name}/ready"): Permission.PREDICT,
    ("GET", "/v2/models/{name}/versions/{version}/ready"): Permission.PREDICT,
    ("POST", "/v2/models/{name}/infer"): Permission.PREDICT,
    ("POST", "/v2/models/{name}/versions/{version}/infer"): Permission.PREDICT,
}
