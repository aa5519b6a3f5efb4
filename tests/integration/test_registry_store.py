"""Registry rules that only a real database can prove: version numbers under concurrency, races settled by
the database's constraints, and the append-only audit log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from mloop_common.contracts import PRODUCTION, Lineage, RegisterVersion
from mloop_common.db import Database, outbox_table
from mloop_common.events import ArtifactPointer
from mloop_common.spec import ModelSpec, parse_spec
from mloop_common.uow import SqlStore
from mloop_registry.handlers import ModelRegistry
from mloop_registry.store import SqlRegistryUnit, audit_log, models

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


async def tamper(db: Database, statement: sa.Executable) -> None:
    """Change the audit log as its owner could: with the append-only trigger off in this transaction only."""
    async with db.transaction() as session:
        await session.execute(sa.text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change"))
        await session.execute(statement)
        await session.execute(sa.text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change"))


async def test_audit_verify_names_an_edited_entry(db: Database, registry: ModelRegistry):
    for _ in range(3):
        await register(registry, registration())
    assert (await registry.verify_audit()).ok

    await tamper(db, sa.update(audit_log).where(audit_log.c.id == 3).values(actor="mallory"))
    report = await registry.verify_audit()

    assert (report.ok, report.first_bad_id) == (False, 3)
    assert report.reason.startswith("edited: entry 3")


async def test_audit_verify_names_a_deleted_entry(db: Database, registry: ModelRegistry):
    for _ in range(3):
        await register(registry, registration())

    await tamper(db, sa.delete(audit_log).where(audit_log.c.id == 4))
    report = await registry.verify_audit()

    assert (report.ok, report.first_bad_id) == (False, 5)
    assert report.reason.startswith("deleted:") and "entries 4..4 are missing" in report.reason


async def test_concurrent_appends_keep_one_gapless_chain(db: Database, registry: ModelRegistry):
    # Two registries on one database: appends from several "replicas" at once.
    other = ModelRegistry(store=SqlStore(db, SqlRegistryUnit, consumer="tests"))
    names = [f"m{i}" for i in range(10)]

    await asyncio.gather(
        *(register(registry, registration()) for _ in range(15)),
        *(other.submit_spec(spec(SPEC.replace("name: churn", f"name: {n}")), "tests") for n in names),
    )
    report = await registry.verify_audit()

    async with db.transaction() as session:
        ids = list((await session.execute(sa.select(audit_log.c.id).order_by(audit_log.c.id))).scalars())
    # 1 spec + 15 x (registered + alias moved) + 10 specs
    assert (report.ok, report.entries) == (True, 41)
    assert ids == list(range(1, 42))


async def test_the_migration_chains_entries_written_before_the_chain(postgres: str, schema: str):
    database = Database(postgres, schema=schema, pool_size=1)

    def upgrade_to_0002(connection: sa.Connection) -> None:
        config = Config()
        config.set_main_option("script_location", "mloop_registry:migrations")
        config.attributes["connection"] = connection
        command.upgrade(config, "registry_0002")

    try:
        async with database.engine.begin() as conn:
            await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            await conn.run_sync(upgrade_to_0002)
            old_log = sa.table("audit_log", sa.column("actor"), sa.column("action"), sa.column("detail", sa.JSON))
            for action in ("spec.created", "version.registered", "alias.moved"):
                await conn.execute(sa.insert(old_log).values(actor="old", action=action, detail={"x": [1, 2.5]}))
        await database.migrate("mloop_registry:migrations")
        registry = ModelRegistry(store=SqlStore(database, SqlRegistryUnit, consumer="tests"))
        await registry.submit_spec(spec(), "tests")

        report = await registry.verify_audit()

        assert (report.ok, report.entries) == (True, 4)
        async with database.transaction() as session:
            assert (await session.execute(sa.select(sa.func.count()).select_from(models))).scalar_one() == 1
    finally:
        await database.dispose()


async def test_search_combines_names_tags_metrics_and_aliases(registry: ModelRegistry):
    await registry.submit_spec(spec(SPEC.replace("name: churn", "name: fraud")), "tests")
    for model, accuracy in [("churn", 0.70), ("churn", 0.85), ("churn", 0.95), ("fraud", 0.90)]:
        request = registration()
        await registry.register(model, request.model_copy(update={"metrics": {"accuracy": accuracy}}), "tests")
    await registry.set_tags("churn", 2, {"gold": "", "owner": "ann"}, "tests")
    await registry.set_tags("fraud", None, {"owner": "ann"}, "tests")

    async def found(query: str, limit: int = 50, offset: int = 0) -> list[str]:
        page = await registry.search(query, limit=limit, offset=offset)
        return [f"{v.model}:{v.version}" for v in page.versions]

    assert await found("metric.accuracy > 0.8") == ["churn:2", "churn:3", "fraud:1"]
    assert await found("name = churn AND metric.accuracy >= 0.85") == ["churn:2", "churn:3"]
    assert await found("tag.gold OR (name = fraud AND metric.accuracy < 0.95)") == ["churn:2", "fraud:1"]
    assert await found("tag.owner = ann") == ["churn:2", "fraud:1"]  # a model's tag covers its versions
    assert await found("tag.owner != ann AND dataset = churn") == ["churn:1", "churn:3"]
    assert await found("alias = production") == ["churn:3", "fraud:1"]
    assert await found("version <= 2 AND dataset_version = 1 AND metric.missing > 0 OR status = nope") == []
    assert await found("name = \"churn' OR '1'='1\"") == []
    page = await registry.search("dataset = churn", limit=2, offset=0)
    rest = await registry.search("dataset = churn", limit=2, offset=2)
    assert (len(page.versions), page.next_offset, len(rest.versions), rest.next_offset) == (2, 2, 2, None)
