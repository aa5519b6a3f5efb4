"""The UI's routes for the common access check: every page is PUBLIC there because the UI signs people in
itself (a session cookie holding nothing but a random id) and then calls the services with their own key,
so each service still decides what that key may read or change. Pages that need a session say so
(``pages.SignedIn``); only the sign-in page, the assets and the probes do not."""

from mloop_common.auth import Permission
from mloop_common.http import Rules

SESSION = Permission.PUBLIC  # checked by the page itself: see the module docstring

RULES: Rules = {
    ("GET", "/login"): Permission.PUBLIC,
    ("POST", "/login"): Permission.PUBLIC,
    ("POST", "/logout"): Permission.PUBLIC,
    ("GET", "/assets/plotly.min.js"): Permission.PUBLIC,
    ("GET", "/"): SESSION,
    ("GET", "/models/{name}"): SESSION,
    ("GET", "/models/{name}/versions/{version}"): SESSION,
    ("POST", "/models/{name}/versions/{version}/{decision}"): SESSION,
    ("GET", "/lineage"): SESSION,
    ("GET", "/approvals"): SESSION,
    ("GET", "/drift/{name}"): SESSION,
    ("GET", "/datasets"): SESSION,
    ("GET", "/datasets/{name}"): SESSION,
    ("GET", "/pipeline"): SESSION,
    ("GET", "/pipeline/events"): SESSION,
}
