"""Ingest's publishing, policies and contracts on a real PostgreSQL: the SQL queries behind the handler tests' fakes."""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mloop_common.artifacts import ArtifactStore, sha256_hex
from mloop_common.db import Database, outbox_table
from mloop_common.errors import InvalidInput
from mloop_common.uow import SqlStore
from mloop_ingest.handlers import DatasetPublisher, PublishVersion, read_contract, read_diff
from mloop_ingest.store import SqlIngestUnit


@pytest.fixture
async def db(postgres: str, schema: str) -> AsyncIterator[Database]:
    database = Database(postgres, schema=schema, pool_size=2)
    await database.migrate("mloop_ingest:migrations")
    yield database
    await database.dispose()


@pytest.fixture
def publisher(db: Database, tmp_path: Path) -> DatasetPublisher:
    store = SqlStore(db, SqlIngestUnit, consumer="tests")
    return DatasetPublisher(store=store, artifacts=ArtifactStore(tmp_path), max_event_bytes=900_000, workdir=tmp_path)


def upload(folder: Path, yes: int, no: int, seed: int, **extra: str) -> PublishVersion:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"usage": rng.normal(10, 2, yes + no).round(3), "churned": ["yes"] * yes + ["no"] * no})
    for name, value in extra.items():
        frame[name] = value
    data = frame.sample(frac=1, random_state=seed).to_csv(index=False).encode()
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".csv", delete=False) as handle:
        handle.write(data)
    return PublishVersion(
        dataset="churn",
        source=Path(handle.name),
        upload_sha256=sha256_hex(data),
        filename="churn.csv",
        target="churned",
    )


async def test_a_policy_is_stored_replaced_and_applied_to_the_next_version(publisher, db, tmp_path):
    first = await publisher.publish_version(upload(tmp_path, 20, 20, seed=0))
    await publisher.set_dataset_policy("churn", {"label_shift": {"warning": 0.05}}, actor="alice")
    replaced = await publisher.set_dataset_policy("churn", {"label_shift": {"error": 0.15}}, actor="bob")

    stored = await publisher.dataset_policy("churn")
    shifted = await publisher.publish_version(upload(tmp_path, 28, 12, seed=1))

    assert first.version.status == "published"
    assert stored == replaced and stored.updated_by == "bob" and stored.updated_at is not None
    assert stored.overrides == {"label_shift": {"warning": None, "error": 0.15}}
    assert shifted.version.status == "rejected"
    assert [c.name for c in shifted.version.report.failures()] == ["label_balance"]
    with pytest.raises(InvalidInput) as refused:
        await publisher.set_dataset_policy("churn", {"label_shift": {"error": -1}}, actor="eve")
    assert refused.value.field == "label_shift.error"
    assert (await publisher.dataset_policy("churn")).updated_by == "bob"


async def test_the_staged_event_is_small_and_points_at_the_stored_contract(publisher, db, tmp_path):
    await publisher.publish_version(upload(tmp_path, 20, 20, seed=0))
    await publisher.publish_version(upload(tmp_path, 21, 19, seed=2, region="north"))

    async with db.engine.connect() as conn:
        values = (await conn.execute(sa.select(outbox_table.c.value).order_by(outbox_table.c.seq))).scalars().all()
    contract = await read_contract(publisher.store, "churn")
    diff = await read_diff(publisher.store, "churn", 1, 2)

    assert len(values) == 2 and all(len(value) < 2_000 for value in values)
    latest = json.loads(values[-1])
    assert latest["schema_version"] == 2 and latest["schema_digest"] == contract.digest
    assert latest["contract"]["uri"].startswith("artifact:contracts/")
    assert any(w["check"] == "constant_columns" for w in latest["warnings"])
    assert diff.added == ["region"] and not diff.same_schema
