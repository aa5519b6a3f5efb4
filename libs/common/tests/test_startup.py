"""A service whose dependency is not there yet answers probes, says what it waits for, and refuses other
requests with 503 until it has started; a failure before it waits fails the start, one after ends the process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from mloop_common import runtime
from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, Permission
from mloop_common.http import Starting, service_app
from mloop_common.retry import Backoff
from mloop_common.settings import ServiceSettings

router = APIRouter()


@router.get("/things")
async def things() -> dict[str, str]:
    return {"thing": "here"}


class Settings(ServiceSettings):
    service: ClassVar[str] = "trainer"
    uses_database: ClassVar[bool] = False


def app_waiting_for(broker_up: asyncio.Event, *, fail_after_wait: bool = False) -> FastAPI:
    """An app whose bootstrap waits for ``broker_up``, reporting each failed attempt as the runtime does."""

    @asynccontextmanager
    async def bootstrap(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
        attempt = 0
        while not broker_up.is_set():
            attempt += 1
            app.state.starting.waiting("kafka topics", attempt, ConnectionRefusedError("127.0.0.1:9092"))
            await asyncio.sleep(0.01)
        if fail_after_wait:
            raise ValueError("the topics exist with another partition count")
        app.state.checks["broker"] = lambda: _ok()
        yield None

    return service_app(
        Settings(), bootstrap=bootstrap, router=router, rules={("GET", "/things"): Permission.READ}, description="t"
    )


async def _ok() -> bool:
    return True


def client(app: FastAPI) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {DEVELOPMENT_ADMIN_KEY}"}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=headers)


async def test_while_waiting_probes_answer_readiness_says_why_and_routes_get_503_then_all_works():
    broker_up = asyncio.Event()
    app = app_waiting_for(broker_up)

    async with app.router.lifespan_context(app), client(app) as http:
        alive, ready, refused = [await http.get(p) for p in ("/healthz", "/readyz", "/things")]
        broker_up.set()
        while (await http.get("/readyz")).status_code != 200:
            await asyncio.sleep(0.01)  # waits for the start to finish; asserts nothing about time
        served = await http.get("/things")

    assert alive.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["checks"]["startup"].startswith("waiting for the kafka topics (attempt ")
    assert "ConnectionRefusedError: 127.0.0.1:9092" in ready.json()["checks"]["startup"]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    assert "trainer is starting (waiting for the kafka topics" in refused.json()["error"]["message"]
    assert served.status_code == 200 and served.json() == {"thing": "here"}


async def test_a_failure_before_any_wait_fails_the_start():
    @asynccontextmanager
    async def broken(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
        raise ValueError("MLOOP_ARTIFACTS_ROOT names no bucket")
        yield None

    rules = {("GET", "/things"): Permission.READ}
    app = service_app(Settings(), bootstrap=broken, router=router, rules=rules, description="t")

    with pytest.raises(ValueError, match="names no bucket"):
        async with app.router.lifespan_context(app):
            pass


async def test_a_failure_after_waiting_ends_the_process_through_its_fatal_hook():
    broker_up = asyncio.Event()
    app = app_waiting_for(broker_up, fail_after_wait=True)
    reasons: list[str] = []
    app.state.on_fatal = reasons.append

    async with app.router.lifespan_context(app):
        broker_up.set()
        while not reasons:
            await asyncio.sleep(0.01)

    assert reasons == ["trainer could not start: ValueError: the topics exist with another partition count"]


async def test_a_service_waits_for_a_dependency_however_many_attempts_it_takes(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runtime, "STARTUP_BACKOFF", Backoff(initial=0.0, maximum=0.0))
    starting = Starting("ingest")
    failures = iter(range(100))  # far past the 30 attempts after which services used to exit

    async def connect() -> None:
        if next(failures, None) is not None:
            raise ConnectionRefusedError("127.0.0.1:9092")

    await runtime._retry("kafka topics", connect, starting=starting)

    assert starting.status.startswith("waiting for the kafka topics (attempt 100): ConnectionRefusedError")
