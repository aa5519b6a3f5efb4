"""A dependency away (the database restarting, its pool exhausted, another service down) is a 503 with
``Retry-After`` that names no internals, never a 500; a real bug stays a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import httpx
import pytest
from fastapi import APIRouter, FastAPI

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, Permission
from mloop_common.errors import ServiceUnavailable
from mloop_common.http import service_app
from mloop_common.settings import ServiceSettings


class OperationalError(Exception):
    """Named like the DBAPI's: what SQLAlchemy raises when PostgreSQL goes away mid-query."""


class TimeoutError_(TimeoutError):
    """Like SQLAlchemy's pool timeout (a TimeoutError subclass by name in its MRO)."""


FAILURES: dict[str, Exception] = {
    "restarting": OperationalError("terminating connection due to administrator command"),
    "refused": ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 55432)"),
    "pool": TimeoutError_("QueuePool limit of size 5 overflow 10 reached, connection timed out"),
    "registry": ServiceUnavailable("the registry is unreachable"),
    "bug": ValueError("a bug"),
}
router = APIRouter()


@router.get("/fail/{kind}")
async def fail(kind: str) -> None:
    raise FAILURES[kind]


class Settings(ServiceSettings):
    service: ClassVar[str] = "registry"
    uses_database: ClassVar[bool] = False


@asynccontextmanager
async def nothing(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
    yield None


@pytest.mark.parametrize("kind", ["restarting", "refused", "pool", "registry"])
async def test_a_dependency_away_is_a_503_with_retry_after(kind: str):
    app = service_app(
        Settings(), bootstrap=nothing, router=router, rules={("GET", "/fail/{kind}"): Permission.READ}, description="t"
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {DEVELOPMENT_ADMIN_KEY}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client,
    ):
        answer = await client.get(f"/fail/{kind}")
        bug = await client.get("/fail/bug")

    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json()["error"]["code"] == "unavailable"
    assert "terminating connection" not in answer.text and "55432" not in answer.text  # no internals leak
    assert bug.status_code == 500 and "retry-after" not in bug.headers
