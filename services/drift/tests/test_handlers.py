"""Drift's reactions to promotions, predictions and feedback, through fakes of its ports (no Kafka, no database)."""

from __future__ import annotations

import copy
import io
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop_common.artifacts import ArtifactStore
from mloop_common.errors import PermanentError
from mloop_common.events import (
    ArtifactPointer,
    DriftDetected,
    Envelope,
    FeedbackReceived,
    FeedbackRecord,
    ModelPromoted,
    Payload,
    PredictionRecord,
    PredictionsLogged,
    new_event,
)
from mloop_common.profile import ReferenceProfile, build_reference_profile
from mloop_common.testing import through_the_wire
from mloop_drift.detector import DriftConfig
from mloop_drift.entities import Report
from mloop_drift.handlers import DriftMonitor, WindowRules

from .fakes import MemoryDriftUnit, memory_store

MODEL = "churn"
FEATURES = ["x1", "x2"]
WINDOW = 100
START = datetime(2026, 1, 1, tzinfo=UTC)


def traffic(n: int, *, shift: float = 0.0, seed: int) -> list[dict[str, float]]:
    """Feature rows around the training distribution (shift 0) or clearly away from it (shift 1.5 sd)."""
    x = np.random.default_rng(seed).normal(shift, 1.0, size=(n, 2))
    return [{"x1": float(a), "x2": float(b)} for a, b in x]


def truth(row: dict[str, float]) -> str:
    return "yes" if row["x1"] + row["x2"] > 0 else "no"


@cache
def reference_profile() -> ReferenceProfile:
    training = pd.DataFrame(traffic(2000, seed=0))
    predictions = [truth(row) for row in training.to_dict("records")]
    return build_reference_profile(training, FEATURES, predictions, task="classification")


def wire(payload: Payload) -> tuple[Any, Envelope]:
    """The payload and envelope as the consumer sees them after Kafka."""
    event = through_the_wire(new_event(payload, source="tests", subject=MODEL))
    return event.decode(type(payload)), event


class Drift:
    """A drift monitor over fakes, plus the traffic a serving replica would send it."""

    def __init__(self, tmp_path: Path, *, min_labelled_rows: int = WINDOW) -> None:
        self.store = memory_store()
        self.artifacts = ArtifactStore(tmp_path)
        ticks = itertools.count()
        self.monitor = DriftMonitor(
            store=self.store,
            artifacts=self.artifacts,
            rules=WindowRules(
                min_label_share=0.5, label_wait_windows=2, min_labelled_rows=min_labelled_rows, recent_rows=500
            ),
            detector=DriftConfig(out_of_range_share=0.1),
            clock=lambda: START + timedelta(seconds=next(ticks)),
        )
        self._logged = itertools.count()

    def pointer(self, data: bytes, kind: str, suffix: str) -> ArtifactPointer:
        ref = self.artifacts.put(data, kind=kind, suffix=suffix)
        return ArtifactPointer(uri=ref.uri, sha256=ref.sha256)

    async def promote(self, version: int, *, cooldown_windows: int = 2, profile: bytes | None = None) -> Envelope:
        payload, event = wire(
            ModelPromoted(
                model=MODEL,
                version=version,
                previous_version=version - 1 or None,
                reason="policy",
                task="classification",
                target="label",
                artifact=self.pointer(f"model v{version}".encode(), "models", ".skops"),
                profile=self.pointer(profile or reference_profile().to_json(), "profiles", ".json"),
                features=FEATURES,
                metrics={"accuracy": 0.95},
                drift_window=WINDOW,
                cooldown_windows=cooldown_windows,
            )
        )
        await self.monitor.on_model_promoted(payload, event)
        return event

    async def log(self, version: int, rows: list[dict[str, float]]) -> tuple[list[str], Envelope]:
        """Log one prediction per row (the model is right on every row); returns the request ids and the event."""
        records = [
            PredictionRecord(
                request_id=uuid.uuid4().hex,
                timestamp=START + timedelta(seconds=next(self._logged)),
                inputs=row,
                prediction=truth(row),
            )
            for row in rows
        ]
        payload, event = wire(PredictionsLogged(model=MODEL, version=version, records=records))
        await self.monitor.on_predictions_logged(payload, event)
        return [r.request_id for r in records], event

    async def label(self, request_ids: list[str], rows: list[dict[str, float]]) -> Envelope:
        records = [
            FeedbackRecord(request_id=request_id, label=truth(row), timestamp=START + timedelta(days=1))
            for request_id, row in zip(request_ids, rows, strict=True)
        ]
        payload, event = wire(FeedbackReceived(model=MODEL, records=records))
        await self.monitor.on_feedback_received(payload, event)
        return event

    async def serve(self, version: int, rows: list[dict[str, float]]) -> Envelope:
        """Predictions, then their labels; returns the feedback event."""
        request_ids, _ = await self.log(version, rows)
        return await self.label(request_ids, rows)

    async def reports(self) -> list[Report]:
        """Full reports, oldest window first."""
        async with self.store.transaction() as unit:
            summaries = await unit.reports(MODEL, 500)
            return [await unit.report(MODEL, s.id) for s in reversed(summaries)]

    def unit(self) -> MemoryDriftUnit:
        """A look at the committed state, outside any transaction."""
        return MemoryDriftUnit(self.store.state, "tests")

    @property
    def alarms(self) -> list[DriftDetected]:
        return self.store.published_payloads(DriftDetected)


def drifted(seed: int) -> list[dict[str, float]]:
    return traffic(WINDOW, shift=1.5, seed=seed)


def calm(seed: int) -> list[dict[str, float]]:
    return traffic(WINDOW, seed=seed)


async def test_a_promotion_watches_the_new_version_and_retires_the_previous_one(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)

    await drift.promote(2)

    old, new = await drift.unit().lock_monitored(MODEL, 1), await drift.unit().lock_monitored(MODEL, 2)
    assert old is not None and old.retired is True
    assert new is not None and new.retired is False
    assert new.profile == reference_profile()
    assert (new.window_size, new.cooldown_windows, new.next_window) == (WINDOW, 2, 1)
    assert new.baseline == {"accuracy": 0.95} and new.target == "label"


async def test_a_drifted_window_is_judged_once_labelled_and_raises_a_retrain_alarm_with_recent_data(
    tmp_path: Path,
) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    request_ids, _ = await drift.log(1, rows)
    assert await drift.reports() == []  # a full window waits for its labels

    feedback = await drift.label(request_ids, rows)

    [report] = await drift.reports()
    assert (report.window_index, report.drift_detected, report.cause, report.action) == (
        1,
        True,
        "covariate_shift",
        "retrain",
    )
    assert report.emitted is True
    assert report.report["drifted_features"] == FEATURES
    [alarm] = drift.alarms
    assert alarm.report_id == report.id and alarm.version == 1
    assert (alarm.cause, alarm.action, alarm.drifted_features, alarm.window_size) == (
        "covariate_shift",
        "retrain",
        FEATURES,
        WINDOW,
    )
    assert set(alarm.evidence["features"]) == set(FEATURES)
    assert drift.store.published[0].causationid == feedback.id
    assert alarm.recent_data is not None and alarm.recent_rows == WINDOW
    recent = pd.read_parquet(io.BytesIO(drift.artifacts.get(alarm.recent_data.uri, alarm.recent_data.sha256)))
    assert list(recent.columns) == ["x1", "x2", "label"] and len(recent) == WINDOW
    assert recent["x1"].tolist() == [row["x1"] for row in rows]


async def test_a_calm_window_is_reported_without_an_alarm(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)

    await drift.serve(1, calm(seed=1))

    [report] = await drift.reports()
    assert (report.drift_detected, report.cause, report.action, report.emitted) == (False, None, None, False)
    assert report.summary.startswith("No drift: 0 of 2 features drifted")
    assert drift.store.published == []


async def test_the_cooldown_holds_the_alarms_of_the_next_windows(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1, cooldown_windows=2)

    for seed in (1, 2, 3):
        await drift.serve(1, drifted(seed))

    reports = await drift.reports()
    assert [r.window_index for r in reports] == [1, 2, 3]
    assert all(r.drift_detected and r.action == "retrain" for r in reports)
    assert [r.emitted for r in reports] == [True, False, False]
    assert [a.report_id for a in drift.alarms] == [reports[0].id]

    await drift.serve(1, drifted(seed=4))  # the cooldown is over

    assert [a.report_id for a in drift.alarms] == [reports[0].id, (await drift.reports())[3].id]


async def test_a_retrain_alarm_waits_for_enough_labelled_rows_without_spending_the_cooldown(tmp_path: Path) -> None:
    drift = Drift(tmp_path, min_labelled_rows=150)
    await drift.promote(1, cooldown_windows=2)

    await drift.serve(1, drifted(seed=1))
    await drift.serve(1, drifted(seed=2))

    first, second = await drift.reports()
    assert first.drift_detected and first.emitted is False
    assert first.summary.endswith("Waiting for labels before retraining: 100 of 150 labelled production rows so far.")
    assert second.emitted is True
    [alarm] = drift.alarms
    assert alarm.report_id == second.id and alarm.recent_rows == 2 * WINDOW


async def test_redelivered_predictions_change_nothing(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    request_ids, logged = await drift.log(1, rows)
    await drift.label(request_ids, rows)
    before = copy.deepcopy(drift.store.state)

    await drift.monitor.on_predictions_logged(logged.decode(PredictionsLogged), logged)

    assert drift.store.state == before
    assert len(await drift.reports()) == 1 and len(drift.alarms) == 1


async def test_a_redelivered_promotion_does_not_bring_back_a_retired_version(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    first = await drift.promote(1)
    await drift.promote(2)

    await drift.monitor.on_model_promoted(first.decode(ModelPromoted), first)

    old, new = await drift.unit().lock_monitored(MODEL, 1), await drift.unit().lock_monitored(MODEL, 2)
    assert old is not None and old.retired is True
    assert new is not None and new.retired is False


async def test_predictions_for_an_unknown_version_are_kept_and_judged_after_its_promotion(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.serve(1, drifted(seed=1))
    assert await drift.reports() == []
    assert await drift.unit().count_labelled(MODEL, 1) == WINDOW

    promoted = await drift.promote(1)

    [report] = await drift.reports()
    assert report.version == 1 and report.window_index == 1 and report.emitted is True
    assert drift.store.published[0].causationid == promoted.id


async def test_late_predictions_of_a_retired_version_are_kept_but_not_judged(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    await drift.promote(2)

    await drift.serve(1, drifted(seed=1))

    assert await drift.reports() == []
    assert await drift.unit().count_labelled(MODEL, 1) == WINDOW
    assert drift.store.published == []


async def test_shadow_predictions_are_not_watched(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    records = [
        PredictionRecord(request_id=uuid.uuid4().hex, timestamp=START, inputs=row, prediction="yes", route="shadow")
        for row in rows
    ]

    await drift.monitor.on_predictions_logged(*wire(PredictionsLogged(model=MODEL, version=1, records=records)))

    assert await drift.unit().open_versions(MODEL) == []


async def test_a_promotion_without_a_usable_reference_profile_fails_permanently(tmp_path: Path) -> None:
    drift = Drift(tmp_path)

    with pytest.raises(PermanentError, match="reference profile"):
        await drift.promote(1, profile=b'{"schema_version": 2, "rows": 1, "features": {}}')

    assert await drift.unit().lock_monitored(MODEL, 1) is None
    assert drift.store.state.inbox == set()
