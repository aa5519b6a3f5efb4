"""The one FastAPI app factory: health, readiness, Prometheus metrics, JSON errors, API keys and roles."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from mloop_common.auth import Authenticator, Permission, Principal, bearer_key
from mloop_common.bus import classify
from mloop_common.clients import KeyIntrospection
from mloop_common.errors import Forbidden, InvalidInput, MloopError, PayloadTooLarge, TransientError, Unauthorized
from mloop_common.settings import ServiceSettings
from mloop_common.telemetry import tracer

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[Any]]


@dataclass(frozen=True)
class Degraded:
    """What a readiness check returns when the service can take traffic but has a problem to report
    (serving: one model of several failed to load); /readyz stays 200 and shows ``degraded: <detail>``."""

    detail: str


REQUESTS = Counter("mloop_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
LATENCY = Histogram("mloop_http_request_seconds", "HTTP request latency", ["service", "method", "route"])
OVERLOADED = Counter("mloop_http_overloaded_total", "Requests refused with 429: too many in progress", ["service"])


S = TypeVar("S", bound=ServiceSettings)
Rules = Mapping[tuple[str, str], Permission]  # (method, route path) -> what the caller's role must allow
PUBLIC_ROUTES: Rules = {
    ("GET", "/healthz"): Permission.PUBLIC,
    ("GET", "/readyz"): Permission.PUBLIC,
    ("GET", "/metrics"): Permission.PUBLIC,
}
ANONYMOUS = Principal("anonymous", "none")


@dataclass
class Access:
    """Deny by default: every route's permission (a route with none cannot start) and who holds which."""

    rules: Rules
    authenticator: Authenticator
    open_predict: bool = False

    def unruled(self, app: FastAPI) -> list[str]:
        return [
            f"{method} {route.path}"
            for route in app.routes
            if isinstance(route, APIRoute)
            for method in sorted(route.methods or ())
            if (method, route.path) not in self.rules
        ]

    def needs_key(self, permission: Permission) -> bool:
        if permission is Permission.PUBLIC:
            return False
        return not (self.open_predict and permission in (Permission.PREDICT, Permission.FEEDBACK))


async def authorize(request: Request) -> None:
    """Every route's first dependency: the caller's key must carry the route's permission."""
    access: Access | None = getattr(request.app.state, "access", None)
    if access is None:  # an app made by create_app alone (tests of the common endpoints)
        return
    route = getattr(request.scope.get("route"), "path", None)
    if route is None:
        raise Forbidden(f"{request.method} {request.url.path} is open to nobody")
    principal = await admitted(access, request.method, route, request.headers.get("authorization"))
    if principal is not None:
        request.state.principal = principal


async def admitted(access: Access, method: str, route: str, authorization: str | None) -> Principal | None:
    """Who may call ``method route`` with this ``Authorization`` header (None: a route that needs no key);
    raises the refusal otherwise. ``authorize``'s check, also for a service's own fast path to a route."""
    permission = access.rules.get((method, route))
    if permission is None:
        raise Forbidden(f"{method} {route} is open to nobody")
    if not access.needs_key(permission):
        return None
    key = bearer_key(authorization)
    if key is None:
        raise Unauthorized("an API key is required: send the header 'Authorization: Bearer <key>'")
    principal = await access.authenticator.authenticate(key)
    if principal is None:
        raise Unauthorized("the API key is not valid (unknown, malformed or revoked)")
    if not principal.allows(permission):
        raise Forbidden(f"role {principal.role!r} does not allow {permission.value!r}, which this route needs")
    return principal


def caller(request: Request) -> Principal:
    """Who called (authenticated by ``authorize``): the actor of what the request changes."""
    return getattr(request.state, "principal", ANONYMOUS)


def actor_of(request: Request) -> str:
    return caller(request).actor


Caller = Annotated[Principal, Depends(caller)]
Actor = Annotated[str, Depends(actor_of)]  # the audit log's name for the authenticated caller


def service_app(
    settings: S,
    *,
    bootstrap: Callable[[S, FastAPI], AbstractAsyncContextManager[Any]],
    router: APIRouter,
    rules: Rules,
    description: str,
    max_body_bytes: int = 10 * 1024 * 1024,
    inner: Sequence[type[Any]] = (),
) -> FastAPI:
    """A service's app: ``bootstrap`` builds its components in the lifespan (``app.state.service``).

    ``rules`` names the permission of each of its routes; the service refuses to start if one has none.
    Keys other than the admin's and the services' are checked with the registry (the registry's own
    bootstrap gives its authenticator the key table instead).
    """
    auth = settings.common.auth
    introspection = (
        None if settings.service == "registry" else KeyIntrospection(settings.common.registry_url, key=settings.own_key)
    )
    authenticator = Authenticator(
        secret=auth.secret.get_secret_value(),
        admin_key=auth.admin_key.get_secret_value(),
        resolver=introspection,
        cache_seconds=auth.cache_seconds,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if unruled := app.state.access.unruled(app):
            raise RuntimeError(f"{settings.service}: routes without a permission (deny by default): {unruled}")
        starting = Starting(settings.service)
        app.state.starting = starting
        app.state.checks["startup"] = starting.check
        stop = asyncio.Event()

        async def run() -> None:
            async with bootstrap(settings, app) as service:
                app.state.service = service
                starting.finish()
                await stop.wait()

        task = asyncio.create_task(run())
        try:
            # Until the service has started or waits for a dependency: a failure before that (bad settings, a
            # missing bucket) fails the start as it always did; a broker or database not there yet does not.
            await starting.settled(task)
            task.add_done_callback(lambda done: starting.ended(done, getattr(app.state, "on_fatal", None)))
            yield
        finally:
            stop.set()
            if not starting.finished:
                task.cancel()  # stopped while still waiting for a dependency
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                if starting.finished:
                    raise  # the components failed to stop: as before
                # failed to start after waiting: Starting.ended has reported it
            if introspection is not None:
                await introspection.aclose()

    app = create_app(
        service=settings.service,
        lifespan=lifespan,
        description=description,
        max_body_bytes=max_body_bytes,
        allowed_hosts=settings.common.allowed_hosts,
        max_in_flight=settings.common.max_in_flight,
        inner=inner,
    )
    app.include_router(router)
    app.state.access = Access({**PUBLIC_ROUTES, **rules}, authenticator, open_predict=auth.open_predict)
    return app


class Starting:
    """A service between its HTTP server coming up and its components being ready. Probes answer meanwhile
    (``/readyz`` says what it waits for); every other request gets 503 with ``Retry-After``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.finished = False
        self.status = "starting"
        self._settled = asyncio.Event()

    def waiting(self, what: str, attempt: int, error: BaseException) -> None:
        """A dependency did not answer yet (called on each failed attempt while the service waits for it)."""
        self.status = f"waiting for the {what} (attempt {attempt}): {type(error).__name__}: {error}"[:300]
        self._settled.set()

    def finish(self) -> None:
        self.finished = True
        self.status = "started"
        self._settled.set()

    async def check(self) -> bool | str:
        return True if self.finished else self.status

    async def settled(self, task: asyncio.Task[None]) -> None:
        """Return once the service has started or waits for a dependency; raise what stopped it before that."""
        waiting = asyncio.create_task(self._settled.wait())
        try:
            await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiting.cancel()
        if task.done() and not self.finished:
            task.result()  # raises why it failed; a bootstrap that returned without starting is a bug
            raise RuntimeError(f"{self.service} stopped before it started")

    def ended(self, task: asyncio.Task[None], on_fatal: Callable[[str], None] | None) -> None:
        """Once started in the background, a failure to start (after waiting) ends the process like any fatal one."""
        if task.cancelled() or task.exception() is None:
            return
        reason = f"{self.service} could not start: {type(task.exception()).__name__}: {task.exception()}"
        log.critical(reason, exc_info=task.exception())
        if on_fatal is not None:
            on_fatal(reason)


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
    allowed_hosts: Sequence[str] | None = None,
    max_in_flight: int | None = None,
    inner: Sequence[type[Any]] = (),
) -> FastAPI:
    """A FastAPI app with mloop's common endpoints; routes and ``app.state.checks`` come from the service.

    ``inner``: ASGI middleware classes (outermost first) run inside the Gate, so after its refusals, with its
    server span current and its metrics counting what they answer (serving's fast path to its predict routes).
    """
    app = FastAPI(
        title=f"mloop {service}",
        description=description,
        lifespan=lifespan,
        version="0.1.0",
        dependencies=[Depends(authorize)],
        # The Gate makes each request's server span; FastAPI's own telemetry would add a second one, and spans
        # for every dependency and serialization step (a large share of a fast route's time).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    checks: dict[str, ReadinessCheck] = {}
    app.state.checks = checks

    @app.exception_handler(MloopError)
    async def mloop_error(request: Request, exc: MloopError) -> JSONResponse:
        if exc.status_code >= 500:
            log.error("%s: %s", type(exc).__name__, exc.message)
        if request.url.path.startswith(getattr(request.app.state, "plain_error_prefixes", ())):
            response = JSONResponse({"error": exc.message}, exc.status_code)
        else:
            response = JSONResponse(error_body(exc.code, exc.message, exc.field), exc.status_code)
        if isinstance(exc, TransientError):
            response.headers["Retry-After"] = RETRY_AFTER
        if isinstance(exc, Unauthorized):
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "form")]
        field = ".".join(loc) or None
        message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
        return JSONResponse(error_body("invalid_input", message, field), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc, BodyRefused):
            return await mloop_error(request, exc.error)
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return framework_error(request, code, str(exc.detail), exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        if classify(exc) == "transient":  # the database (restarting, pool exhausted) or another dependency
            log.warning("%s %s: a dependency is unavailable: %r", request.method, request.url.path, exc)
            message = f"{service} cannot reach a dependency ({type(exc).__name__}); retry shortly"
            response = framework_error(request, "unavailable", message, 503)
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", f"internal error: {type(exc).__name__}"), 500)

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> dict[str, str]:
        """Liveness: the process answers; ``version`` is the code version it runs (known once it has started)."""
        return {"status": "ok", "service": service, "version": getattr(request.app.state, "code_version", "unknown")}

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

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, on first request: serving sets its plain prefixes after this
            document_errors(FastAPI.openapi(app), getattr(app.state, "plain_error_prefixes", ()))
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
    for middleware in reversed(inner):  # each added one becomes the outermost so far: the Gate, added last, wraps them
        app.add_middleware(middleware)
    # Outermost: a request from an unknown host or with too large a body goes no further.
    app.add_middleware(
        Gate,
        service=service,
        max_body_bytes=max_body_bytes,
        allowed_hosts=allowed_hosts,
        max_in_flight=max_in_flight,
    )
    return app


# What any keyed route can answer besides its own results, whatever the route (the Gate, ``authorize``, the
# error handlers above, a store's constraint or an unavailable dependency).
ERROR_RESPONSES = {
    "400": "The Host header is not one this service answers to.",
    "401": "No API key, or one that is not valid (unknown, malformed or revoked).",
    "403": "The key's role does not allow this route.",
    "404": "The route or what it names does not exist.",
    "409": "A uniqueness or state rule refused the change.",
    "413": "The body is over the size limit (counted while it streams).",
    "422": "Invalid input; `field` names the offending field when it can.",
    "429": "Too many requests in progress (MLOOP_MAX_IN_FLIGHT): retry after the Retry-After header's seconds.",
    "503": "A dependency (database, broker, another service) is unavailable: retry later.",
}
ERROR_SCHEMA = {
    "title": "Error",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable (e.g. not_found, conflict)"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the offending field, when there is one"},
            },
        }
    },
}
PLAIN_ERROR_SCHEMA = {
    "title": "PlainError",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}},
    "description": "An error of a protocol that defines its own shape (the Open Inference Protocol's).",
}
_FASTAPI_422 = {"$ref": "#/components/schemas/HTTPValidationError"}


def document_errors(document: dict[str, Any], plain_prefixes: Sequence[str] = ()) -> dict[str, Any]:
    """Adds mloop's error answers to every keyed operation of an OpenAPI document, in place.

    FastAPI documents a 422 whose body (``HTTPValidationError``) mloop never sends and none of the other
    errors; clients and fuzzers validating answers against the document need the ones it does send:
    ``{"error": {"code", "message", "field"?}}``, or ``{"error": "<message>"}`` under ``plain_prefixes``.
    A status a route already documents with its own body (ingest's rejected version, a 422) keeps it,
    as one of two shapes.
    """
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"], schemas["PlainError"] = ERROR_SCHEMA, PLAIN_ERROR_SCHEMA
    for path, item in document.get("paths", {}).items():
        ref = {"$ref": "#/components/schemas/" + ("PlainError" if path.startswith(tuple(plain_prefixes)) else "Error")}
        for method, operation in item.items():
            if (method.upper(), path) in PUBLIC_ROUTES:
                continue
            responses = operation.setdefault("responses", {})
            for status, description in ERROR_RESPONSES.items():
                answer = responses.setdefault(status, {"description": description})
                if answer.get("description") == "Validation Error":
                    answer["description"] = description
                media = answer.setdefault("content", {}).setdefault("application/json", {})
                own = media.get("schema")
                media["schema"] = ref if own in (None, _FASTAPI_422, ref) else {"anyOf": [own, ref]}
    if "HTTPValidationError" in schemas and '"#/components/schemas/HTTPValidationError"' not in json.dumps(
        document.get("paths", {})
    ):
        schemas.pop("HTTPValidationError")
        schemas.pop("ValidationError", None)
    return document


class Gate:
    """Every request's metrics, and three refusals before anything else runs (pure ASGI, so it sees the body
    as it streams in, and an error raised while the route reads it reaches the app's error handlers):

    - a ``Host`` header outside ``allowed_hosts`` (``*`` any, ``*.example.org`` a domain's hosts): a web
      page that rebinds its own name to 127.0.0.1 cannot reach a local service;
    - a body over ``max_body_bytes``: at once when ``Content-Length`` says so, else (chunked) as soon as
      the bytes read pass it, so no service ever buffers more than its limit;
    - a NUL character in the URL or in a JSON or urlencoded body (422): PostgreSQL can store it in no text or
      JSON column, so it would otherwise come back as a 500 from whichever query first meets it. (Multipart
      bodies carry binary files; their text fields are checked where they are parsed.)
    - more than ``max_in_flight`` requests at once (429 with ``Retry-After``, at once): an overload queues
      nowhere, so latency and memory stay bounded and the caller knows to back off. Health, readiness and
      metrics are never refused, so probes see an overloaded service as alive and ready;
    - any request but a probe while the service is still starting (``Starting``: 503 with ``Retry-After``).

    Every request it lets through, except health, readiness and metrics, gets an OpenTelemetry SERVER span,
    current while the route runs, named ``<method> <route>`` once routed (HTTP semantic conventions). Made
    here rather than by opentelemetry-instrumentation-fastapi, whose middleware cost several times more per
    request: it adds ``receive`` and ``send`` spans, matches the route a second time and wraps every message.
    """

    def __init__(
        self,
        app: Any,
        *,
        service: str,
        max_body_bytes: int,
        allowed_hosts: Sequence[str] | None,
        max_in_flight: int | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = None if allowed_hosts is None or "*" in allowed_hosts else tuple(allowed_hosts)
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._by_route: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def _series(self, method: str, route: str, status: int) -> tuple[Any, Any]:
        """The request counter's and the latency histogram's series for a request (looked up once: finding a
        labelled series costs a few microseconds a request)."""
        key = (method, route, status)
        series = self._by_route.get(key)
        if series is None:
            series = self._by_route[key] = (
                REQUESTS.labels(self.service, method, route, str(status)),
                LATENCY.labels(self.service, method, route),
            )
        return series

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = _host_name(headers.get("host", ""))
        if self.allowed_hosts is not None and not any(_host_matches(host, p) for p in self.allowed_hosts):
            message = f"host {host!r} is not one this service answers to (MLOOP_ALLOWED_HOSTS)"
            await JSONResponse(error_body("invalid_host", message, "Host"), 400)(scope, receive, send)
            return
        limit = self.max_body_bytes
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _refuse(scope, receive, send, 413, "payload_too_large", f"request body over {limit} bytes")
            return
        protocol = str(scope.get("path", "")).startswith(PROTOCOL_PREFIX)  # its tensors may hold NUL bytes
        if not protocol and ("\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")):
            await _refuse(scope, receive, send, 422, "invalid_input", NUL_MESSAGE.format(where="the URL"))
            return
        nul = None if protocol else _nul_pattern(headers.get("content-type", ""))
        received, tail = 0, b""

        async def limited() -> Any:
            nonlocal received, tail
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise BodyRefused(PayloadTooLarge(f"request body over {limit} bytes"))
                if nul is not None:
                    window = tail + chunk  # the tail: a NUL's escape split between two chunks is still seen
                    if _NUL_TEXT[nul] in window and nul.search(window):
                        raise BodyRefused(InvalidInput(NUL_MESSAGE.format(where="the body")))
                    tail = window[-_NUL_TAIL:]
            return message

        starting: Starting | None = getattr(getattr(scope.get("app"), "state", None), "starting", None)
        if starting is not None and not starting.finished and scope["path"] not in _PROBES:
            message = f"{self.service} is starting ({starting.status}); retry shortly"
            await _refuse(scope, receive, send, 503, "unavailable", message, {"Retry-After": RETRY_AFTER})
            return
        started, status = time.perf_counter(), 500
        if self.max_in_flight is not None and self.in_flight >= self.max_in_flight and scope["path"] not in _PROBES:
            OVERLOADED.labels(self.service).inc()
            message = f"over {self.max_in_flight} requests in progress (MLOOP_MAX_IN_FLIGHT); retry shortly"
            await _refuse(scope, receive, send, 429, "overloaded", message, {"Retry-After": "1"})
            return

        async def sent(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span, token, failure = None, None, None
        if scope["path"] not in _UNTRACED:
            span, parent = _server_span(scope, headers)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        self.in_flight += 1
        try:
            await self.app(scope, limited, sent)
        except Exception as exc:
            if span is not None:
                span.record_exception(exc)
                failure = type(exc).__qualname__
            raise
        finally:
            self.in_flight -= 1
            route = getattr(scope.get("route"), "path", None)  # the router records the route in the scope
            path = route or "unmatched"
            count, latency = self._series(scope["method"], path, status)
            count.inc()
            latency.observe(time.perf_counter() - started)
            if span is not None and token is not None:
                _end_server_span(span, scope["method"], route, status, failure)
                otel_context.detach(token)


_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: noise in every trace


def _server_span(scope: Any, headers: dict[str, str]) -> tuple[trace.Span, otel_context.Context | None]:
    """A request's SERVER span, child of the ``traceparent`` it carries (a malformed one starts a new trace), and
    the context it was extracted from (baggage included; None: nothing to extract, the current one)."""
    attributes: dict[str, str | int] = {
        "http.request.method": scope["method"],
        "url.scheme": scope.get("scheme", "http"),
        "url.path": scope["path"],
        "network.protocol.version": scope.get("http_version", "1.1"),
    }
    client = scope.get("client")
    if client:
        attributes["client.address"] = client[0]
    if "user-agent" in headers:
        attributes["user_agent.original"] = headers["user-agent"]
    parent = extract(headers) if "traceparent" in headers or "baggage" in headers else None
    return tracer().start_span(scope["method"], parent, SpanKind.SERVER, attributes), parent


def _end_server_span(span: trace.Span, method: str, route: str | None, status: int, failure: str | None) -> None:
    """Named after the route once routed; ``failure``: the type of an exception that escaped the app."""
    if route is not None:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if failure is not None or status >= 500:  # a server span's error is a 5xx; a 4xx is the client's
        span.set_attribute("error.type", failure or str(status))
        span.set_status(StatusCode.ERROR)
    span.end()


PROTOCOL_PREFIX = "/v2"  # serving's Open Inference Protocol paths
RETRY_AFTER = "5"  # seconds, on every 503: starting, or a dependency away
_PROBES = frozenset({"/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"})


class BodyRefused(StarletteHTTPException, MloopError):
    """The Gate's refusal of a body while it streams in. An HTTPException, so FastAPI's body parsing lets it
    through (anything else becomes a 400 "error parsing the body"), and an MloopError with the status and
    message of ``error``, so a route that answers errors itself (serving's OIP routes) answers it too."""

    def __init__(self, error: MloopError) -> None:
        StarletteHTTPException.__init__(self, error.status_code, error.message)
        MloopError.__init__(self, error.message, field=error.field)
        self.code = error.code
        self.error = error


NUL_MESSAGE = "{where} holds a NUL character (\\u0000, %00), which no value may contain"
# JSON can carry a NUL only as the escape \u0000 (an unescaped backslash before it: an even run, or none);
# urlencoded as %00. Bodies of other types are not scanned.
_JSON_NUL = re.compile(rb"(?:^|[^\\])(?:\\\\)*\\u0000")
_FORM_NUL = re.compile(rb"%00")
# What each pattern cannot match without: a substring test costs 0.4 µs on a small body, the JSON pattern 20.
_NUL_TEXT = {_JSON_NUL: rb"\u0000", _FORM_NUL: b"%00"}
_NUL_TAIL = 64  # bytes kept from the previous chunk (a run of backslashes longer than this is misjudged)


def _nul_pattern(content_type: str) -> re.Pattern[bytes] | None:
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        return _JSON_NUL
    if media == "application/x-www-form-urlencoded":
        return _FORM_NUL
    return None


async def _refuse(
    scope: Any, receive: Any, send: Any, status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> None:
    plain = str(scope.get("path", "")).startswith(PROTOCOL_PREFIX)  # OIP errors are {"error": "<message>"}
    body = {"error": message} if plain else error_body(code, message)
    await JSONResponse(body, status, headers=headers)(scope, receive, send)


def _host_name(header: str) -> str:
    if header.startswith("["):  # [::1]:8001
        return header[1 : header.find("]")].lower()
    return header.rsplit(":", 1)[0].lower() if header.count(":") == 1 else header.lower()


def _host_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower().strip("[]")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern
