"""Serving's HTTP contract (paths, statuses, body shapes) over its routes, with fakes behind them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from sklearn.linear_model import LinearRegression

from mloop_common.artifacts import ArtifactStore
from mloop_common.auth import (
    DEVELOPMENT_ADMIN_KEY,
    DEVELOPMENT_SECRET,
    Authenticator,
    Principal,
    StaticKeys,
    new_key,
)
from mloop_common.events import PredictionsLogged
from mloop_common.http import PUBLIC_ROUTES, Access, create_app
from mloop_common.testing import ADMIN_HEADERS
from mloop_serving import api
from mloop_serving.access import RULES
from mloop_serving.bootstrap import ServingService, models_check
from mloop_serving.fastpath import FastPath
from mloop_serving.handlers import Scored
from mloop_serving.host import LoadedModel
from mloop_serving.schemas import PredictResponse

from .fakes import FEATURES, Serving, classifier_file, serving

ROW = {"usage": 1.5, "calls": 2.0}


@asynccontextmanager
async def no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture
def svc(tmp_path: Path) -> Serving:
    return serving(ArtifactStore(tmp_path))


@pytest.fixture(params=["fast-path", "routes-only"])
async def client(svc: Serving, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """Every test here holds with serving's fast path to the predict routes, and without it."""
    app = create_app(service="serving", lifespan=no_lifespan, inner=[FastPath] if request.param == "fast-path" else [])
    app.include_router(api.router)
    api.configure_oip(app)
    app.state.checks["models"] = models_check(svc.loader)
    app.state.service = ServingService(host=svc.host, loader=svc.loader, scorer=svc.scorer)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS
    ) as client:
        yield client


async def serving_v1(svc: Serving) -> None:
    await svc.register(classifier_file(seed=1))
    await svc.loader.sync_all()


async def test_predict_answers_predictions_probabilities_classes_and_request_ids(svc, client):
    await serving_v1(svc)

    response = await client.post("/v1/models/churn:predict", json={"instances": [ROW]})

    assert response.status_code == 200
    body = response.json()
    assert body.keys() == {"predictions", "probabilities", "classes", "model_version", "route", "request_ids"}
    assert body["predictions"] == ["yes"] and body["model_version"] == 1 and body["classes"] == ["no", "yes"]
    assert body["request_ids"] == ["req-1"] and len(body["probabilities"][0]) == 2


async def test_a_regressor_answers_without_probabilities_or_classes(svc, client):
    frame = pd.DataFrame({"usage": np.arange(10.0), "calls": np.ones(10)})
    estimator = LinearRegression().fit(frame, frame["usage"] * 2)
    kinds = dict.fromkeys(FEATURES, "numeric")
    svc.host.swap(LoadedModel("demand", 3, "regression", FEATURES, kinds, estimator))  # type: ignore[arg-type]

    response = await client.post("/v1/models/demand:predict", json={"instances": [ROW]})

    assert response.status_code == 200
    assert response.json().keys() == {"predictions", "model_version", "route", "request_ids"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": [{"usage": 1.0}]}, "instances[0].calls"),
        ({"instances": []}, "instances"),
        ({"instances": [ROW], "extra": 1}, "extra"),
    ],
)
async def test_bad_predict_requests_are_422_naming_the_field(svc, client, body, field):
    await serving_v1(svc)

    response = await client.post("/v1/models/churn:predict", json=body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_input" and response.json()["error"]["field"] == field


async def test_predict_for_a_model_not_loaded_is_404(svc, client):
    await svc.loader.sync_all()

    response = await client.post("/v1/models/fraud:predict", json={"instances": [ROW]})

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_predict_before_the_production_models_are_loaded_is_503_to_retry(svc, client):
    await svc.register(classifier_file(seed=1))

    early = await client.post("/v1/models/churn:predict", json={"instances": [ROW]})
    await svc.loader.sync_all()
    loaded = await client.post("/v1/models/churn:predict", json={"instances": [ROW]})

    assert early.status_code == 503 and early.json()["error"]["code"] == "unavailable"
    assert early.headers["retry-after"]
    assert loaded.status_code == 200


async def test_feedback_is_accepted_with_202_and_unknown_ids_listed(svc, client):
    await serving_v1(svc)
    [request_id] = (await client.post("/v1/models/churn:predict", json={"instances": [ROW]})).json()["request_ids"]

    one = await client.post("/v1/feedback", json={"request_id": request_id, "label": "yes"})
    many = await client.post(
        "/v1/feedback", json=[{"request_id": request_id, "label": "yes"}, {"request_id": "x", "label": 0}]
    )

    assert (one.status_code, one.json()) == (202, {"accepted": 1, "unknown": []})
    assert (many.status_code, many.json()) == (202, {"accepted": 1, "unknown": ["x"]})


async def test_feedback_for_unknown_ids_only_is_404_and_an_empty_list_is_422(client):
    unknown = await client.post("/v1/feedback", json={"request_id": "never-issued", "label": 1})
    empty = await client.post("/v1/feedback", json=[])

    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "request_id"
    assert empty.status_code == 422


async def test_oip_health_says_ready_only_once_production_models_are_loaded(svc, client):
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    before = await client.get("/v2/health/ready")
    await serving_v1(svc)
    after = await client.get("/v2/health/ready")

    assert (before.status_code, before.json()) == (503, {"ready": False})
    assert (after.status_code, after.json()) == (200, {"ready": True})


async def test_readiness_waits_for_the_start_sync_then_reports_a_model_that_failed_without_failing(svc, client):
    before = await client.get("/readyz")
    await svc.register(classifier_file(seed=1), sha256="0" * 64)
    await svc.register(classifier_file(seed=2), model="fraud")
    await svc.loader.sync_all()

    after = await client.get("/readyz")

    assert before.status_code == 503 and before.json()["checks"]["models"] == "production models not loaded yet"
    assert after.status_code == 200 and after.json()["ready"] is True
    assert after.json()["checks"]["models"].startswith("degraded: churn: v1 failed to load (DigestMismatch")
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    assert (await client.get("/v2/models/fraud/ready")).status_code == 200
    assert (await client.get("/v2/models/churn/ready")).status_code == 404


async def test_readiness_is_plainly_ok_when_every_model_loaded(svc, client):
    await serving_v1(svc)

    response = await client.get("/readyz")

    assert response.status_code == 200 and response.json()["checks"] == {"models": "ok"}


async def test_oip_metadata_and_readiness_describe_the_loaded_version(svc, client):
    await serving_v1(svc)

    server = (await client.get("/v2")).json()
    metadata = (await client.get("/v2/models/churn")).json()
    versioned = await client.get("/v2/models/churn/versions/1")

    assert server == {
        "name": "mloop-serving",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data"],
        "models": ["churn"],
    }
    assert metadata == {
        "name": "churn",
        "versions": ["1"],
        "platform": "sklearn",
        "inputs": [{"name": f, "datatype": "FP64", "shape": [-1]} for f in FEATURES],
        "outputs": [
            {"name": "predict", "datatype": "BYTES", "shape": [-1]},
            {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 2]},
        ],
    }
    assert versioned.json() == metadata
    assert (await client.get("/v2/models/churn/ready")).json() == {"name": "churn", "ready": True}
    assert (await client.get("/v2/models/churn/versions/1/ready")).json() == {
        "name": "churn",
        "version": "1",
        "ready": True,
    }
    assert (await client.get("/v2/models/churn/versions/2/ready")).status_code == 404
    assert (await client.get("/v2/models/fraud/ready")).status_code == 404
    assert (await client.get("/v2/models/fraud")).status_code == 404


async def test_oip_infer_answers_the_protocols_shape_and_logs_the_predictions(svc, client):
    await serving_v1(svc)
    request = {
        "id": "req-a",
        "inputs": [{"name": f, "shape": [2], "datatype": "FP64", "data": [1.5, -2.0]} for f in FEATURES],
    }

    body = (await client.post("/v2/models/churn/infer", json=request)).json()
    only_predict = (
        await client.post("/v2/models/churn/versions/1/infer", json={**request, "outputs": [{"name": "predict"}]})
    ).json()
    await svc.logbook.flush()

    assert body == {
        "model_name": "churn",
        "model_version": "1",
        "id": "req-a",
        "outputs": [
            {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["yes", "no"]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": body["outputs"][1]["data"]},
        ],
        "parameters": {"request_ids": ["req-1", "req-2"], "route": "champion"},
    }
    assert [o["name"] for o in only_predict["outputs"]] == ["predict"]
    assert (await client.post("/v2/models/churn/versions/2/infer", json=request)).status_code == 404
    logged = svc.publisher.payloads(PredictionsLogged)
    assert [r.request_id for p in logged for r in p.records] == ["req-1", "req-2", "req-3", "req-4"]


async def test_oip_infer_reads_the_body_whatever_its_content_type(svc, client):
    await serving_v1(svc)
    request = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1.5, 2.0]}]})

    answers = [
        await client.post("/v2/models/churn/infer", content=request, headers=headers)
        for headers in ({}, {"content-type": "text/plain"}, {"content-type": "application/octet-stream"})
    ]

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert {a.json()["outputs"][0]["data"][0] for a in answers} == {"yes"}
    assert all("id" not in a.json() for a in answers)


async def test_oip_infer_with_binary_tensors_answers_binary_outputs_with_their_headers(svc, client):
    await serving_v1(svc)
    header = json.dumps(
        {
            "id": "bin-1",
            "inputs": [
                {"name": f, "shape": [2], "datatype": "FP64", "parameters": {"binary_data_size": 16}} for f in FEATURES
            ],
            "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}, {"name": "predict"}],
        }
    ).encode()
    tensors = np.array([1.5, -2.0]).tobytes() + np.array([2.0, -1.0]).tobytes()

    response = await client.post(
        "/v2/models/churn/versions/1/infer",
        content=header + tensors,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    answer = json.loads(response.content[:length])
    assert answer["id"] == "bin-1"
    assert answer["outputs"][1] == {"name": "predict", "shape": [2], "datatype": "BYTES", "data": ["yes", "no"]}
    assert answer["outputs"][0]["parameters"] == {"binary_data_size": 32}
    probabilities = np.frombuffer(response.content[length:], dtype="<f8").reshape(2, 2)
    assert probabilities[0, 1] > 0.5 > probabilities[1, 1]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/churn/infer", b"{not json", 400, "request body is not valid JSON"),
        ("/v2/models/churn/infer", json.dumps({"inputs": []}).encode(), 400, "inputs: must be a non-empty list"),
        (
            "/v2/models/churn/infer",
            json.dumps({"inputs": [{"name": "usage", "shape": [1], "datatype": "INT8", "data": [300]}]}).encode(),
            400,
            "inputs[0].data[0]: 300 is not a valid INT8 value",
        ),
        (
            "/v2/models/churn/infer",
            json.dumps(
                {
                    "inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}],
                    "outputs": [{"name": "scores"}],
                }
            ).encode(),
            400,
            "outputs[0].name: model 'churn' has no output 'scores'",
        ),
        (
            "/v2/models/fraud/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}).encode(),
            404,
            "model 'fraud' is not served here",
        ),
        (
            "/v2/models/churn/versions/7/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}).encode(),
            404,
            "model 'churn' version 7 is not loaded",
        ),
        (
            "/v2/models/churn/versions/latest/infer",
            json.dumps({"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": [1.0]}]}).encode(),
            404,
            "model 'churn' has no version 'latest'",
        ),
    ],
)
async def test_oip_errors_are_a_single_error_string(svc, client, path, body, status, message):
    await serving_v1(svc)

    response = await client.post(path, content=body)

    assert response.status_code == status
    assert response.json().keys() == {"error"} and response.json()["error"].startswith(message)


@pytest.mark.parametrize(
    "path",
    [
        "/v2/models/fraud",
        "/v2/models/fraud/ready",
        "/v2/models/churn/versions/2",
        "/v2/models/churn/versions/x/ready",
    ],
)
async def test_oip_metadata_and_readiness_of_what_is_not_loaded_is_a_404_error_string(svc, client, path):
    await serving_v1(svc)

    response = await client.get(path)

    assert response.status_code == 404 and isinstance(response.json()["error"], str)


async def test_errors_raised_before_any_oip_route_runs_have_the_protocols_shape_too(client):
    oversized = await client.post("/v2/models/churn/infer", content=b"x", headers={"content-length": str(10**9)})
    unknown_path = await client.get("/v2/models/churn/explain")

    assert (oversized.status_code, unknown_path.status_code) == (413, 404)
    assert oversized.json() == {"error": "request body over 10485760 bytes"}
    assert isinstance(unknown_path.json()["error"], str)


class Broken:
    """An estimator that fails the way a bug would."""

    def predict(self, frame):
        raise RuntimeError("boom")


async def test_an_unexpected_failure_on_an_oip_path_is_a_500_error_string(svc, client):
    kinds = dict.fromkeys(FEATURES, "numeric")
    svc.host.swap(LoadedModel("broken", 1, "regression", FEATURES, kinds, Broken()))  # type: ignore[arg-type]
    body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}

    response = await client.post("/v2/models/broken/infer", json=body)

    assert (response.status_code, response.json()) == (500, {"error": "internal error: RuntimeError"})


async def test_the_simple_json_api_keeps_its_error_objects(svc, client):
    await serving_v1(svc)

    response = await client.post(
        "/v1/models/churn:predict", content=b"{not json", headers={"content-type": "application/json"}
    )

    oversized = await client.post("/v1/models/churn:predict", content=b"x", headers={"content-length": str(10**9)})

    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_input"
    assert oversized.status_code == 413 and oversized.json()["error"]["code"] == "payload_too_large"


async def test_every_route_documents_its_response_model(client):
    schema = (await client.get("/openapi.json")).json()

    for path, methods in schema["paths"].items():
        if path.startswith(("/v1/", "/v2")):
            for method, operation in methods.items():
                ok = operation["responses"].get("200") or operation["responses"].get("202")
                assert "$ref" in ok["content"]["application/json"]["schema"], f"{method.upper()} {path}"


async def test_the_infer_request_body_is_documented_with_resolvable_schemas(client):
    schema = (await client.get("/openapi.json")).json()

    body = schema["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"]["content"]
    ref = body["application/json"]["schema"]["$ref"]
    request = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    inputs_ref = request["properties"]["inputs"]["items"]["$ref"]
    assert inputs_ref.rsplit("/", 1)[1] in schema["components"]["schemas"]
    assert "application/octet-stream" in body


async def test_every_answer_names_the_version_and_route_in_headers_and_body(svc, client):
    await serving_v1(svc)
    await svc.register(classifier_file(seed=2))
    svc.registry.aliases["churn"] = {"production": 1, "challenger": 2}
    await svc.loader.ensure_rollouts("churn")

    routed = await client.post(
        "/v1/models/churn:predict", json={"instances": [ROW]}, headers={"X-Mloop-Routing-Key": "a"}
    )
    named = await client.post("/v1/models/churn/versions/2:predict", json={"instances": [ROW]})
    aliased = await client.post("/v1/models/churn/aliases/challenger:predict", json={"instances": [ROW]})
    oip = await client.post(
        "/v2/models/churn/versions/2/infer",
        json={"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [ROW[f]]} for f in FEATURES]},
    )

    answers = [(r.headers["X-Mloop-Model-Version"], r.headers["X-Mloop-Route"]) for r in (routed, named, aliased, oip)]
    assert answers == [("1", "champion"), ("2", "challenger"), ("2", "challenger"), ("2", "challenger")]
    assert (routed.json()["model_version"], routed.json()["route"]) == (1, "champion")
    assert (named.json()["model_version"], named.json()["route"]) == (2, "challenger")
    assert (oip.json()["model_version"], oip.json()["parameters"]["route"]) == ("2", "challenger")


async def test_a_version_that_is_not_loaded_is_not_found_by_number_or_alias(svc, client):
    await serving_v1(svc)

    by_number = await client.post("/v1/models/churn/versions/9:predict", json={"instances": [ROW]})
    by_alias = await client.post("/v1/models/churn/aliases/canary:predict", json={"instances": [ROW]})

    assert (by_number.status_code, by_alias.status_code) == (404, 404)


async def test_log_false_answers_the_same_logs_nothing_and_is_refused_to_an_app_key(svc, client):
    await serving_v1(svc)
    app_key = new_key().key
    client._transport.app.state.access = Access(  # type: ignore[attr-defined]
        {**PUBLIC_ROUTES, **RULES},
        Authenticator(
            secret=DEVELOPMENT_SECRET,
            admin_key=DEVELOPMENT_ADMIN_KEY,
            resolver=StaticKeys({app_key: Principal("shop", "app", key_id="000000000001")}),
        ),
    )

    logged = await client.post("/v1/models/churn:predict", json={"instances": [ROW]})
    unlogged = await client.post("/v1/models/churn:predict", params={"log": "false"}, json={"instances": [ROW]})
    by_version = await client.post(
        "/v1/models/churn/versions/1:predict", params={"log": "false"}, json={"instances": [ROW]}
    )
    refused = await client.post(
        "/v1/models/churn:predict",
        params={"log": "false"},
        json={"instances": [ROW]},
        headers={"Authorization": f"Bearer {app_key}"},
    )
    await svc.logbook.flush()

    assert logged.status_code == unlogged.status_code == by_version.status_code == 200
    assert unlogged.json()["predictions"] == logged.json()["predictions"]
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "log"
    records = [r.request_id for p in svc.publisher.payloads(PredictionsLogged) for r in p.records]
    assert records == logged.json()["request_ids"]  # only the logged answer


@pytest.mark.parametrize(
    ("predictions", "probabilities", "classes"),
    [
        (["yes", "no"], [[0.25, 0.75], [0.9, 0.1]], ["no", "yes"]),
        ([1.5, float("nan"), None, 1e-7, 1e16, 2**70], None, []),  # a regressor: no probabilities, no classes
        ([True], [[0.0, 1.0]], [False, True]),
    ],
)
def test_a_predict_answer_is_the_json_pydantic_would_write_for_it(predictions, probabilities, classes):
    """The answer is encoded from its fields, not through PredictResponse: the bytes must be the model's."""
    count = len(predictions)
    model = LoadedModel("churn", 3, "classification", FEATURES, {}, None, classes)  # type: ignore[arg-type]
    scored = Scored(model, predictions, probabilities, [f"r{i}" for i in range(count)], "canary")
    expected = PredictResponse(
        predictions=predictions,
        model_version=3,
        route="canary",
        request_ids=scored.request_ids,
        probabilities=probabilities,
        classes=classes if probabilities is not None else None,
    )

    response = api.prediction_response(scored)

    assert json.loads(response.body) == json.loads(expected.model_dump_json(exclude_none=True))  # same values
    assert response.headers["x-mloop-model-version"] == "3" and response.headers["x-mloop-route"] == "canary"
