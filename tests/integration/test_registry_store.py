"""Registry rules that only a real database can prove: version numbers under concurrency, races settled by
the database's constraints, and the append-only audit log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import sqlalchemy.exc

from mloop_common.contracts import PRODUCTION, Lineage, RegisterVersion
from mloop_common.db import Database, outbox_table
from mloop_common.events import ArtifactPointer
from mloop_common.spec import ModelSpec, parse_spec
from mloop_common.uow import SqlStore
from mloop_registry.handlers import ModelRegistry
from mloop_registry.store import SqlRegistryUnit, audit_log

SPEC = """
name: churn
dataset: churn
task: classification
target: churned
estimators: [{class: LogisticRegression, params: {C: [1.0]}}]
metric: accuracy
"""


def spec(text: str = SPEC) -> ModelSpec:
    return parse_spec(text, "application/yaml")


@pytest.fixture
async def db(postgres: str, schema: str) -> AsyncIterator[Database]:
    database = Database(postgres, schema=schema, pool_size=10)
    await database.migrate("mloop_registry:migrations")
    yield database
    await database.dispose()


@pytest.fixture
async def registry(db: Database) -> ModelRegistry:
    registry = ModelRegistry(store=SqlStore(db, SqlRegistryUnit, consumer="tests"))
    await registry.submit_spec(spec(), "tests")
    return registry


def registration(run_id: str | None = None) -> RegisterVersion:
    digest = uuid.uuid4().hex * 2
    return RegisterVersion(
        run_id=run_id or uuid.uuid4().hex,
        evaluation_id=uuid.uuid4().hex,
        spec_version=1,
        task="classification",
        artifact=ArtifactPointer(uri=f"artifact:models/{digest[:2]}/{digest}.skops", sha256=digest),
        profile=ArtifactPointer(uri=f"artifact:profiles/{digest[:2]}/{digest}.json", sha256=digest),
        features=["age"],
        metrics={"accuracy": 0.9},
        lineage=Lineage(
            dataset="churn",
            dataset_version=1,
            dataset_sha256="e" * 64,
            trigger="data.published",
            code_version="test",
            estimator_class="LogisticRegression",
            params={"C": 1.0},
            seed=42,
            training_seconds=0.1,
            trained_event_id=str(uuid.uuid4()),
            correlation_id=str(uuid.uuid4()),
        ),
    )


async def register(registry: ModelRegistry, request: RegisterVersion) -> int:
    version, _ = await registry.register("churn", request, "tests")
    return version.version


async def outbox_count(db: Database, topic: str) -> int:
    async with db.transaction() as session:
        query = sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.topic == topic)
        return int((await session.execute(query)).scalar_one())


async def test_concurrent_registrations_get_distinct_consecutive_versions(db: Database, registry: ModelRegistry):
    versions = await asyncio.gather(*(register(registry, registration()) for _ in range(20)))

    assert sorted(versions) == list(range(1, 21))
    assert (await registry.alias("churn", PRODUCTION)).version in versions
    assert await outbox_count(db, "model.promoted") == 20


async def test_registering_the_same_run_twice_returns_the_same_version(db: Database, registry: ModelRegistry):
    request = registration("run-1")

    assert await register(registry, request) == await register(registry, request) == 1
    assert await outbox_count(db, "model.registered") == 1


async def test_concurrent_registrations_of_one_run_make_one_version(db: Database, registry: ModelRegistry):
    request = registration("run-1")

    versions = await asyncio.gather(*(register(registry, request) for _ in range(5)))

    assert versions == [1] * 5
    assert len((await registry.versions("churn")).versions) == 1
    assert await outbox_count(db, "model.registered") == 1


async def test_concurrent_first_submissions_of_one_spec_make_one_spec_version(db: Database, registry: ModelRegistry):
    fraud = spec(SPEC.replace("name: churn", "name: fraud"))

    answers = await asyncio.gather(*(registry.submit_spec(fraud, "tests") for _ in range(5)))

    assert sorted(created for _, created in answers) == [False] * 4 + [True]
    assert {stored.spec_version for stored, _ in answers} == {1}


async def test_audit_log_refuses_edits(db: Database, registry: ModelRegistry):
    await register(registry, registration())

    with pytest.raises(sqlalchemy.exc.DBAPIError, match="append-only"):
        async with db.transaction() as session:
            await session.execute(sa.delete(audit_log))


async def test_resubmitting_an_older_spec_makes_it_the_latest_again(registry: ModelRegistry):
    changed = spec(SPEC.replace("C: [1.0]", "C: [0.5]"))

    same, created_again = await registry.submit_spec(spec(), "tests")
    second, _ = await registry.submit_spec(changed, "tests")
    reverted, reverted_created = await registry.submit_spec(spec(), "tests")

    assert (same.spec_version, created_again) == (1, False)
    assert second.spec_version == 2
    assert (reverted.spec_version, reverted_created) == (3, True)


async def test_a_version_reads_back_as_it_was_registered(registry: ModelRegistry):
    request = registration()
    await register(registry, request)

    detail = await registry.version("churn", 1)
    lineage = await registry.lineage("churn", 1)

    assert (detail.artifact, detail.profile, detail.lineage) == (request.artifact, request.profile, request.lineage)
    assert detail.aliases == [PRODUCTION] and detail.created_at.tzinfo is not None
    assert (lineage.run_id, lineage.spec.version) == (request.run_id, 1)
