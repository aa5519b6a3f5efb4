"""A direct way to the predict routes for the common request, past FastAPI's per-request machinery.

Under load most of serving's CPU went to FastAPI itself (dependency solving, body validation, response
serialization: about half of a single-row prediction), not to the model. ``FastPath`` sits inside the Gate, so
the Gate's refusals (host, body size, NUL, start, overload), server span and HTTP metrics apply to it
unchanged, and answers a well-formed JSON request to the simple API's predict or the protocol's infer route
(production or a version by number) itself, with the same code behind it: the same permission check, the same
scorer, the same response bytes and headers.

Anything else goes to the app's routes as before: an unknown path variant, a query string, a content type
other than JSON (v1), the protocol's binary tensor extension, a body that is not the expected shape, and any
error whatever before the model has answered (bad JSON, a missing key, an unknown model or feature, a model
that fails). The body read here is handed on as it came, so the route answers exactly as it always did: its
own status, error body and headers. Errors are rare; such a request costs a second attempt at most. An error
once the model has answered (building the answer: a bug) is raised as it is, answered 500 as the route's would
be: the route would score, and log, the request a second time.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import Response
from fastapi.routing import APIRoute
from prometheus_client import Counter

from mloop_common.http import Access, admitted
from mloop_common.jsoncodec import json_loads
from mloop_serving.api import ROUTING_KEY_MAX, infer_response, prediction_response, unexpected_oip_error
from mloop_serving.bootstrap import ServingService
from mloop_serving.oip import INFERENCE_HEADER, parse_infer_request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

FAST_PATH = Counter(
    "mloop_serving_fast_path_total",
    "Predict and infer requests by who answered: the fast path, the routes (anything unusual, errors before "
    "scoring), or none (failed: an error once the model had answered)",
    ["outcome"],
)
_ANSWERED, _PASSED, _FAILED = (FAST_PATH.labels(outcome) for outcome in ("answered", "routed", "failed"))

V1 = "/v1/models/{name}:predict"
V1_VERSION = "/v1/models/{name}/versions/{version}:predict"
OIP = "/v2/models/{name}/infer"
OIP_VERSION = "/v2/models/{name}/versions/{version}/infer"
_PREFIXES = ("/v1/models/", "/v2/models/")
_WANTED = {
    b"authorization": "authorization",
    b"content-type": "content-type",
    b"x-mloop-routing-key": "key",
    INFERENCE_HEADER.lower().encode(): "binary",
}
# What FastAPI parses as JSON without doubt (it also takes other application/*+json types: those go to it).
_JSON = re.compile(r"application/json\s*(;.*)?", re.IGNORECASE | re.DOTALL)
_V1_VERSION = re.compile(r"[1-9][0-9]{0,9}")  # what ``VersionNumber`` surely reads as the same int


class AfterScoring(Exception):
    """``error`` was raised once the model had answered: not for the route, which would score (and log) again.

    ``answer``: the route's own answer to it, where the route answers such errors itself (the protocol's)."""

    def __init__(self, error: Exception, answer: Response | None = None) -> None:
        super().__init__(str(error))
        self.error, self.answer = error, answer


@dataclass(frozen=True)
class Call:
    """A request to a fast route: its parameters, the headers that matter, the whole body."""

    route: str
    name: str
    version: str | None
    headers: dict[str, str]
    body: bytes


class FastPath:
    """ASGI middleware (inside the Gate): answers a fast route's common request, hands anything else on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[APIRoute] | None = None  # the fast routes, taken from the app on the first request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        messages, failure = await _read(receive)
        response, outcome = None, _ANSWERED
        if failure is None and messages[-1]["type"] == "http.request":
            try:
                response = await self._answer(scope, route, messages)
            except AfterScoring as failed:
                _FAILED.inc()
                if failed.answer is None:
                    raise failed.error from None
                response, outcome = failed.answer, _FAILED
            except Exception:  # the route answers it, in its own words (it meets the same error)
                response = None
        if response is None:
            _PASSED.inc()
            await self.app(scope, _replay(messages, failure, receive), send)
            return
        if outcome is _ANSWERED:
            _ANSWERED.inc()
        await response(scope, receive, send)

    def _route(self, scope: Scope) -> tuple[APIRoute, dict[str, str]] | None:
        """The fast route a request is for, and its path parameters; None for any other request."""
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or not path.startswith(_PREFIXES):
            return None
        if scope.get("query_string") or scope.get("root_path"):
            return None
        if self._routes is None:
            found = {r.path: r for r in _api_routes(scope["app"].routes)}
            self._routes = [found[path] for path in (V1, V1_VERSION, OIP, OIP_VERSION) if path in found]
        for route in self._routes:
            match = route.path_regex.match(path)  # the router's own pattern for the route
            if match is not None:
                return route, match.groupdict()
        return None

    async def _answer(
        self, scope: Scope, found: tuple[APIRoute, dict[str, str]], messages: list[Message]
    ) -> Response | None:
        route, params = found
        app = scope["app"]
        service: ServingService | None = getattr(app.state, "service", None)
        if service is None:
            return None
        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = _WANTED.get(key)
            if name is not None and name not in headers:  # the first of a repeated header, as Starlette reads it
                headers[name] = value.decode("latin-1")
        access: Access | None = getattr(app.state, "access", None)
        principal = None
        if access is not None:
            principal = await admitted(access, "POST", route.path, headers.get("authorization"))
        scope["route"], scope["path_params"], scope["endpoint"] = route, params, route.endpoint
        if principal is not None:
            scope.setdefault("state", {})["principal"] = principal
        body = b"".join(message.get("body", b"") for message in messages)
        call = Call(route.path, params["name"], params.get("version"), headers, body)
        answer = predict if call.route in (V1, V1_VERSION) else infer
        return await answer(service, call)


async def predict(service: ServingService, call: Call) -> Response | None:
    """The simple API's predict, as ``api.predict`` / ``api.predict_version`` answer it (logging on)."""
    if not _JSON.fullmatch(call.headers.get("content-type", "")):
        return None
    key = call.headers.get("key") if call.route == V1 else None  # the version route takes no routing key
    if key is not None and len(key) > ROUTING_KEY_MAX:
        return None
    version = None
    if call.version is not None:
        if not _V1_VERSION.fullmatch(call.version) or int(call.version) > 2**31 - 1:
            return None
        version = int(call.version)
    document = json_loads(call.body)  # what Starlette's Request.json (the json module) reads, faster
    instances = document.get("instances") if type(document) is dict and len(document) == 1 else None
    if type(instances) is not list or not instances or any(type(i) is not dict for i in instances):
        return None  # PredictRequest's checks, which answer it
    scored = await service.scorer.score(call.name, instances, version, key=key)
    try:
        return prediction_response(scored)
    except Exception as exc:
        raise AfterScoring(exc) from exc


async def infer(service: ServingService, call: Call) -> Response | None:
    """The protocol's infer with JSON tensors, as ``api.infer_latest`` / ``api.infer_version`` answer it."""
    if "binary" in call.headers:
        return None  # the binary tensor extension
    version = None
    if call.version is not None:
        if not call.version.isascii() or not call.version.isdigit():
            return None
        version = int(call.version)
    request = parse_infer_request(call.body)
    scored = await service.scorer.score_call(call.name, request, version, key=call.headers.get("key"))
    try:
        return infer_response(request, scored)
    except Exception as exc:
        raise AfterScoring(exc, unexpected_oip_error(exc)) from exc


def _api_routes(routes: Sequence[Any]) -> Iterator[APIRoute]:
    """The app's API routes, also those of included routers (FastAPI 0.165 keeps them in their own router:
    the router puts that route object in the scope, so the Gate counts and names what is answered here alike)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)


async def _read(receive: Receive) -> tuple[list[Message], BaseException | None]:
    """Every message of the body (the last one: its end, or whatever else came), or the error that stopped it
    (the Gate refusing a body too large, or holding a NUL)."""
    messages: list[Message] = []
    try:
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                return messages, None
    except Exception as exc:
        return messages, exc


def _replay(messages: list[Message], failure: BaseException | None, receive: Receive) -> Receive:
    """``receive`` for the routes: the messages already read, then the error that stopped reading, then more."""
    pending = list(messages)

    async def replayed() -> Message:
        nonlocal failure
        if pending:
            return pending.pop(0)
        if failure is not None:
            error, failure = failure, None
            raise error
        return await receive()

    return replayed
