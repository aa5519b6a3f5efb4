"""The access check every service's app runs before any route: keys, roles, the open-predict switch, and a
registry that cannot be asked."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, Permission, Principal, new_key
from mloop_common.errors import ServiceUnavailable
from mloop_common.http import Actor, service_app
from mloop_common.settings import ServiceSettings
from tests.faults import summary
from tests.faults.summary import Row

router = APIRouter()


@router.get("/things")
async def things(actor: Actor) -> dict[str, str]:
    return {"actor": actor}


@router.post("/predict")
async def predict(request: Request) -> dict[str, str]:
    return {"answer": "yes", "bytes": str(len(await request.body()))}


RULES = {("GET", "/things"): Permission.READ, ("POST", "/predict"): Permission.PREDICT}


class Settings(ServiceSettings):
    service: ClassVar[str] = "trainer"
    uses_database: ClassVar[bool] = False


@asynccontextmanager
async def nothing(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
    yield None


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's row of the fault suite's summary table: scenario 10a of issue 10, overload of the gate
    alone (10b overloads a real serving process, in tests/faults/test_serving_log_outage.py)."""
    return []


class Registry:
    def __init__(self, keys: dict[str, Principal], up: bool = True) -> None:
        self.keys, self.up = keys, up

    async def resolve(self, presented: str) -> Principal | None:
        if not self.up:
            raise ServiceUnavailable("cannot check the API key: the registry is unreachable")
        return self.keys.get(presented)


def app_with(registry: Registry, **auth: object) -> FastAPI:
    app = service_app(Settings(common={"auth": auth}), bootstrap=nothing, router=router, rules=RULES, description="t")
    app.state.access.authenticator.resolver = registry
    return app


def client(app: FastAPI, key: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers)


async def test_the_holder_of_a_key_is_the_actor_and_a_key_of_the_wrong_role_is_refused_by_name():
    viewer, shop = new_key(), new_key()
    app = app_with(
        Registry({viewer.key: Principal("vera", "viewer", viewer.key_id), shop.key: Principal("shop", "app")})
    )

    async with client(app, viewer.key) as as_viewer, client(app, shop.key) as as_shop, client(app) as nobody:
        assert (await as_viewer.get("/things")).json() == {"actor": f"vera (key {viewer.key_id})"}
        refused = await as_shop.get("/things")
        assert refused.status_code == 403 and "'app' does not allow 'read'" in refused.json()["error"]["message"]
        assert (await as_shop.post("/predict")).status_code == 200
        assert (await nobody.post("/predict")).status_code == 401
        assert (await nobody.get("/healthz")).status_code == 200


async def test_open_predict_lets_anyone_predict_and_nothing_else():
    app = app_with(Registry({}), open_predict=True)

    async with client(app) as nobody:
        assert (await nobody.post("/predict")).json()["answer"] == "yes"
        assert (await nobody.get("/things")).status_code == 401


async def test_an_unreachable_registry_is_a_503_not_a_refusal_and_a_checked_key_keeps_working():
    viewer = new_key()
    registry = Registry({viewer.key: Principal("vera", "viewer")})
    app = app_with(registry)

    async with client(app, viewer.key) as as_viewer, client(app, new_key().key) as stranger:
        assert (await as_viewer.get("/things")).status_code == 200
        registry.up = False
        assert (await as_viewer.get("/things")).status_code == 200  # remembered
        unavailable = await stranger.get("/things")
        assert unavailable.status_code == 503 and "registry" in unavailable.json()["error"]["message"]


async def test_a_route_without_a_permission_stops_the_service_at_start():
    app = app_with(Registry({}))

    @app.get("/forgotten")
    async def forgotten() -> None: ...

    with pytest.raises(RuntimeError, match="GET /forgotten"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_request_for_another_host_is_refused_before_anything_runs():
    app = app_with(Registry({}))

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://attacker.example") as rebound:
        refused = await rebound.get("/healthz")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8004") as local:
        answered = await local.get("/healthz")

    assert refused.status_code == 400 and refused.json()["error"]["field"] == "Host"
    assert answered.status_code == 200


async def test_a_chunked_body_over_the_limit_is_refused_while_it_streams():
    app = service_app(Settings(), bootstrap=nothing, router=router, rules=RULES, description="t", max_body_bytes=1000)
    app.state.access.open_predict = True
    pulled = 0

    async def body():  # no Content-Length: sent chunked
        nonlocal pulled
        for _ in range(100):
            pulled += 100
            yield b"x" * 100

    async with client(app) as http:
        chunked = await http.post("/predict", content=body())
        declared = await http.post("/predict", content=b"x" * 1001)

    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"
    assert pulled < 10_000  # refused on the way, not after reading it all
    assert declared.status_code == 413 and "over 1000 bytes" in declared.json()["error"]["message"]


async def test_past_its_in_flight_limit_a_service_answers_429_at_once_and_probes_still_answer(rows: list[Row]):
    release = asyncio.Event()
    slow = APIRouter()

    @slow.get("/slow")
    async def wait() -> dict[str, str]:
        await release.wait()
        return {"done": "yes"}

    settings = Settings(common={"max_in_flight": 2})
    app = service_app(
        settings, bootstrap=nothing, router=slow, rules={("GET", "/slow"): Permission.READ}, description="t"
    )

    async with client(app, DEVELOPMENT_ADMIN_KEY) as http:
        held = [asyncio.create_task(http.get("/slow")) for _ in range(2)]
        await asyncio.sleep(0.2)  # both are in the route now
        asked = time.perf_counter()
        refused = await http.get("/slow")
        refused_in = time.perf_counter() - asked  # recorded, not asserted: timing belongs to benchmarks
        probe = await http.get("/readyz")
        release.set()
        answered = await asyncio.gather(*held)

    statuses = [r.status_code for r in answered]
    code = refused.json().get("error", {}).get("code")
    retry_after = refused.headers.get("Retry-After")
    rows.append(
        Row(
            "10a overload: more concurrent requests than the limit (the gate alone)",
            "a service with max_in_flight 2 holding 2 requests that do not finish; a third request, then /readyz",
            "the third refused at once with 429, Retry-After and code overloaded (not queued); probes still "
            "answer; the held requests answered once released",
            f"{refused.status_code} (Retry-After {retry_after}, code {code}) after {refused_in * 1000:.1f} ms; "
            f"/readyz {probe.status_code}; held requests: {', '.join(map(str, statuses))}",
            refused.status_code == 429
            and retry_after == "1"
            and code == "overloaded"
            and probe.status_code == 200
            and statuses == [200, 200],
        )
    )
    assert refused.status_code == 429 and retry_after == "1"
    assert code == "overloaded"
    assert probe.status_code == 200
    assert statuses == [200, 200]


def test_summary_rows(rows: list[Row]) -> None:
    """Merges this module's row into tests/faults/results/summary.md and .json."""
    assert rows, "no scenario ran"
    summary.write(rows)
    assert all(r.passed for r in rows)
