"""The fast path to the predict routes answers exactly as the routes do: for a good request it answers itself
(same status, body bytes and headers, same logging, metrics and span), anything else reaches the routes, which
answer as they always did. Two identical services side by side, one app with the fast path and one without,
get the same requests in the same order and must answer byte for byte alike."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from mloop_common.artifacts import ArtifactStore
from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, DEVELOPMENT_SECRET, Authenticator, Principal, StaticKeys, new_key
from mloop_common.events import CANARY, PredictionsLogged
from mloop_common.http import PUBLIC_ROUTES, Access, create_app
from mloop_common.testing import ADMIN_HEADERS, recorded_spans
from mloop_serving import api, fastpath, oip
from mloop_serving.access import RULES
from mloop_serving.bootstrap import ServingService, models_check
from mloop_serving.fastpath import FastPath
from mloop_serving.host import LoadedModel, Rollout

from .fakes import FEATURES, Serving, classifier_file, serving

ROW = {"usage": 1.5, "calls": 2.0}
TENSORS = {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [ROW[f]]} for f in FEATURES]}
APP_KEY, VIEWER_KEY = new_key().key, new_key().key
APP = {"Authorization": f"Bearer {APP_KEY}"}
LIMIT = 4096  # bytes of body


@asynccontextmanager
async def no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


class Broken:
    def predict(self, frame: Any) -> Any:
        raise RuntimeError("boom")


def app_of(svc: Serving, *, fast: bool) -> FastAPI:
    app = create_app(service="serving", lifespan=no_lifespan, max_body_bytes=LIMIT, inner=[FastPath] if fast else [])
    app.include_router(api.router)
    api.configure_oip(app)
    app.state.checks["models"] = models_check(svc.loader)
    app.state.service = ServingService(host=svc.host, loader=svc.loader, scorer=svc.scorer)
    keys = {APP_KEY: Principal("shop", "app", key_id="000000000001"), VIEWER_KEY: Principal("eve", "viewer")}
    authenticator = Authenticator(secret=DEVELOPMENT_SECRET, admin_key=DEVELOPMENT_ADMIN_KEY, resolver=StaticKeys(keys))
    app.state.access = Access({**PUBLIC_ROUTES, **RULES}, authenticator)
    return app


@dataclass
class Twins:
    """The same service twice: ``fast`` behind the fast path, ``plain`` behind the routes alone."""

    fast: Serving
    plain: Serving
    fast_client: httpx.AsyncClient
    plain_client: httpx.AsyncClient

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        """POST to both; asserts the answers are the same (status, headers in order, body bytes); one of them.

        ``chunks`` (a list of bytes) is sent as a chunked body, without a length."""
        chunks = kwargs.pop("chunks", None)
        fast = await self.fast_client.post(path, **kwargs, **({"content": _stream(chunks)} if chunks else {}))
        plain = await self.plain_client.post(path, **kwargs, **({"content": _stream(chunks)} if chunks else {}))
        assert (fast.status_code, fast.headers.multi_items(), fast.content) == (
            plain.status_code,
            plain.headers.multi_items(),
            plain.content,
        )
        return fast


async def _stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.fixture
async def twins(tmp_path: Path) -> AsyncIterator[Twins]:
    services = []
    for name in ("fast", "plain"):
        svc = serving(ArtifactStore(tmp_path / name))
        await svc.register(classifier_file(seed=1))
        await svc.register(classifier_file(seed=2))
        svc.registry.aliases["churn"] = {"production": 1, "challenger": 2}
        await svc.loader.sync_all()
        kinds = dict.fromkeys(FEATURES, "numeric")
        svc.host.swap(LoadedModel("broken", 1, "regression", FEATURES, kinds, Broken()))  # type: ignore[arg-type]
        services.append(svc)
    fast, plain = services
    # An unexpected error is answered (500) and then raised again to the server, as Starlette does: not here.
    transports = [
        httpx.ASGITransport(app=app_of(svc, fast=svc is fast), raise_app_exceptions=False) for svc in services
    ]
    async with (
        httpx.AsyncClient(transport=transports[0], base_url="http://s") as one,
        httpx.AsyncClient(transport=transports[1], base_url="http://s") as two,
    ):
        yield Twins(fast, plain, one, two)


def answered() -> tuple[float, float]:
    """The fast path's counts so far: (answered itself, handed to the routes)."""
    count = REGISTRY.get_sample_value
    return (
        count("mloop_serving_fast_path_total", {"outcome": "answered"}) or 0.0,
        count("mloop_serving_fast_path_total", {"outcome": "routed"}) or 0.0,
    )


GOOD: list[tuple[str, dict[str, Any]]] = [
    ("/v1/models/churn:predict", {"json": {"instances": [ROW, {**ROW, "calls": -3}]}, "headers": ADMIN_HEADERS}),
    ("/v1/models/churn:predict", {"json": {"instances": [ROW]}, "headers": {**APP, "X-Mloop-Routing-Key": "k"}}),
    (
        "/v1/models/churn:predict",
        {"content": json.dumps({"instances": [ROW]}), "headers": {**APP, "Content-Type": "application/json; x=1"}},
    ),
    ("/v1/models/churn/versions/2:predict", {"json": {"instances": [ROW]}, "headers": APP}),
    ("/v2/models/churn/infer", {"json": TENSORS, "headers": APP}),
    ("/v2/models/churn/infer", {"content": json.dumps(TENSORS), "headers": APP}),  # no content type, as Triton's
    (
        "/v2/models/churn/versions/2/infer",
        {"json": {"id": "r1", **TENSORS, "outputs": [{"name": "predict_proba"}]}, "headers": APP},
    ),
    (
        "/v2/models/churn/versions/1/infer",
        {"json": {**TENSORS, "parameters": {"binary_data_output": True}}, "headers": APP},
    ),
]


async def test_good_requests_are_answered_by_the_fast_path_exactly_as_by_the_routes(twins):
    before = answered()

    for path, request in GOOD:
        response = await twins.post(path, **request)
        assert response.status_code == 200, response.text

    assert answered() == (before[0] + len(GOOD), before[1])
    await twins.fast.logbook.flush()
    await twins.plain.logbook.flush()
    logged = [[p.model_dump() for p in svc.publisher.payloads(PredictionsLogged)] for svc in (twins.fast, twins.plain)]
    assert logged[0] == logged[1] and sum(len(p["records"]) for p in logged[0]) == 9
    ids = [r["request_id"] for p in logged[0] for r in p["records"]]
    indexed = [[svc.scorer.requests.get(i) for i in ids] for svc in (twins.fast, twins.plain)]
    assert indexed[0] == indexed[1] and None not in indexed[0]  # feedback finds every answer


def v1(body: Any, **headers: str) -> dict[str, Any]:
    return {"content": body if isinstance(body, bytes) else json.dumps(body), "headers": {**APP, **headers}}


JSON = {"Content-Type": "application/json"}
ODD: list[tuple[str, dict[str, Any]]] = [
    ("/v1/models/churn:predict", v1(b"{not json", **JSON)),
    ("/v1/models/churn:predict", v1(b"", **JSON)),
    ("/v1/models/churn:predict", v1({"instances": [{"usage": "x", "calls": 1}]}, **JSON)),
    ("/v1/models/churn:predict", v1({"instances": [{"usage": 1.0}]}, **JSON)),
    ("/v1/models/churn:predict", v1({"instances": {}}, **JSON)),
    ("/v1/models/churn:predict", v1({"instances": []}, **JSON)),
    ("/v1/models/churn:predict", v1({"instances": [1]}, **JSON)),
    ("/v1/models/churn:predict", v1({"instances": [ROW], "extra": 1}, **JSON)),
    ("/v1/models/churn:predict", v1([ROW], **JSON)),
    ("/v1/models/churn:predict", v1({"instances": [ROW]}, **{"Content-Type": "text/plain"})),
    ("/v1/models/churn:predict", v1({"instances": [ROW]})),  # no content type
    ("/v1/models/churn:predict", v1({"instances": [ROW]}, **JSON, **{"X-Mloop-Routing-Key": "k" * 201})),
    ("/v1/models/churn:predict", v1({"instances": [{**ROW, "calls": "\u0000"}]}, **JSON)),  # NUL: the Gate's 422
    ("/v1/models/churn:predict", {"chunks": [b'{"instances": [', b" " * LIMIT, b"]}"], "headers": {**APP, **JSON}}),
    ("/v1/models/fraud:predict", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/broken:predict", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/churn/versions/9:predict", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/churn/versions/0:predict", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/churn/versions/01:predict", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/churn/versions/99999999999:predict", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/churn:predict?log=false", v1({"instances": [ROW]}, **JSON)),
    ("/v1/models/churn:predict", {"json": {"instances": [ROW]}}),  # no key
    ("/v1/models/churn:predict", {"json": {"instances": [ROW]}, "headers": {"Authorization": "Bearer nope"}}),
    ("/v1/models/churn:predict", {"json": {"instances": [ROW]}, "headers": {"Authorization": f"Bearer {VIEWER_KEY}"}}),
    ("/v2/models/churn/infer", v1(b"{not json")),
    ("/v2/models/churn/infer", v1({"inputs": "x"})),
    ("/v2/models/churn/infer", v1({"inputs": [{"name": "usage", "shape": [1], "datatype": "FP64", "data": ["x"]}]})),
    ("/v2/models/churn/infer", v1({**TENSORS, "outputs": [{"name": "explain"}]})),
    ("/v2/models/fraud/infer", v1(TENSORS)),
    ("/v2/models/broken/infer", v1(TENSORS)),
    ("/v2/models/churn/versions/9/infer", v1(TENSORS)),
    ("/v2/models/churn/versions/latest/infer", v1(TENSORS)),
    ("/v2/models/churn/versions/\u00b2/infer", v1(TENSORS)),
    ("/v2/models/churn/infer", {"json": TENSORS}),  # no key
    ("/v2/models/churn/infer", {"chunks": [b'{"inputs": [', b" " * LIMIT, b"]}"], "headers": APP}),
]


@pytest.mark.parametrize(("path", "request_"), ODD, ids=[f"{i}:{p}" for i, (p, _) in enumerate(ODD)])
async def test_anything_unusual_reaches_the_routes_and_gets_their_exact_answer(twins, path, request_):
    before = answered()

    await twins.post(path, **request_)

    considered = "?" not in path  # a query string (log=false) never looks like the common case
    assert answered() == (before[0], before[1] + considered)


@pytest.mark.parametrize(
    ("path", "request_"),
    [
        ("/v1/models/churn:predict", {"json": {"instances": [ROW]}, "headers": APP}),
        ("/v2/models/churn/infer", {"json": TENSORS, "headers": APP}),
    ],
)
async def test_an_error_once_the_model_has_answered_is_a_500_and_the_request_is_scored_and_logged_once(
    twins, monkeypatch, path, request_
):
    def broken_encoder(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the answer cannot be encoded")

    for module in (api, fastpath, oip):  # every binding the routes and the fast path reach it by
        name = "encode_response" if module is oip else "prediction_response"
        monkeypatch.setattr(module, name, broken_encoder)
    failed = REGISTRY.get_sample_value("mloop_serving_fast_path_total", {"outcome": "failed"}) or 0.0

    response = await twins.post(path, **request_)

    assert response.status_code == 500
    assert REGISTRY.get_sample_value("mloop_serving_fast_path_total", {"outcome": "failed"}) == failed + 1
    for svc in (twins.fast, twins.plain):
        await svc.logbook.flush()
        assert sum(len(p.records) for p in svc.publisher.payloads(PredictionsLogged)) == 1


async def test_the_binary_tensor_extension_is_left_to_the_route(twins):
    inputs = [{"name": f, "shape": [1], "datatype": "FP64", "parameters": {"binary_data_size": 8}} for f in FEATURES]
    header = json.dumps({"inputs": inputs})
    data = b"".join(struct.pack("<d", ROW[f]) for f in FEATURES)
    before = answered()

    response = await twins.post(
        "/v2/models/churn/infer",
        content=header.encode() + data,
        headers={**APP, "Inference-Header-Content-Length": str(len(header))},
    )

    assert response.status_code == 200
    assert answered() == (before[0], before[1] + 1)


async def test_other_routes_never_meet_the_fast_path(twins):
    before = answered()

    for path in ("/v1/models/churn/aliases/challenger:predict", "/v1/feedback", "/v2/models/churn/ready"):
        await twins.post(path, json={"instances": [ROW]}, headers=APP)

    assert answered() == before


def samples(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def spans() -> Iterator[Any]:
    with recorded_spans() as memory:
        yield memory


async def test_an_answer_of_the_fast_path_is_counted_and_traced_under_its_route(twins, spans):
    labels = {"service": "serving", "method": "POST", "route": "/v1/models/{name}:predict", "status": "200"}
    before = samples("mloop_http_requests_total", labels)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    await twins.fast_client.post(
        "/v1/models/churn:predict", json={"instances": [ROW]}, headers={**APP, "traceparent": parent}
    )

    assert samples("mloop_http_requests_total", labels) == before + 1
    (span,) = [s for s in spans.get_finished_spans() if s.name.startswith("POST")]
    assert span.name == "POST /v1/models/{name}:predict"
    assert span.attributes["http.route"] == "/v1/models/{name}:predict"
    assert span.attributes["http.response.status_code"] == 200
    assert format(span.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert format(span.parent.span_id, "016x") == "b7ad6b7169203331"


async def test_routing_keys_take_the_same_route_through_the_fast_path(twins):
    for svc in (twins.fast, twins.plain):
        challenger = svc.host.get("churn", 2)
        svc.host.set_rollout("churn", Rollout(CANARY, challenger, 50.0), CANARY)
    before = answered()
    routes = []

    for key in "abcdefghijkl":
        for path, body in (("/v1/models/churn:predict", {"instances": [ROW]}), ("/v2/models/churn/infer", TENSORS)):
            response = await twins.post(path, json=body, headers={**APP, "X-Mloop-Routing-Key": key})
            routes.append(response.headers["X-Mloop-Route"])
        response = await twins.post("/v2/models/churn/infer", json={"id": key, **TENSORS}, headers=APP)
        routes.append(response.headers["X-Mloop-Route"])
    twice = [*APP.items(), ("X-Mloop-Routing-Key", "b"), ("X-Mloop-Routing-Key", "a")]  # the first one counts
    await twins.post("/v1/models/churn:predict", json={"instances": [ROW]}, headers=twice)
    await twins.post("/v2/models/churn/infer", json=TENSORS, headers=twice)

    assert {"champion", "canary"} <= set(routes)
    assert answered() == (before[0] + 3 * 12 + 2, before[1])
