"""Drift's windows and revised verdicts on a real PostgreSQL: the SQL queries behind the handler tests' fakes."""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mloop_common.artifacts import ArtifactStore
from mloop_common.db import Database, outbox_table
from mloop_common.events import (
    ArtifactPointer,
    FeedbackReceived,
    FeedbackRecord,
    ModelPromoted,
    PredictionRecord,
    PredictionsLogged,
    new_event,
)
from mloop_common.profile import build_reference_profile
from mloop_common.uow import SqlStore
from mloop_drift.handlers import DriftMonitor, WindowRules
from mloop_drift.store import SqlDriftUnit

MODEL = "churn"
WINDOW = 100
START = datetime(2026, 1, 1, tzinfo=UTC)


def rows(n: int, shift: float, seed: int) -> list[dict[str, float]]:
    x = np.random.default_rng(seed).normal(shift, 1.0, size=(n, 2))
    return [{"x1": float(a), "x2": float(b)} for a, b in x]


def truth(row: dict[str, float]) -> str:
    return "yes" if row["x1"] + row["x2"] > 0 else "no"


@pytest.fixture
async def db(postgres: str, schema: str) -> AsyncIterator[Database]:
    database = Database(postgres, schema=schema, pool_size=2)
    await database.migrate("mloop_drift:migrations")
    yield database
    await database.dispose()


class Drift:
    def __init__(self, db: Database, root: Path) -> None:
        self.store = SqlStore(db, SqlDriftUnit, consumer="tests")
        self.artifacts = ArtifactStore(root)
        ticks = itertools.count()
        self.monitor = DriftMonitor(
            store=self.store,
            artifacts=self.artifacts,
            rules=WindowRules(min_labelled_rows=WINDOW, recent_rows=500),
            clock=lambda: START + timedelta(seconds=next(ticks)),
        )
        self.db = db

    async def promote(self, policy: dict[str, Any] | None = None, time_column: str | None = None) -> None:
        training = pd.DataFrame(rows(1000, 0.0, seed=0))
        profile = build_reference_profile(
            training, ["x1", "x2"], [truth(r) for r in training.to_dict("records")], task="classification"
        )
        ref = self.artifacts.put(profile.to_json(), kind="profiles", suffix=".json")
        pointer = ArtifactPointer(uri=ref.uri, sha256=ref.sha256)
        promoted = ModelPromoted(
            model=MODEL,
            version=1,
            reason="policy",
            task="classification",
            target="label",
            artifact=pointer,
            profile=pointer,
            features=["x1", "x2"],
            metrics={"accuracy": 0.95},
            drift_window=WINDOW,
            cooldown_windows=2,
            drift_policy=policy or {},
            metric="accuracy",
            time_column=time_column,
        )
        await self.monitor.on_model_promoted(promoted, new_event(promoted, source="tests", subject=MODEL))

    async def log(self, traffic: list[dict[str, Any]], request_ids: list[str] | None = None) -> list[str]:
        ids = request_ids or [uuid.uuid4().hex for _ in traffic]
        records = [
            PredictionRecord(
                request_id=ids[i],
                timestamp=START + timedelta(seconds=i),
                inputs=row,
                prediction=truth(row),
            )
            for i, row in enumerate(traffic)
        ]
        logged = PredictionsLogged(model=MODEL, version=1, records=records)
        await self.monitor.on_predictions_logged(logged, new_event(logged, source="tests", subject=MODEL))
        return [r.request_id for r in records]

    async def label(self, request_ids: list[str], labels: list[str]) -> None:
        records = [
            FeedbackRecord(request_id=r, label=label, timestamp=START + timedelta(hours=1))
            for r, label in zip(request_ids, labels, strict=True)
        ]
        feedback = FeedbackReceived(model=MODEL, records=records)
        await self.monitor.on_feedback_received(feedback, new_event(feedback, source="tests", subject=MODEL))

    async def alarms(self) -> list[dict[str, Any]]:
        async with self.db.transaction() as session:
            query = sa.select(outbox_table.c.value).where(outbox_table.c.topic == "drift.detected")
            return [json.loads(value) for (value,) in await session.execute(query.order_by(outbox_table.c.seq))]


async def test_late_labels_revise_a_judged_window_and_keep_its_history(db: Database, tmp_path: Path) -> None:
    drift = Drift(db, tmp_path)
    await drift.promote()
    traffic = rows(WINDOW, 1.5, seed=1)
    request_ids = await drift.log(traffic + rows(WINDOW // 2, 0.0, seed=2))  # a full window and half the next

    async with drift.store.transaction() as unit:
        [first] = await unit.reports(MODEL, 10)
        assert (first.window_index, first.revision, first.cause) == (1, 1, "covariate_shift")
        watched = await unit.monitored(MODEL, 1)
        assert watched is not None and (watched.next_window, watched.window_fill) == (2, WINDOW // 2)
        assert len(await unit.window_rows(MODEL, 1, 2, WINDOW)) == WINDOW // 2

    flipped = ["no" if truth(r) == "yes" else "yes" for r in traffic]
    await drift.label(request_ids[:WINDOW], [*flipped[:40], *[truth(r) for r in traffic[40:]]])

    async with drift.store.transaction() as unit:
        [latest] = await unit.reports(MODEL, 10)
        full = await unit.report(MODEL, latest.id)
    assert (latest.revision, latest.cause, latest.action, latest.basis) == (2, "performance_drop", "retrain", "actual")
    assert [(r.revision, r.cause) for r in full.revisions] == [(1, "covariate_shift"), (2, "performance_drop")]
    assert [a["action"] for a in await drift.alarms()] == ["investigate", "retrain"]

    await drift.label(request_ids[:WINDOW], [*flipped[:40], *[truth(r) for r in traffic[40:]]])  # same labels again

    async with drift.store.transaction() as unit:
        [again] = await unit.reports(MODEL, 10)
    assert again.id == latest.id and again.updated_at is not None
    assert len(await drift.alarms()) == 2


async def test_count_windows_place_earlier_predictions_first_and_count_a_redelivered_one_once(
    db: Database, tmp_path: Path
) -> None:
    drift = Drift(db, tmp_path)
    early = await drift.log(rows(60, 0.0, seed=6))  # before the version is watched: kept unplaced
    await drift.promote()
    again = early[:10]  # a replayed batch brings ten of them back
    await drift.log(rows(60, 0.0, seed=7), request_ids=[*again, *(uuid.uuid4().hex for _ in range(50))])

    async with drift.store.transaction() as unit:
        [report] = await unit.reports(MODEL, 10)
        first = await unit.window_rows(MODEL, 1, 1, WINDOW)
        watched = await unit.monitored(MODEL, 1)
    assert report.window_index == 1
    assert len(first) == WINDOW and set(early) <= {r.request_id for r in first}
    assert watched is not None and (watched.next_window, watched.window_fill) == (2, 10)


async def test_event_time_windows_on_postgres(db: Database, tmp_path: Path) -> None:
    drift = Drift(db, tmp_path)
    await drift.promote(policy={"window_time": "1h"}, time_column="ts")
    hour = START + timedelta(minutes=5)
    first = [{**r, "ts": (hour + timedelta(seconds=i)).isoformat()} for i, r in enumerate(rows(60, 0.0, seed=3))]
    await drift.log(first)
    await drift.log([{**r, "ts": (hour + timedelta(hours=1)).isoformat()} for r in rows(5, 0.0, seed=4)])
    await drift.log([{**r, "ts": (hour + timedelta(minutes=30)).isoformat()} for r in rows(60, 1.5, seed=5)])

    async with drift.store.transaction() as unit:
        [report] = await unit.reports(MODEL, 10)
        assert await unit.unjudged_windows(MODEL, 1, before=10**9) == [
            int((hour + timedelta(hours=1)).timestamp()) // 3600
        ]
    assert report.window_index == int(hour.timestamp()) // 3600
    assert (report.revision, report.cause) == (2, "covariate_shift")


async def test_watching_only_the_version_that_answers_on_postgres(db: Database, tmp_path: Path) -> None:
    drift = Drift(db, tmp_path)
    await drift.promote()

    async with drift.store.transaction() as unit:
        assert await unit.watch_only(MODEL, 1) is True
        assert await unit.watch_only(MODEL, 7) is False  # never promoted here: nothing changes
        watched = await unit.lock_monitored(MODEL, 1)
    assert watched is not None and not watched.retired
