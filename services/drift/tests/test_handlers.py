"""Drift's reactions to promotions, predictions and feedback, through fakes of its ports (no Kafka, no database)."""

from __future__ import annotations

import copy
import io
import itertools
import math
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
    ModelRejected,
    ModelServed,
    Payload,
    PredictionRecord,
    PredictionsLogged,
    new_event,
)
from mloop_common.profile import ReferenceProfile, build_reference_profile, evaluation_set
from mloop_common.testing import through_the_wire
from mloop_drift.entities import Report
from mloop_drift.handlers import DriftMonitor, WindowRules

from .fakes import MemoryDriftUnit, memory_store

MODEL = "churn"
FEATURES = ["x1", "x2"]
WINDOW = 100
START = datetime(2026, 1, 1, tzinfo=UTC)
STEEPNESS = 3.0  # the model's P(yes) is sigmoid(3 * (x1 + x2))


def traffic(n: int, *, shift: float = 0.0, seed: int) -> list[dict[str, float]]:
    """Feature rows around the training distribution (shift 0) or clearly away from it (shift 1.5 sd)."""
    x = np.random.default_rng(seed).normal(shift, 1.0, size=(n, 2))
    return [{"x1": float(a), "x2": float(b)} for a, b in x]


def undecided(n: int, seed: int) -> list[dict[str, float]]:
    """Rows off the training distribution where the model is unsure: x1 + x2 close to 0."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(1.5, 0.2, n)
    x2 = -x1 + rng.normal(0.0, 0.15, n)
    return [{"x1": float(a), "x2": float(b)} for a, b in zip(x1, x2, strict=True)]


def score(row: dict[str, Any]) -> float:
    """x1 + x2, a missing value counting as 0."""
    return sum(v for v in (row["x1"], row["x2"]) if isinstance(v, float) and not math.isnan(v))


def truth(row: dict[str, Any]) -> str:
    return "yes" if score(row) > 0 else "no"


def p_yes(row: dict[str, float]) -> float:
    return 1 / (1 + math.exp(-STEEPNESS * score(row)))


@cache
def reference_profile(with_evaluation: bool = False) -> ReferenceProfile:
    training = pd.DataFrame(traffic(2000, seed=0))
    rows = training.to_dict("records")
    profile = build_reference_profile(training, FEATURES, [truth(row) for row in rows], task="classification")
    if not with_evaluation:
        return profile
    # held-out rows of a calibrated model: labels drawn with the probability the model gives
    held_out = traffic(3000, seed=1)
    rng = np.random.default_rng(2)
    labels = ["yes" if rng.random() < p_yes(row) else "no" for row in held_out]
    proba = [[1 - p_yes(row), p_yes(row)] for row in held_out]
    return profile.model_copy(update={"evaluation": evaluation_set(["no", "yes"], labels, proba)})


def wire(payload: Payload) -> tuple[Any, Envelope]:
    """The payload and envelope as the consumer sees them after Kafka."""
    event = through_the_wire(new_event(payload, source="tests", subject=MODEL))
    return event.decode(type(payload)), event


class Drift:
    """A drift monitor over fakes, plus the traffic a serving replica would send it."""

    def __init__(
        self, tmp_path: Path, *, min_labelled_rows: int = WINDOW, retrain_timeout: timedelta = timedelta(hours=6)
    ) -> None:
        self.store = memory_store()
        self.artifacts = ArtifactStore(tmp_path)
        ticks = itertools.count()
        self.now = START  # tests move it forward; every reading of the clock adds a second
        self.monitor = DriftMonitor(
            store=self.store,
            artifacts=self.artifacts,
            rules=WindowRules(min_labelled_rows=min_labelled_rows, recent_rows=500, retrain_timeout=retrain_timeout),
            clock=lambda: self.now + timedelta(seconds=next(ticks)),
        )
        self._logged = itertools.count()
        self.label_seed = itertools.count(100)

    def pointer(self, data: bytes, kind: str, suffix: str) -> ArtifactPointer:
        ref = self.artifacts.put(data, kind=kind, suffix=suffix)
        return ArtifactPointer(uri=ref.uri, sha256=ref.sha256)

    async def promote(
        self,
        version: int,
        *,
        cooldown_windows: int = 2,
        profile: bytes | None = None,
        policy: dict[str, Any] | None = None,
        time_column: str | None = None,
    ) -> Envelope:
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
                drift_policy=policy or {},
                metric="accuracy",
                time_column=time_column,
            )
        )
        await self.monitor.on_model_promoted(payload, event)
        return event

    async def reject_candidate(self, *, champion: int) -> None:
        """The validator rejected a retrained candidate in favour of version ``champion``."""
        rejected = ModelRejected(
            model=MODEL,
            run_id=uuid.uuid4().hex,
            evaluation_id=uuid.uuid4().hex,
            reasons=["not better"],
            candidate_metrics={"accuracy": 0.5},
            champion_version=champion,
        )
        await self.monitor.on_model_rejected(*wire(rejected))

    async def log(
        self,
        version: int,
        rows: list[dict[str, Any]],
        *,
        probabilities: bool = False,
        at: list[datetime] | None = None,
    ) -> tuple[list[str], Envelope]:
        """Log one prediction per row (the model predicts `truth`); returns the request ids and the event."""
        records = [
            PredictionRecord(
                request_id=uuid.uuid4().hex,
                timestamp=at[i] if at else START + timedelta(seconds=next(self._logged)),
                inputs=row,
                prediction=truth(row),
                probabilities=[1 - p_yes(row), p_yes(row)] if probabilities else None,
            )
            for i, row in enumerate(rows)
        ]
        payload, event = wire(PredictionsLogged(model=MODEL, version=version, records=records))
        await self.monitor.on_predictions_logged(payload, event)
        return [r.request_id for r in records], event

    async def label(
        self, request_ids: list[str], rows: list[dict[str, Any]], *, wrong: float = 0.0, drawn: bool = False
    ) -> Envelope:
        """Feedback for the rows: the truth, flipped on a share ``wrong`` of them, or drawn with P(yes)."""
        rng = np.random.default_rng(next(self.label_seed))
        labels = []
        for row in rows:
            if drawn:
                labels.append("yes" if rng.random() < p_yes(row) else "no")
            else:
                right = truth(row)
                labels.append(right if rng.random() >= wrong else ("no" if right == "yes" else "yes"))
        records = [
            FeedbackRecord(request_id=request_id, label=label, timestamp=START + timedelta(days=1))
            for request_id, label in zip(request_ids, labels, strict=True)
        ]
        payload, event = wire(FeedbackReceived(model=MODEL, records=records))
        await self.monitor.on_feedback_received(payload, event)
        return event

    async def serve(self, version: int, rows: list[dict[str, Any]], *, wrong: float = 0.0) -> Envelope:
        """Predictions, then their labels; returns the feedback event."""
        request_ids, _ = await self.log(version, rows)
        return await self.label(request_ids, rows, wrong=wrong)

    async def reports(self) -> list[Report]:
        """Full reports at their latest revision, oldest window first."""
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

    await drift.promote(2, policy={"window": WINDOW, "min_label_coverage": 0.8, "a_future_option": 1})

    old, new = await drift.unit().lock_monitored(MODEL, 1), await drift.unit().lock_monitored(MODEL, 2)
    assert old is not None and old.retired is True
    assert new is not None and new.retired is False
    assert new.profile == reference_profile()
    assert (new.window_size, new.cooldown_windows, new.next_window) == (WINDOW, 2, 1)
    assert new.baseline == {"accuracy": 0.95} and new.target == "label" and new.metric == "accuracy"
    assert new.policy.min_label_coverage == 0.8  # options this drift does not know are ignored


async def test_a_full_window_is_judged_at_once_without_waiting_for_labels(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)

    await drift.log(1, calm(seed=1))

    [report] = await drift.reports()
    assert (report.window_index, report.revision, report.drift_detected, report.basis) == (1, 1, False, None)
    assert report.report["performance"]["n_labelled"] == 0
    assert report.summary.startswith("No drift: 0 of 2 features drifted")
    assert drift.store.published == []


async def test_late_labels_revise_a_covariate_shift_into_a_retrain_with_recent_data(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    request_ids, _ = await drift.log(1, rows)
    [first] = await drift.reports()
    assert (first.cause, first.action, first.emitted) == ("covariate_shift", "investigate", True)
    [alert] = drift.alarms
    assert alert.action == "investigate" and alert.recent_data is None

    feedback = await drift.label(request_ids, rows, wrong=0.4)

    [latest] = await drift.reports()
    assert (latest.window_index, latest.revision) == (1, 2)
    assert (latest.cause, latest.action, latest.emitted, latest.basis) == (
        "performance_drop",
        "retrain",
        True,
        "actual",
    )
    assert latest.label_coverage == 1.0
    assert [(r.revision, r.cause) for r in latest.revisions] == [(1, "covariate_shift"), (2, "performance_drop")]
    _, alarm = drift.alarms
    assert (alarm.report_id, alarm.cause, alarm.action, alarm.window_size) == (
        latest.id,
        "performance_drop",
        "retrain",
        WINDOW,
    )
    assert alarm.evidence["revision"] == 2 and set(alarm.evidence["features"]) == set(FEATURES)
    assert drift.store.published[-1].causationid == feedback.id
    assert alarm.recent_data is not None and alarm.recent_rows == WINDOW
    recent = pd.read_parquet(io.BytesIO(drift.artifacts.get(alarm.recent_data.uri, alarm.recent_data.sha256)))
    assert list(recent.columns) == ["x1", "x2", "label"] and len(recent) == WINDOW
    assert recent["x1"].tolist() == [row["x1"] for row in rows]


async def test_more_labels_on_the_same_footing_refresh_the_latest_revision(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = calm(seed=1)
    request_ids, _ = await drift.log(1, rows)
    await drift.label(request_ids[:60], rows[:60])
    [second] = await drift.reports()
    assert (second.revision, second.basis, second.report["performance"]["n_labelled"]) == (2, "actual", 60)

    await drift.label(request_ids[60:], rows[60:])

    [refreshed] = await drift.reports()
    assert refreshed.id == second.id and refreshed.revision == 2
    assert refreshed.report["performance"]["n_labelled"] == 100 and refreshed.label_coverage == 1.0
    assert refreshed.updated_at is not None
    assert drift.store.published == []


async def test_labels_below_the_coverage_leave_performance_unjudged(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1, policy={"min_label_coverage": 0.5})
    rows = calm(seed=1)
    request_ids, _ = await drift.log(1, rows)

    await drift.label(request_ids[:40], rows[:40], wrong=1.0)

    [report] = await drift.reports()
    performance = report.report["performance"]
    assert (report.revision, report.basis, report.cause) == (1, None, None)
    assert performance["metrics"]["accuracy"] == 0.0 and performance["coverage"] == 0.4
    assert performance["label_delay_seconds"]["median"] > 0


async def test_an_estimated_drop_asks_for_retraining_once_labels_exist_to_retrain_on(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1, profile=reference_profile(with_evaluation=True).to_json())
    rows = undecided(WINDOW, seed=3)

    request_ids, _ = await drift.log(1, rows, probabilities=True)

    [estimated] = await drift.reports()
    performance = estimated.report["performance"]
    assert (estimated.cause, estimated.action, estimated.basis) == ("performance_drop", "retrain", "estimated")
    assert performance["estimated"]["accuracy"]["value"] < 0.8 and performance["n_labelled"] == 0
    assert (estimated.emitted, estimated.held_for) == (False, "labels")
    assert drift.alarms == []

    await drift.label(request_ids, rows, drawn=True)

    [measured] = await drift.reports()
    assert (measured.revision, measured.basis, measured.action, measured.emitted) == (2, "actual", "retrain", True)
    shown = measured.report["performance"]
    assert shown["metrics"]["accuracy"] == pytest.approx(shown["estimated"]["accuracy"]["value"], abs=0.15)
    [alarm] = drift.alarms
    assert alarm.action == "retrain" and alarm.recent_rows == WINDOW


async def test_the_cooldown_holds_the_alarms_of_the_next_windows(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1, cooldown_windows=2)

    for seed in (1, 2, 3):
        await drift.serve(1, drifted(seed), wrong=0.4)

    reports = await drift.reports()
    assert [r.window_index for r in reports] == [1, 2, 3]
    assert all(r.action == "retrain" for r in reports)
    assert [(r.emitted, r.held_for) for r in reports] == [(True, None), (False, "cooldown"), (False, "cooldown")]
    retrains = [a for a in drift.alarms if a.action == "retrain"]
    assert [a.report_id for a in retrains] == [reports[0].id]

    await drift.reject_candidate(champion=1)  # the first retrain is decided: its candidate was no better
    await drift.serve(1, drifted(seed=4), wrong=0.4)  # the cooldown is over, but the drop never cleared

    fourth = (await drift.reports())[3]
    assert (fourth.action, fourth.emitted, fourth.held_for) == ("retrain", False, "hysteresis")
    assert "(hysteresis)" in fourth.summary
    await drift.serve(1, calm(seed=5))  # accuracy back near the baseline, features back: every latch released
    await drift.serve(1, drifted(seed=6), wrong=0.4)

    retrains = [a for a in drift.alarms if a.action == "retrain"]
    assert [a.report_id for a in retrains] == [reports[0].id, (await drift.reports())[5].id]


async def test_hysteresis_holds_a_retrain_until_performance_clears_even_with_no_cooldown(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1, cooldown_windows=0)  # baseline accuracy 0.95, tolerance 0.05: clear above 0.91

    async def window(seed: int, wrong: int) -> None:
        """A window the model gets exactly ``wrong`` of 100 rows wrong on."""
        rows = undecided(WINDOW, seed=seed)
        request_ids, _ = await drift.log(1, rows)
        records = [
            FeedbackRecord(
                request_id=r,
                label=("no" if truth(row) == "yes" else "yes") if i < wrong else truth(row),
                timestamp=START,
            )
            for i, (r, row) in enumerate(zip(request_ids, rows, strict=True))
        ]
        await drift.monitor.on_feedback_received(*wire(FeedbackReceived(model=MODEL, records=records)))

    await window(1, wrong=40)
    await drift.reject_candidate(champion=1)  # decided: the next retrain is held by hysteresis alone
    await window(2, wrong=30)
    await window(3, wrong=10)  # accuracy 0.90: within the tolerance, but not below the clear level
    await window(4, wrong=40)
    await window(5, wrong=2)  # accuracy 0.98: the performance signal clears
    await window(6, wrong=40)

    reports = await drift.reports()
    # Windows 3 and 5 hold their accuracy: covariate shift alerts (the features drifted all along).
    assert [(r.window_index, r.emitted, r.held_for) for r in reports if r.action == "retrain"] == [
        (1, True, None),
        (2, False, "hysteresis"),
        (4, False, "hysteresis"),
        (6, True, None),
    ]
    assert [a.report_id for a in drift.alarms if a.action == "retrain"] == [reports[0].id, reports[5].id]


async def test_labels_past_the_label_horizon_do_not_revise_a_closed_window(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    request_ids, _ = await drift.log(1, rows)
    [judged] = await drift.reports()

    drift.now += timedelta(days=15)  # the default horizon is 14 days since the window's last judgement
    await drift.label(request_ids, rows, wrong=0.4)

    [still] = await drift.reports()
    assert (still.id, still.revision, still.updated_at) == (judged.id, 1, None)
    assert [a for a in drift.alarms if a.action == "retrain"] == []


async def test_one_retrain_in_flight_at_a_time_until_it_is_decided_or_times_out(tmp_path: Path) -> None:
    drift = Drift(tmp_path, retrain_timeout=timedelta(hours=1))
    await drift.promote(1, cooldown_windows=0)

    await drift.serve(1, drifted(seed=1), wrong=0.4)
    await drift.serve(1, drifted(seed=2), wrong=0.4)

    first, second = await drift.reports()
    assert (first.emitted, second.emitted, second.held_for) == (True, False, "retrain_in_flight")
    assert second.summary.endswith("A retrain asked for earlier is not decided yet: no second one meanwhile.")
    await drift.reject_candidate(champion=2)  # another version's candidate decides nothing here
    await drift.serve(1, drifted(seed=3), wrong=0.4)
    assert [r.held_for for r in await drift.reports()][-1] == "retrain_in_flight"

    drift.now += timedelta(hours=2)  # the run that was asked for failed and said nothing: the timeout ends it
    await drift.serve(1, drifted(seed=4), wrong=0.4)

    assert [r.emitted for r in await drift.reports()] == [True, False, False, True]
    assert len([a for a in drift.alarms if a.action == "retrain"]) == 2


async def test_a_retrain_alarm_waits_for_enough_labelled_rows_without_spending_the_cooldown(tmp_path: Path) -> None:
    drift = Drift(tmp_path, min_labelled_rows=150)
    await drift.promote(1, cooldown_windows=2)

    await drift.serve(1, drifted(seed=1), wrong=0.4)
    first = (await drift.reports())[0]
    assert (first.action, first.emitted, first.held_for) == ("retrain", False, "labels")
    assert first.summary.endswith("Waiting for labels before retraining: at least 150 labelled rows.")

    await drift.serve(1, drifted(seed=2), wrong=0.4)

    first, second = await drift.reports()
    assert second.emitted is True and first.emitted is False
    [alarm] = [a for a in drift.alarms if a.action == "retrain"]
    assert alarm.report_id == second.id and alarm.recent_rows == 2 * WINDOW


async def test_a_data_quality_problem_quarantines_the_window_even_when_performance_drops(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = [{**row, "x2": None} for row in drifted(seed=1)]

    await drift.serve(1, rows, wrong=0.4)

    [report] = await drift.reports()
    assert (report.cause, report.action) == ("data_quality", "investigate")
    assert report.report["quarantined"] is True and report.report["performance"]["degraded"] is True
    assert "retraining is blocked" in report.summary
    assert [a.action for a in drift.alarms] == ["investigate"]


async def test_labels_of_mixed_types_are_compared_as_categories(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = calm(seed=1)
    request_ids, _ = await drift.log(1, rows)
    records = [
        FeedbackRecord(request_id=r, label=1 if truth(row) == "yes" else 0, timestamp=START)
        for r, row in zip(request_ids, rows, strict=True)
    ]

    await drift.monitor.on_feedback_received(*wire(FeedbackReceived(model=MODEL, records=records)))

    [report] = await drift.reports()  # "yes"/"no" predictions against 1/0 labels: all wrong, but judged
    assert report.report["performance"]["metrics"]["accuracy"] == 0.0 and report.cause == "concept_drift"


async def test_a_window_of_missing_values_gets_a_clear_report(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)

    await drift.log(1, [{"x1": None, "x2": float("nan")} for _ in range(WINDOW)])

    [report] = await drift.reports()
    assert report.cause == "data_quality"
    assert {i["check"] for i in report.report["data_quality_issues"]} == {"unexpected_nulls"}


async def test_event_time_windows_judge_a_day_when_the_next_begins_and_revise_it_for_late_records(
    tmp_path: Path,
) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1, policy={"window_time": "1d"}, time_column="ts")
    day = START + timedelta(hours=1)
    first_day = calm(seed=1)
    stamped = [{**row, "ts": (day + timedelta(minutes=i)).isoformat()} for i, row in enumerate(first_day)]
    await drift.log(1, stamped)
    assert await drift.reports() == []  # the day is not over

    next_day = [{**row, "ts": (day + timedelta(days=1)).isoformat()} for row in calm(seed=2)[:10]]
    await drift.log(1, next_day)

    [report] = await drift.reports()
    assert report.window_index == int(START.timestamp() // 86_400) and report.report["n_rows"] == WINDOW

    late = [{**row, "ts": (day + timedelta(hours=5)).isoformat()} for row in drifted(seed=3)]
    await drift.log(1, late)  # logged now, but they happened on the first day

    [revised] = await drift.reports()
    assert (revised.window_index, revised.revision) == (report.window_index, 2)
    assert revised.report["n_rows"] == 2 * WINDOW and revised.cause == "covariate_shift"


async def test_redelivered_predictions_change_nothing(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    request_ids, logged = await drift.log(1, rows)
    await drift.label(request_ids, rows, wrong=0.4)
    before = copy.deepcopy(drift.store.state)

    await drift.monitor.on_predictions_logged(logged.decode(PredictionsLogged), logged)

    assert drift.store.state == before


async def test_redelivered_feedback_changes_nothing(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    rows = drifted(seed=1)
    request_ids, _ = await drift.log(1, rows)
    feedback = await drift.label(request_ids, rows, wrong=0.4)
    before = copy.deepcopy(drift.store.state)

    await drift.monitor.on_feedback_received(feedback.decode(FeedbackReceived), feedback)

    assert drift.store.state == before


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
    await drift.serve(1, drifted(seed=1), wrong=0.4)
    assert await drift.reports() == []
    assert await drift.unit().count_labelled(MODEL, 1) == WINDOW

    promoted = await drift.promote(1)

    [report] = await drift.reports()
    assert report.version == 1 and report.window_index == 1 and report.emitted is True
    assert report.action == "retrain"
    assert drift.store.published[0].causationid == promoted.id


async def test_late_predictions_of_a_retired_version_are_kept_but_not_judged(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    await drift.promote(2)

    await drift.serve(1, drifted(seed=1))

    assert await drift.reports() == []
    assert await drift.unit().count_labelled(MODEL, 1) == WINDOW
    assert drift.store.published == []


async def test_a_version_serving_failed_to_load_leaves_the_one_that_still_answers_watched(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    await drift.promote(2)
    failed = ModelServed(model=MODEL, alias="production", version=2, instance="s-1", loaded=False, error="boom")
    await drift.monitor.on_model_served(*wire(failed.model_copy(update={"serving_version": 1})))

    await drift.serve(1, drifted(seed=1))

    assert [(r.version, r.window_index) for r in await drift.reports()] == [(1, 1)]
    old, new = await drift.unit().lock_monitored(MODEL, 1), await drift.unit().lock_monitored(MODEL, 2)
    assert old is not None and not old.retired and new is not None and new.retired
    # Once a serving instance loads v2 after all, v2 is the one watched again.
    loaded = ModelServed(model=MODEL, alias="production", version=2, instance="s-1", loaded=True, serving_version=2)
    await drift.monitor.on_model_served(*wire(loaded))
    old, new = await drift.unit().lock_monitored(MODEL, 1), await drift.unit().lock_monitored(MODEL, 2)
    assert old is not None and old.retired and new is not None and not new.retired


async def test_load_reports_of_other_aliases_change_nothing(tmp_path: Path) -> None:
    drift = Drift(tmp_path)
    await drift.promote(1)
    canary = ModelServed(model=MODEL, alias="canary", version=1, instance="s-1", loaded=False, serving_version=None)

    await drift.monitor.on_model_served(*wire(canary))

    watched = await drift.unit().lock_monitored(MODEL, 1)
    assert watched is not None and not watched.retired


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


async def test_a_promotion_with_an_invalid_drift_policy_fails_permanently(tmp_path: Path) -> None:
    drift = Drift(tmp_path)

    with pytest.raises(PermanentError, match="invalid drift policy"):
        await drift.promote(1, policy={"window": 10_000_000})

    assert await drift.unit().lock_monitored(MODEL, 1) is None
