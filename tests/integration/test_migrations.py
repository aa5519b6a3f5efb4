"""Every service's migrations build exactly the tables its store.py declares (the equivalent of `alembic check`).

The metadata in ``mloop_<svc>/store.py`` is the one definition of a service's tables; the migrations
must reach it, and go back down, on a real PostgreSQL schema of their own.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from mloop_common.db import AUTOGENERATE_OPTIONS, Database

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.parents[2].name for p in ROOT.glob("services/*/mloop_*/migrations/env.py"))


def metadata_of(service: str) -> sa.MetaData:
    return importlib.import_module(f"mloop_{service}.store").metadata


def alembic_config(service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"mloop_{service}:migrations")
    return config


@pytest.fixture
async def db(postgres: str, schema: str) -> AsyncIterator[Database]:
    database = Database(postgres, schema=schema, pool_size=1)
    yield database
    await database.dispose()


async def differences(db: Database, metadata: sa.MetaData) -> list[Any]:
    """What `alembic check` would report: ``metadata`` against the schema, and only that schema."""

    def compare(connection: sa.Connection) -> list[Any]:
        assert connection.execute(sa.text("SELECT current_schema()")).scalar_one() == db.schema
        return compare_metadata(MigrationContext.configure(connection, opts=AUTOGENERATE_OPTIONS), metadata)

    async with db.engine.connect() as conn:
        return await conn.run_sync(compare)


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": db.schema})
        return {name for (name,) in rows}


async def functions(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        query = "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = :s"
        return {name for (name,) in await conn.execute(sa.text(query), {"s": db.schema})}


async def downgrade(db: Database, service: str, revision: str) -> None:
    def run(connection: sa.Connection) -> None:
        config = alembic_config(service)
        config.attributes["connection"] = connection
        command.downgrade(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


def test_every_service_with_a_database_is_covered() -> None:
    assert {"ingest", "trainer", "validator", "registry", "drift"} <= set(SERVICES)


@pytest.mark.parametrize("service", SERVICES)
async def test_head_matches_the_store_metadata(db: Database, service: str) -> None:
    await db.migrate(f"mloop_{service}:migrations")

    assert await differences(db, metadata_of(service)) == []
    assert await tables(db) == {*metadata_of(service).tables, "alembic_version"}


@pytest.mark.parametrize("service", SERVICES)
async def test_downgrade_to_base_and_upgrade_again(db: Database, service: str) -> None:
    await db.migrate(f"mloop_{service}:migrations")

    await downgrade(db, service, "base")
    assert await tables(db) == {"alembic_version"}
    assert await functions(db) == set()  # the registry's audit-log trigger function too

    await db.migrate(f"mloop_{service}:migrations")
    assert await differences(db, metadata_of(service)) == []


async def test_the_check_catches_a_table_that_differs_from_the_metadata(db: Database) -> None:
    await db.migrate("mloop_trainer:migrations")
    changed = sa.MetaData(naming_convention=metadata_of("trainer").naming_convention)
    for table in metadata_of("trainer").tables.values():
        table.to_metadata(changed)
    changed.tables["runs"].append_column(sa.Column("extra", sa.Integer))
    changed.tables["runs"].c.error.nullable = False

    found = await differences(db, changed)

    assert ("add_column", None, "runs", changed.tables["runs"].c.extra) in found
    assert [d[0][0] for d in found if isinstance(d, list)] == ["modify_nullable"]


# The alembic command line, several commands in one process (each process start imports a lot):
# `main` is what the `alembic` script runs; it exits non-zero when a command fails.
CLI = """
from alembic.config import main

def alembic(*argv):
    print("$ alembic", *argv, flush=True)
    try:
        main(argv=list(argv))
    except SystemExit as exit:
        return exit.code
    return 0

assert alembic("check") not in (0, None), "a new schema is not up to date"
assert alembic("upgrade", "head") == 0
assert alembic("check") == 0
assert alembic("current") == 0
assert alembic("downgrade", "base") == 0
assert alembic("current") == 0
"""


@pytest.mark.parametrize("service", SERVICES)
def test_alembic_cli_uses_the_service_settings(postgres: str, schema: str, service: str) -> None:
    """`cd services/<svc> && alembic ...` (its alembic.ini) reaches the schema of the service's settings."""
    prefix = f"MLOOP_{service.upper()}_"
    env = {**os.environ, f"{prefix}DATABASE_URL": postgres, f"{prefix}DATABASE_SCHEMA": schema}

    done = subprocess.run(
        [sys.executable, "-c", CLI], cwd=ROOT / "services" / service, env=env, capture_output=True, text=True
    )

    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout.split("$ alembic ")
    assert output[3].startswith("check") and "No new upgrade operations detected" in output[3]
    head = ScriptDirectory.from_config(alembic_config(service)).get_current_head()
    assert output[4].startswith("current") and f"{head} (head)" in output[4]
    assert output[6].startswith("current") and head not in output[6]
