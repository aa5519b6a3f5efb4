import json
from datetime import UTC, datetime

import httpx
import pytest

from mloop_common.auth import Principal
from mloop_common.clients import KeyIntrospection, RegistryClient
from mloop_common.errors import Conflict, InvalidInput, NotFound, ServiceUnavailable
from mloop_common.retry import Backoff

SHA = "a" * 64


def version_body(version: int = 3) -> dict:
    return {
        "model": "churn",
        "version": version,
        "run_id": "r1",
        "evaluation_id": "e1",
        "spec_version": 1,
        "status": "registered",
        "task": "classification",
        "features": ["age"],
        "metrics": {"accuracy": 0.9},
        "artifact": {"uri": "artifact:models/aa/" + SHA + ".skops", "sha256": SHA},
        "profile": {"uri": "artifact:profiles/aa/" + SHA + ".json", "sha256": SHA},
        "created_at": datetime.now(UTC).isoformat(),
        "aliases": ["production"],
        "alias": "production",
        "a_field_added_later": True,
    }


def client_answering(*answers: httpx.Response | Exception) -> tuple[RegistryClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = RegistryClient(
        "http://registry", key="mlk_svc-trainer_k", transport=httpx.MockTransport(handle), backoff=Backoff(0.001, 0.002)
    )
    return client, seen


def error(status: int, message: str, field: str | None = None) -> httpx.Response:
    body = {"error": {"code": "x", "message": message, **({"field": field} if field else {})}}
    return httpx.Response(status, json=body)


async def test_an_alias_comes_back_as_a_typed_version():
    client, seen = client_answering(httpx.Response(200, json=version_body(3)))

    production = await client.alias("churn", "production")

    assert production is not None and production.version == 3 and production.artifact.sha256 == SHA
    assert seen[0].headers["Authorization"] == "Bearer mlk_svc-trainer_k"


async def test_a_missing_alias_is_none_and_a_missing_model_is_not_found():
    client, _ = client_answering(error(404, "model 'churn' does not exist"))

    assert await client.alias("churn", "production") is None
    with pytest.raises(NotFound, match="does not exist"):
        await client.model("churn")


@pytest.mark.parametrize(("status", "kind"), [(409, Conflict), (422, InvalidInput)])
async def test_refusals_become_typed_errors_naming_the_field_without_retrying(status, kind):
    client, seen = client_answering(error(status, "spec_version: too big", field="spec_version"))

    with pytest.raises(kind) as raised:
        await client.model("churn", spec_version=7)

    assert raised.value.field == "spec_version"
    assert len(seen) == 1


async def test_server_errors_are_retried_then_reported_as_unavailable():
    client, seen = client_answering(httpx.Response(503, text="busy"))

    with pytest.raises(ServiceUnavailable, match="HTTP 503"):
        await client.list_models()

    assert len(seen) == 3


async def test_a_transient_failure_followed_by_an_answer_succeeds():
    client, seen = client_answering(httpx.ConnectError("refused"), httpx.Response(200, json={"models": []}))

    assert await client.list_models() == []
    assert len(seen) == 2


async def test_an_answer_that_breaks_the_contract_is_not_taken_for_data():
    client, _ = client_answering(httpx.Response(200, json={"version": "three"}))

    with pytest.raises(ServiceUnavailable, match="unexpected body"):
        await client.alias("churn", "production")


async def test_register_sends_the_typed_request_as_json():
    from mloop_common.contracts import Lineage, RegisterVersion
    from mloop_common.events import ArtifactPointer

    client, seen = client_answering(httpx.Response(201, json=version_body(1)))
    pointer = ArtifactPointer(uri="artifact:models/aa/" + SHA + ".skops", sha256=SHA)
    lineage = Lineage(
        dataset="churn",
        dataset_version=1,
        dataset_sha256=SHA,
        trigger="data.published",
        code_version="abc",
        estimator_class="LogisticRegression",
        params={"C": 1.0},
        seed=42,
        training_seconds=1.5,
        trained_event_id="ev1",
        correlation_id="c1",
    )
    request = RegisterVersion(
        run_id="r1",
        evaluation_id="e1",
        spec_version=1,
        task="classification",
        artifact=pointer,
        profile=pointer,
        features=["age"],
        metrics={"accuracy": 0.9},
        lineage=lineage,
    )

    registered = await client.register("churn", request)

    assert registered.version == 1
    assert json.loads(seen[0].content)["lineage"]["dataset_sha256"] == SHA


async def test_introspection_names_the_holder_of_a_key_and_none_for_an_unknown_one():
    answers = {
        "good": httpx.Response(200, json={"active": True, "name": "alice", "role": "approver", "key_id": "ab" * 6}),
        "bad": httpx.Response(200, json={"active": False}),
    }
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers[json.loads(request.content)["key"]]

    introspection = KeyIntrospection("http://registry", key="own", transport=httpx.MockTransport(handle))

    assert await introspection.resolve("good") == Principal("alice", "approver", "ab" * 6)
    assert await introspection.resolve("bad") is None
    assert {r.headers["Authorization"] for r in seen} == {"Bearer own"}


@pytest.mark.parametrize("answer", [httpx.Response(503), httpx.Response(401), httpx.ConnectError("refused")])
async def test_introspection_that_cannot_get_an_answer_is_unavailable_not_a_refusal(answer):
    def handle(request: httpx.Request) -> httpx.Response:
        if isinstance(answer, Exception):
            raise answer
        return answer

    introspection = KeyIntrospection("http://registry", key="own", transport=httpx.MockTransport(handle))

    with pytest.raises(ServiceUnavailable):
        await introspection.resolve("any")
