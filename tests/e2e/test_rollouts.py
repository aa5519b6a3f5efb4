"""Several versions of a model at once, end to end on the real broker, database and six services.

- canary: a passing candidate of a spec with ``canary_percent: 20`` becomes the canary (auto-promotion is
  not lost) and answers about 20 % of 500 requests, sticky per routing key; promoting it by hand makes it
  production for everyone, and moving production back rolls it back;
- shadow: a candidate of a spec with ``shadow: true`` scores a copy of every request, never changes an
  answer, and its predictions are logged with route ``shadow``; clearing the alias rolls it back.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from mloop_common.events import PredictionsLogged
from tests.conftest import eventually, topic_events
from tests.e2e.test_release_gate import declare, publish, spec, version_count
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT = 120
ROW = {"x1": 0.3, "x2": -0.1, "x3": 1.0}
# Candidates must reach the rollout whatever the noise of a second dataset: the gate lets a small loss pass.
LENIENT = {"min_improvement": -0.5}


async def predict(
    serving: httpx.AsyncClient, name: str, key: str | None = None, row: dict[str, float] = ROW
) -> httpx.Response:
    headers = {"X-Mloop-Routing-Key": key} if key else {}
    response = await serving.post(f"/v1/models/{name}:predict", json={"instances": [row]}, headers=headers)
    assert response.status_code == 200, response.text
    return response


async def loaded(serving: httpx.AsyncClient, name: str, version: int) -> bool:
    response = await serving.post(f"/v1/models/{name}/versions/{version}:predict", json={"instances": [ROW]})
    return response.status_code == 200


async def two_versions(clients: dict[str, httpx.AsyncClient], name: str, **promotion: Any) -> list[dict[str, Any]]:
    """v1 (production, nothing beside it to compare with) and v2 (the candidate), both registered."""
    registry, ingest = clients["registry"], clients["ingest"]
    await declare(registry, spec(name, **LENIENT, **promotion))
    await publish(ingest, name, seed=1)
    await eventually(lambda: version_count(registry, name, 1), timeout=TIMEOUT, interval=1.0)
    await publish(ingest, name, seed=2)
    return list(await eventually(lambda: version_count(registry, name, 2), timeout=TIMEOUT, interval=1.0))


async def logged_records(bootstrap: str, name: str) -> list[tuple[int, str, str]]:
    """(version, route, request id) of every prediction record of ``name`` on predictions.logged so far."""
    logged = [e.decode(PredictionsLogged) for e in await topic_events(bootstrap, "predictions.logged", name)]
    return [(batch.version, record.route, record.request_id) for batch in logged for record in batch.records]


async def test_a_canary_takes_its_share_sticks_per_key_and_is_promoted_then_rolled_back(
    clients: dict[str, httpx.AsyncClient],
) -> None:
    registry, serving = clients["registry"], clients["serving"]
    name = f"canary-{uuid.uuid4().hex[:6]}"

    first, candidate = await two_versions(clients, name, canary_percent=20)

    assert first["aliases"] == ["production"]
    assert candidate["status"] == "registered" and candidate["aliases"] == ["canary"]
    await eventually(lambda: loaded(serving, name, 2), timeout=TIMEOUT, interval=0.5)
    answers = [await predict(serving, name, key=f"client-{i}") for i in range(500)]
    routes = [(r.headers["X-Mloop-Route"], int(r.headers["X-Mloop-Model-Version"])) for r in answers]
    assert {(r.json()["route"], r.json()["model_version"]) for r in answers} == set(routes)
    assert set(routes) == {("champion", 1), ("canary", 2)}
    canary = sum(route == "canary" for route, _ in routes)
    # Binomial(500, 0.2): mean 100, standard deviation 8.9; five of them either side is a wide band.
    assert 55 <= canary <= 145, canary
    again = [await predict(serving, name, key=f"client-{i}") for i in range(50)]
    assert [r.headers["X-Mloop-Route"] for r in again] == [route for route, _ in routes[:50]]

    promoted = await registry.put(f"/v1/models/{name}/aliases/production", json={"version": 2})

    assert promoted.status_code == 200 and promoted.json()["aliases"] == ["production"]
    assert (await registry.get(f"/v1/models/{name}")).json()["aliases"] == {"production": 2}

    async def everyone_on(version: int) -> bool:
        answers = [await predict(serving, name, key=f"client-{i}") for i in range(30)]
        return {(r.json()["route"], r.json()["model_version"]) for r in answers} == {("champion", version)}

    await eventually(lambda: everyone_on(2), timeout=TIMEOUT, interval=0.5)

    rolled_back = await registry.put(f"/v1/models/{name}/aliases/production", json={"version": 1})

    assert rolled_back.status_code == 200
    await eventually(lambda: everyone_on(1), timeout=TIMEOUT, interval=0.5)
    model = (await registry.get(f"/v1/models/{name}")).json()
    assert model["problems"] == []
    assert {(r["alias"], r["version"], r["loaded"]) for r in model["serving"]} == {("production", 1, True)}


async def test_a_shadow_scores_every_request_never_changes_an_answer_and_is_rolled_back(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    registry, serving = clients["registry"], clients["serving"]
    name = f"shadow-{uuid.uuid4().hex[:6]}"

    _, candidate = await two_versions(clients, name, shadow=True)

    assert candidate["aliases"] == ["shadow"]
    await eventually(lambda: loaded(serving, name, 2), timeout=TIMEOUT, interval=0.5)
    rows = [{"x1": i / 10 - 2, "x2": (i % 7) / 3 - 1, "x3": 0.5} for i in range(40)]
    answers = [await predict(serving, name, row=row) for row in rows]
    champion = [await serving.post(f"/v1/models/{name}/versions/1:predict", json={"instances": [row]}) for row in rows]
    assert {(r.json()["route"], r.json()["model_version"]) for r in answers} == {("champion", 1)}
    assert [r.json()["predictions"] for r in answers] == [r.json()["predictions"] for r in champion]
    answered = {rid for r in answers for rid in r.json()["request_ids"]}

    async def shadowed() -> list[tuple[int, str, str]] | None:
        records = await logged_records(stack.bootstrap, name)
        shadow = [r for r in records if r[1] == "shadow"]
        return records if answered <= {rid for _, _, rid in shadow} else None

    records = await eventually(shadowed, timeout=TIMEOUT, interval=1.0)
    assert {version for version, route, rid in records if rid in answered} == {1, 2}
    assert {version for version, route, _ in records if route == "shadow"} == {2}

    cleared = await registry.delete(f"/v1/models/{name}/aliases/shadow")

    assert cleared.status_code == 204
    assert (await registry.get(f"/v1/models/{name}")).json()["aliases"] == {"production": 1}
    await eventually(lambda: _not(loaded(serving, name, 2)), timeout=TIMEOUT, interval=0.5)


async def _not(awaitable: Any) -> bool:
    return not await awaitable
