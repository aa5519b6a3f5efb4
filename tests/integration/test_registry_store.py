"""Registry rules that only a real database can prove: version numbers under concurrency, append-only audit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from mloop_common.db import Database, outbox_table
from mloop_common.events import ArtifactPointer
from mloop_common.spec import parse_spec
from mloop_registry import handlers, store

SPEC = """
name: churn
dataset: churn
task: classification
target: churned
estimators: [{class: LogisticRegression, params: {C: [1.0]}}]
metric: accuracy
"""


@pytest.fixture
async def db(postgres: str, schema: str) -> AsyncIterator[Database]:
    database = Database(postgres, schema=schema, pool_size=10)
    await database.migrate("mloop_registry:migrations")
    async with database.transaction() as session:
        await handlers.create_spec(session, parse_spec(SPEC, "application/yaml"), "tests")
    yield database
    await database.dispose()


def registration(run_id: str | None = None) -> handlers.RegisterVersion:
    digest = uuid.uuid4().hex * 2
    return handlers.RegisterVersion(
        run_id=run_id or uuid.uuid4().hex,
        evaluation_id=uuid.uuid4().hex,
        spec_version=1,
        task="classification",
        artifact=ArtifactPointer(uri=f"artifact:models/{digest[:2]}/{digest}.skops", sha256=digest),
        profile=ArtifactPointer(uri=f"artifact:profiles/{digest[:2]}/{digest}.json", sha256=digest),
        features=["age"],
        metrics={"accuracy": 0.9},
        lineage={"dataset": "churn"},
    )


async def register(db: Database, request: handlers.RegisterVersion) -> int:
    async with db.transaction() as session:
        row, _ = await handlers.register_version(session, "churn", request, "tests")
        return row["version"]


async def test_concurrent_registrations_get_distinct_consecutive_versions(db: Database) -> None:
    versions = await asyncio.gather(*(register(db, registration()) for _ in range(20)))
    assert sorted(versions) == list(range(1, 21))
    async with db.transaction() as session:
        production = await store.get_alias(session, "churn", "production")
        promoted = (
            await session.execute(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.topic == "model.promoted")
            )
        ).scalar_one()
    assert production is not None and promoted == 20


async def test_registering_the_same_run_twice_returns_the_same_version(db: Database) -> None:
    request = registration("run-1")
    assert await register(db, request) == await register(db, request) == 1
    async with db.transaction() as session:
        registered = (
            await session.execute(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.topic == "model.registered")
            )
        ).scalar_one()
    assert registered == 1


async def test_audit_log_refuses_edits(db: Database) -> None:
    await register(db, registration())
    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
        async with db.transaction() as session:
            await session.execute(sa.delete(store.audit_log))


async def test_resubmitting_an_older_spec_makes_it_the_latest_again(db: Database) -> None:
    first = parse_spec(SPEC, "application/yaml")
    changed = parse_spec(SPEC.replace("C: [1.0]", "C: [0.5]"), "application/yaml")
    async with db.transaction() as session:
        same, created_again = await handlers.create_spec(session, first, "tests")
        second, _ = await handlers.create_spec(session, changed, "tests")
        reverted, reverted_created = await handlers.create_spec(session, first, "tests")
    assert (same["spec_version"], created_again) == (1, False)
    assert second["spec_version"] == 2
    assert (reverted["spec_version"], reverted_created) == (3, True)
