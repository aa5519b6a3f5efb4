"""Scenario 5 of issue 10, its second half: a service whose database pool is exhausted answers 503 with
``Retry-After`` once the pool's wait runs out, never hangs, and answers again once a connection is free.

A real pool (SQLAlchemy's, one connection, on the local PostgreSQL) behind the real error handling of every
service (mloop_common.http.service_app); the one connection is held by the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import httpx
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, Permission
from mloop_common.db import Database
from mloop_common.http import service_app
from mloop_common.settings import ServiceSettings

router = APIRouter()


@router.get("/now")
async def now(request: Request) -> dict[str, str]:
    database: Database = request.app.state.database
    async with database.transaction() as session:
        return {"now": str((await session.execute(sa.text("SELECT now()"))).scalar_one())}


class Settings(ServiceSettings):
    service: ClassVar[str] = "registry"
    uses_database: ClassVar[bool] = False  # the test makes its own Database with a pool of one


@asynccontextmanager
async def nothing(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
    yield None


async def test_an_exhausted_pool_answers_503_with_retry_after_and_recovers(postgres: str) -> None:
    database = Database(postgres, pool_size=1, pool_timeout=0.5, max_overflow=0)  # exactly one connection
    app = service_app(
        Settings(), bootstrap=nothing, router=router, rules={("GET", "/now"): Permission.READ}, description="t"
    )
    app.state.database = database
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    headers = {"Authorization": f"Bearer {DEVELOPMENT_ADMIN_KEY}"}
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers, timeout=30) as client,
        ):
            before = await client.get("/now")
            async with database.engine.connect() as held:  # the pool's only connection, busy
                await held.execute(sa.text("SELECT 1"))
                exhausted = await client.get("/now")
            after = await client.get("/now")
    finally:
        await database.dispose()

    assert before.status_code == 200, before.text
    assert exhausted.status_code == 503, exhausted.text
    assert exhausted.headers["retry-after"] == "5"
    assert exhausted.json()["error"]["code"] == "unavailable"
    assert "QueuePool" not in exhausted.text  # no internals leak
    assert after.status_code == 200, after.text
