"""The UI's pages: each reads what it shows from the services with the signed-in key and renders a template.

The services decide what a key may see and do; a page only hides the buttons a role could not use.
Forms that change something carry the session's CSRF token and go out as POST; the session cookie is
HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from mloop_common.auth import Permission
from mloop_common.errors import MloopError
from mloop_common.http import components
from mloop_ui import views
from mloop_ui.backend import Backend, BackendError, gather_limited, segment
from mloop_ui.bootstrap import UiService
from mloop_ui.sessions import COOKIE, Session

router = APIRouter(include_in_schema=False)
# Autoescaping on for every template: names, reasons and comments come from users of the other services.
templates = Jinja2Templates(
    env=Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape())
)
Ui = Annotated[UiService, Depends(components)]
NAME = Annotated[str, "a model or dataset name"]
MAX_KEY_CHARS = 512
MAX_COMMENT_CHARS = 2000
STALE_FORM = "This form is stale or did not come from this page; reload it and try again."


def _figure(value: Any) -> Markup:
    """Figure JSON safe inside <script type="application/json">: no '</' can close the element."""
    text = json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text)  # noqa: S704 - escaped above for its one context


def _when(value: str | None) -> str:
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


templates.env.filters["figure"] = _figure
templates.env.filters["when"] = _when
templates.env.filters["q"] = lambda value: quote(str(value), safe="")


class SignInRequired(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


def current_session(request: Request, ui: Ui) -> Session | None:
    return ui.sessions.get(request.cookies.get(COOKIE))


def signed_in(request: Request, ui: Ui) -> Session:
    session = current_session(request, ui)
    if session is None:
        raise SignInRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return session


SignedIn = Annotated[Session, Depends(signed_in)]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    ui: UiService | None = getattr(request.app.state, "service", None)
    session = ui.sessions.get(request.cookies.get(COOKIE)) if ui else None
    return templates.TemplateResponse(
        request,
        template,
        {"session": session, "Permission": Permission, "path": request.url.path, **context},
        status_code=status,
    )


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {401: "Not signed in", 403: "Not allowed", 404: "Not found", 503: "A service is unavailable"}
    return render(request, "error.html", status, title=titles.get(status, "Something went wrong"), message=message)


def safe_next(value: str | None) -> str:
    """Only a path on this site: never another host (``//evil``, ``/\\evil``, ``https://...``)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or "\\" in value:
        return "/"
    return value


# --- signing in ---------------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, next: Annotated[str, Query(max_length=2000)] = "/") -> HTMLResponse:
    return render(request, "login.html", next=safe_next(next))


@router.post("/login")
async def login(
    request: Request,
    ui: Ui,
    key: Annotated[str, Form(max_length=MAX_KEY_CHARS)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    try:
        principal = await request.app.state.access.authenticator.authenticate(key.strip())
    except MloopError as error:  # the registry, which knows the stored keys, cannot be asked now
        return render(
            request, "login.html", 503, next=safe_next(next), error=f"Cannot check the key now: {error.message}"
        )
    if principal is None:
        return render(
            request,
            "login.html",
            401,
            next=safe_next(next),
            error="That key is not valid (unknown, malformed or revoked).",
        )
    if not principal.allows(Permission.READ):
        message = f"Role {principal.role!r} cannot read models and reports; sign in with another key."
        return render(request, "login.html", 403, next=safe_next(next), error=message)
    session = ui.sessions.open(key.strip(), principal)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        session.id,
        max_age=int(ui.settings.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=ui.settings.secure_cookies,
        path="/",
    )
    return response


@router.post("/logout")
async def logout(request: Request, ui: Ui, csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    session = current_session(request, ui)
    if session is not None and not session.csrf_matches(csrf):
        return error_page(request, 403, STALE_FORM)
    if session is not None:
        ui.sessions.close(session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/assets/plotly.min.js")
async def plotly_js(request: Request) -> FileResponse:
    return FileResponse(
        request.app.state.plotly_js, media_type="text/javascript", headers={"Cache-Control": "max-age=86400"}
    )


# --- models ---------------------------------------------------------------------------------------------------


async def _latest_drift(backend: Backend, key: str, model: str) -> dict[str, Any] | None:
    try:
        found = await backend.get("drift", f"/v1/drift/{segment(model)}/reports", key, limit=1)
    except BackendError:
        return None  # drift away: the list still shows, without verdicts
    reports = found.get("reports") or []
    return reports[0] if reports else None


@router.get("/")
async def models_page(request: Request, ui: Ui, session: SignedIn) -> HTMLResponse:
    backend, key = ui.backend, session.key
    models, audit = await asyncio.gather(
        backend.get("registry", "/v1/models", key), backend.get("registry", "/v1/audit", key, limit=1000)
    )
    names = [m["name"] for m in models["models"]]
    versions = await gather_limited(backend.get("registry", f"/v1/models/{segment(n)}/versions", key) for n in names)
    drift = await gather_limited(_latest_drift(backend, key, n) for n in names)
    rows = views.model_rows(
        models["models"],
        {n: v["versions"] for n, v in zip(names, versions, strict=True)},
        dict(zip(names, drift, strict=True)),
        audit["entries"],
    )
    return render(request, "models.html", rows=rows)


@router.get("/models/{name}")
async def model_page(request: Request, ui: Ui, session: SignedIn, name: NAME) -> HTMLResponse:
    backend, key, path = ui.backend, session.key, segment(name)
    model = await backend.get("registry", f"/v1/models/{path}", key)
    versions, runs, evaluations, audit, drift = await asyncio.gather(
        backend.get("registry", f"/v1/models/{path}/versions", key),
        backend.get("trainer", "/v1/runs", key, model=name, limit=500),
        backend.get("validator", "/v1/evaluations", key, model=name, limit=500),
        backend.get("registry", "/v1/audit", key, model=name, limit=1000),
        _latest_drift(backend, key, name),
    )
    metric = model["spec"].get("metric", "")
    histories = views.history(
        name, metric, runs["runs"], evaluations["evaluations"], versions["versions"], audit["entries"]
    )
    figure = views.metric_over_versions(metric, evaluations["evaluations"], versions["versions"])
    return render(
        request,
        "model.html",
        model=model,
        versions=versions["versions"],
        training=runs.get("training") or [],
        histories=histories,
        figure=figure,
        audit=audit["entries"],
        drift=drift,
    )


@router.get("/models/{name}/versions/{version}")
async def version_page(
    request: Request,
    ui: Ui,
    session: SignedIn,
    name: NAME,
    version: Annotated[int, "version"],
    request_id: Annotated[str | None, Query(max_length=100)] = None,
    done: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    if not 1 <= version <= 2**31 - 1:
        return error_page(request, 404, f"version {version} of {name!r} does not exist")
    backend, key, path = ui.backend, session.key, segment(name)
    found, model, audit = await asyncio.gather(
        backend.get("registry", f"/v1/models/{path}/versions/{version}", key),
        backend.get("registry", f"/v1/models/{path}", key),
        backend.get("registry", "/v1/audit", key, model=name, limit=1000),
    )
    evaluation, run, prediction = await asyncio.gather(
        backend.get_or_none("validator", f"/v1/evaluations/{segment(found['evaluation_id'])}", key),
        backend.get_or_none("trainer", f"/v1/runs/{segment(found['run_id'])}", key),
        backend.get_or_none("drift", f"/v1/predictions/{segment(request_id)}", key) if request_id else _nothing(),
    )
    figures: dict[str, Any] = {}
    if evaluation:
        figures = {
            "metrics": views.metrics_bars(evaluation),
            "slices": views.slice_bars(evaluation),
            "calibration": views.calibration(evaluation),
        }
    entries = [e for e in audit["entries"] if e.get("version") == version]
    return render(
        request,
        "version.html",
        model=model,
        version=found,
        evaluation=evaluation,
        run=run,
        figures=figures,
        graph=views.lineage_graph(name, found, audit["entries"]),
        audit=entries,
        prediction=prediction,
        request_id=request_id,
        done=done,
    )


async def _nothing() -> None:
    return None


@router.get("/lineage")
async def lineage_search(
    request: Request, ui: Ui, session: SignedIn, request_id: Annotated[str, Query(max_length=100)] = ""
) -> Response:
    """A prediction's request id → the version that answered it, opened at its lineage."""
    request_id = request_id.strip()
    if not request_id:
        return error_page(request, 400, "Type a prediction's request id (the request_ids of a predict answer).")
    prediction = await ui.backend.get_or_none("drift", f"/v1/predictions/{segment(request_id)}", session.key)
    if prediction is None or prediction.get("version") is None:
        return error_page(
            request, 404, f"No logged prediction has request id {request_id!r} (or drift no longer keeps it)."
        )
    target = f"/models/{segment(prediction['model'])}/versions/{prediction['version']}?" + urlencode(
        {"request_id": request_id}
    )
    return RedirectResponse(target + "#lineage", status_code=303)


# --- approvals ----------------------------------------------------------------------------------------------------


@router.get("/approvals")
async def approvals_page(request: Request, ui: Ui, session: SignedIn) -> HTMLResponse:
    backend, key = ui.backend, session.key
    found = await backend.get("registry", "/v1/search/versions", key, q="status = pending_approval", limit=500)
    pending = found["versions"]
    evaluations = await gather_limited(
        backend.get_or_none("validator", f"/v1/evaluations/{segment(v['evaluation_id'])}", key) for v in pending
    )
    return render(request, "approvals.html", pending=list(zip(pending, evaluations, strict=True)))


@router.post("/models/{name}/versions/{version}/{decision}")
async def decide(
    request: Request,
    ui: Ui,
    session: SignedIn,
    name: NAME,
    version: int,
    decision: str,
    csrf: Annotated[str, Form(max_length=100)] = "",
    comment: Annotated[str, Form(max_length=MAX_COMMENT_CHARS)] = "",
) -> Response:
    if decision not in ("approve", "reject"):
        return error_page(request, 404, f"no such action {decision!r}")
    if not session.csrf_matches(csrf):
        return error_page(request, 403, STALE_FORM)
    if not session.allows(Permission.RELEASE):
        return error_page(request, 403, f"Role {session.principal.role!r} cannot approve or reject versions.")
    await ui.backend.call(
        "registry",
        "POST",
        f"/v1/models/{segment(name)}/versions/{version}/{decision}",
        session.key,
        json={"comment": comment},
    )
    done = "approved" if decision == "approve" else "rejected"
    return RedirectResponse(f"/models/{segment(name)}/versions/{version}?done={done}", status_code=303)


# --- drift --------------------------------------------------------------------------------------------------------


@router.get("/drift/{name}")
async def drift_page(
    request: Request, ui: Ui, session: SignedIn, name: NAME, window: Annotated[str | None, Query(max_length=64)] = None
) -> HTMLResponse:
    backend, key, path = ui.backend, session.key, segment(name)
    model = await backend.get("registry", f"/v1/models/{path}", key)
    listed = (await backend.get("drift", f"/v1/drift/{path}/reports", key, limit=ui.settings.drift_windows))["reports"]
    details = await gather_limited(
        backend.get("drift", f"/v1/drift/{path}/reports/{segment(r['id'])}", key) for r in listed
    )
    chosen = next((d for d in details if d["id"] == window), details[0] if details else None)
    histograms: list[Any] = []
    if chosen is not None:
        found = await backend.get_or_none("drift", f"/v1/drift/{path}/reports/{segment(chosen['id'])}/histograms", key)
        if found:
            drifted = (chosen.get("report") or {}).get("drifted_features") or []
            histograms = views.histogram_figures(found, first=drifted)
    return render(
        request,
        "drift.html",
        model=model,
        reports=listed,
        chosen=chosen,
        features=views.feature_figures(details),
        performance=views.performance_figure(details),
        histograms=histograms,
    )


# --- datasets -----------------------------------------------------------------------------------------------------


@router.get("/datasets")
async def datasets_page(request: Request, ui: Ui, session: SignedIn) -> HTMLResponse:
    found = await ui.backend.get("ingest", "/v1/datasets", session.key)
    return render(request, "datasets.html", datasets=found["datasets"])


@router.get("/datasets/{name}")
async def dataset_page(request: Request, ui: Ui, session: SignedIn, name: NAME) -> HTMLResponse:
    backend, key, path = ui.backend, session.key, segment(name)
    listed = (await backend.get("ingest", f"/v1/datasets/{path}/versions", key))["versions"]
    published = [v["version"] for v in listed if v["status"] == "published"]
    diffs = await gather_limited(
        backend.get_or_none("ingest", f"/v1/datasets/{path}/diff", key, **{"from": a, "to": b})
        for a, b in zip(published, published[1:], strict=False)
    )
    changes = {b: d for (_, b), d in zip(zip(published, published[1:], strict=False), diffs, strict=True)}
    return render(request, "dataset.html", name=name, versions=list(reversed(listed)), changes=changes)


# --- pipeline -----------------------------------------------------------------------------------------------------


@router.get("/pipeline")
async def pipeline_page(
    request: Request, ui: Ui, session: SignedIn, correlation_id: Annotated[str, Query(max_length=100)] = ""
) -> HTMLResponse:
    events = ui.feed.since(0, correlation_id=correlation_id.strip(), limit=200)
    return render(
        request,
        "pipeline.html",
        events=events,
        correlation_id=correlation_id.strip(),
        last_seq=ui.feed.last_seq,
        feed=ui.feed,
    )


@router.get("/pipeline/events")
async def pipeline_events(
    ui: Ui,
    session: SignedIn,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    correlation_id: Annotated[str, Query(max_length=100)] = "",
) -> JSONResponse:
    events = ui.feed.since(after, correlation_id=correlation_id.strip(), limit=200)
    return JSONResponse(
        {
            "events": [e.to_json() for e in events],
            "last_seq": ui.feed.last_seq,
            "connected": ui.feed.connected,
            "problem": ui.feed.problem,
        }
    )
