"""Retention on a real PostgreSQL: the SQL deletes exactly what the pure rules (and the fake) allow."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa

from mloop_common.db import Database
from mloop_common.uow import SqlStore
from mloop_drift.retention import Purger
from mloop_drift.store import SqlDriftUnit, observations, reports

from .retention_scenario import EXPECTED, NOW, RETENTION, write_history

pytestmark = pytest.mark.integration

POSTGRES = Path(__file__).resolve().parents[3] / "deploy" / "local" / "postgres.sh"
DSN = (
    f"postgresql://mloop:mloop@127.0.0.1:{os.environ.get('MLOOP_DATABASE_PORT', '55432')}/mloop"  # as tests/conftest.py
)


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    """Drift's migrated schema on the local PostgreSQL (started if needed), dropped after the test."""
    subprocess.run([str(POSTGRES), "start"], check=True, stdout=subprocess.DEVNULL)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    database = Database(DSN.replace("postgresql://", "postgresql+asyncpg://"), schema=schema, pool_size=2)
    try:
        await database.migrate("mloop_drift:migrations")
        yield database
    finally:
        await database.dispose()
        connection = await asyncpg.connect(DSN)
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


async def test_old_rows_go_and_recent_or_needed_rows_stay(db: Database) -> None:
    store = SqlStore(db, SqlDriftUnit, consumer="tests")
    await write_history(store)

    counts = await Purger(store=store, retention=RETENTION, batch=2, clock=lambda: NOW).purge()

    async with db.transaction() as session:
        kept_rows = {r for (r,) in await session.execute(sa.select(observations.c.request_id))}
        kept_reports = {r for (r,) in await session.execute(sa.select(reports.c.id))}
    assert kept_rows == EXPECTED.observations
    assert kept_reports == EXPECTED.reports
    assert counts == {"observations": 10, "reports": 3}
