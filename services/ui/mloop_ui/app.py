"""The web UI's app: server-rendered pages over the services' APIs, signed in with an mloop API key."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from mloop_common.http import service_app
from mloop_ui import access, pages
from mloop_ui.backend import BackendError
from mloop_ui.bootstrap import bootstrap
from mloop_ui.config import UiSettings

STATIC = Path(__file__).parent / "static"
# Found, not imported: the Python side of plotly is never used.
PLOTLY_JS = Path(find_spec("plotly").origin or "").parent / "package_data" / "plotly.min.js"  # type: ignore[union-attr]
# Scripts and styles from this origin only; plotly.js sets inline styles on the elements it draws.
POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(settings: UiSettings) -> FastAPI:
    app = service_app(
        settings,
        bootstrap=bootstrap,
        router=pages.router,
        rules=access.RULES,
        description="The web UI: models, evaluations, lineage, drift, approvals, datasets and the live event stream.",
        max_body_bytes=64 * 1024,
    )
    install(app)
    return app


def install(app: FastAPI) -> None:
    """What the UI adds to an app with its routes: assets, error pages, sign-in redirects, security headers."""
    app.state.plotly_js = PLOTLY_JS
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(pages.SignInRequired)
    async def sign_in(request: Request, error: pages.SignInRequired) -> Response:
        if request.url.path.startswith("/pipeline/events"):  # fetched by the page's script, not navigated to
            return JSONResponse({"error": "signed out: reload the page to sign in again"}, 401)
        return RedirectResponse("/login?" + urlencode({"next": error.next_path}), status_code=303)

    @app.exception_handler(BackendError)
    async def backend_error(request: Request, error: BackendError) -> Response:
        return pages.error_page(request, error.status, f"{error.service} answered: {error.message}")

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response
