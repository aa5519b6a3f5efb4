"""The one FastAPI app factory: health, readiness, Prometheus metrics, JSON errors."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from mloop_common.errors import MloopError
from mloop_common.settings import ServiceSettings

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Degraded:
    """What a readiness check returns when the service can take traffic but has a problem to report
    (serving: one model of several failed to load); /readyz stays 200 and shows ``degraded: <detail>``."""

    detail: str


REQUESTS = Counter("mloop_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
LATENCY = Histogram("mloop_http_request_seconds", "HTTP request latency", ["service", "method", "route"])


S = TypeVar("S", bound=ServiceSettings)


def service_app(
    settings: S,
    *,
    bootstrap: Callable[[S, FastAPI], AbstractAsyncContextManager[Any]],
    router: APIRouter,
    description: str,
    max_body_bytes: int = 10 * 1024 * 1024,
) -> FastAPI:
    """A service's app: ``bootstrap`` builds its components in the lifespan (``app.state.service``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap(settings, app) as service:
            app.state.service = service
            yield

    app = create_app(
        service=settings.service, lifespan=lifespan, description=description, max_body_bytes=max_body_bytes
    )
    app.include_router(router)
    return app


def components(request: Request) -> Any:
    """The running service's components (what its bootstrap yielded), for route dependencies."""
    return request.app.state.service


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def framework_error(request: Request, code: str, message: str, status: int) -> JSONResponse:
    """An error raised before any route ran; paths under ``app.state.plain_error_prefixes`` speak a protocol
    whose errors are ``{"error": "<message>"}`` (serving's Open Inference Protocol)."""
    if request.url.path.startswith(getattr(request.app.state, "plain_error_prefixes", ())):
        return JSONResponse({"error": message}, status)
    return JSONResponse(error_body(code, message), status)


def create_app(
    *,
    service: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    description: str = "",
    max_body_bytes: int = 10 * 1024 * 1024,
) -> FastAPI:
    """A FastAPI app with mloop's common endpoints; routes and ``app.state.checks`` come from the service."""
    app = FastAPI(title=f"mloop {service}", description=description, lifespan=lifespan, version="0.1.0")
    checks: dict[str, ReadinessCheck] = {}
    app.state.checks = checks

    @app.middleware("http")
    async def limit_and_measure(request: Request, call_next):  # type: ignore[no-untyped-def]
        length = request.headers.get("content-length")
        limit = getattr(request.app.state, "max_body_bytes", max_body_bytes)
        if length and length.isdigit() and int(length) > limit:
            return framework_error(request, "payload_too_large", f"request body over {limit} bytes", 413)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        REQUESTS.labels(service, request.method, path, str(response.status_code)).inc()
        LATENCY.labels(service, request.method, path).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(MloopError)
    async def mloop_error(_: Request, exc: MloopError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        return JSONResponse(error_body(exc.code, exc.message, exc.field), exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return JSONResponse(error_body("invalid_input", message, field), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return framework_error(request, code, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", f"internal error: {type(exc).__name__}"), 500)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok", "service": service}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: database, broker and service-specific checks all pass."""
        results: dict[str, str] = {}
        failing = []
        for name, check in request.app.state.checks.items():
            try:
                outcome = await check()
                if isinstance(outcome, Degraded):
                    results[name] = f"degraded: {outcome.detail}"
                    continue
                results[name] = "ok" if outcome in (None, True) else str(outcome)
            except Exception as exc:
                results[name] = f"failed: {type(exc).__name__}: {exc}"[:300]
            if results[name] != "ok":
                failing.append(name)
        ready = not failing
        return JSONResponse({"ready": ready, "service": service, "checks": results}, 200 if ready else 503)

    @app.get("/metrics", tags=["ops"])
    async def metrics() -> Response:
        """Prometheus metrics in the text exposition format."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz,metrics")
    return app
