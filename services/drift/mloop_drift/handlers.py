"""Drift reactions: watch promoted versions, collect predictions and labels, judge windows and revise verdicts.

A window is judged as soon as it is complete: by count (`drift.window` predictions) or, with
`drift.window_time`, once traffic of a later event-time window arrives. Labels that arrive later
re-decide the windows they belong to (a changed verdict is a new report revision and may raise the
alarm), and so do late predictions of an event-time window already judged.
"""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from prometheus_client import Counter
from pydantic import ValidationError

from mloop_common.artifacts import Artifacts
from mloop_common.contracts import PRODUCTION
from mloop_common.errors import PermanentError
from mloop_common.events import (
    ArtifactPointer,
    DriftDetected,
    Envelope,
    FeedbackReceived,
    ModelPromoted,
    ModelRejected,
    ModelServed,
    PredictionsLogged,
    new_event,
)
from mloop_common.profile import ReferenceProfile
from mloop_common.spec import MAX_DRIFT_WINDOW, duration_seconds
from mloop_common.uow import Store
from mloop_drift.cooldown import CooldownPolicy, CooldownState
from mloop_drift.detector import Action, DriftConfig, DriftReport, evaluate
from mloop_drift.entities import Label, MonitoredVersion, Observation, Prediction, Report
from mloop_drift.hysteresis import Hysteresis, alarm_signals, readings, retrain_armed
from mloop_drift.performance import Calibration
from mloop_drift.retention import window_closed
from mloop_drift.store import DriftUnit, known_policy
from mloop_drift.window import Window, event_time, place_by_count, time_window

SOURCE = "mloop/drift"
log = logging.getLogger(__name__)
DETECTED = Counter(
    "mloop_drift_detected_total", "drift.detected alarms raised, by cause and action", ["model", "cause", "action"]
)

HELD_FOR_COOLDOWN = "cooldown"
HELD_FOR_LABELS = "labels"
HELD_FOR_RETRAIN = "retrain_in_flight"
HELD_FOR_HYSTERESIS = "hysteresis"


@dataclass(frozen=True)
class WindowRules:
    """How much labelled evidence a retrain recommendation needs, and what it carries."""

    # A retrain recommendation needs at least this many labelled production rows of the version.
    min_labelled_rows: int
    # How many of the newest labelled rows a retrain recommendation carries.
    recent_rows: int
    # An event-time window is judged on at most this many of its newest rows.
    max_window_rows: int = MAX_DRIFT_WINDOW
    # A retrain asked for and not decided (no newer version promoted, no rejection) blocks the next one
    # this long at most: a failed training run announces nothing.
    retrain_timeout: timedelta = timedelta(hours=6)
    # A signal that raised a retrain alarm raises none again until a later window has it below this
    # share of its alarm threshold (hysteresis).
    clear_fraction: float = 0.8
    # A judged window is revised by labels and late predictions until this long has passed since its
    # last judgement; after that it is closed (and its rows may be purged, mloop_drift.retention).
    label_horizon: timedelta = timedelta(days=14)


class DriftMonitor:
    """Judges the windows of each monitored version; its ports are passed in by the composition root (or a test)."""

    def __init__(
        self,
        *,
        store: Store[DriftUnit],
        artifacts: Artifacts,
        rules: WindowRules,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.rules = rules
        self.clock = clock
        self.hysteresis = Hysteresis(rules.clear_fraction)
        # Calibration maps fitted once per version (the profile never changes); a small bounded cache.
        self._calibrations: dict[tuple[str, int], Calibration | None] = {}

    async def on_model_promoted(self, promoted: ModelPromoted, event: Envelope) -> None:
        profile = await self._profile(promoted)
        try:
            policy = known_policy(
                {
                    "window": promoted.drift_window,
                    "cooldown_windows": promoted.cooldown_windows,
                    **promoted.drift_policy,
                }
            )
        except ValidationError as exc:
            raise PermanentError(f"{promoted.model} v{promoted.version} has an invalid drift policy: {exc}") from exc
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            await unit.add_monitored(
                MonitoredVersion(
                    model=promoted.model,
                    version=promoted.version,
                    task=promoted.task,
                    target=promoted.target,
                    features=promoted.features,
                    profile=profile,
                    baseline=promoted.metrics,
                    window_size=policy.window,
                    cooldown_windows=policy.cooldown_windows,
                    policy=policy,
                    metric=promoted.metric,
                    time_column=promoted.time_column,
                    promoted_at=self.clock(),
                )
            )
            monitored = await unit.lock_monitored(promoted.model, promoted.version)
            if monitored is not None and monitored.policy.window_time is not None:
                # Predictions that raced ahead of the promotion wait unplaced: place them by event time now.
                await self._place_open(unit, monitored)
            await self._judge_complete_windows(unit, promoted.model, promoted.version, event)

    async def on_model_served(self, served: ModelServed, event: Envelope) -> None:
        """Serving's word on loading a production version: watch the version that really answers.

        A failed load leaves the previous version answering: its windows are judged again, the new one's
        are not (it gets no predictions). The latest report wins, so with several serving replicas that
        disagree, drift follows the last one that spoke.
        """
        if served.alias != PRODUCTION:
            return
        answering = served.version if served.loaded else served.serving_version
        async with self.store.transaction() as unit:
            if not await unit.claim(event) or answering is None:
                return
            if await unit.watch_only(served.model, answering) and not served.loaded:
                log.warning(
                    "%s v%s could not be loaded by %s (%s): judging v%s, which still answers",
                    served.model,
                    served.version,
                    served.instance,
                    served.error,
                    answering,
                )

    async def on_model_rejected(self, rejected: ModelRejected, event: Envelope) -> None:
        """A candidate lost to the version in production: the retrain that version asked for is decided."""
        if rejected.champion_version is None:
            return
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            champion = await unit.lock_monitored(rejected.model, rejected.champion_version)
            if champion is not None and champion.retrain_requested_at is not None:
                await unit.mark_retrain(rejected.model, rejected.champion_version, None)

    async def on_predictions_logged(self, logged: PredictionsLogged, event: Envelope) -> None:
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            monitored = await unit.lock_monitored(logged.model, logged.version)
            time_column = monitored.time_column if monitored is not None else None
            # The records were validated with the event; building each again through pydantic would cost as much.
            predictions = [
                Prediction.model_construct(
                    request_id=r.request_id,
                    logged_at=r.timestamp,
                    inputs=r.inputs,
                    prediction=r.prediction,
                    probabilities=r.probabilities,
                    event_time=event_time(r.inputs, time_column, r.timestamp),
                )
                for r in logged.records
                if r.route != "shadow"
            ]
            if monitored is None or monitored.retired:
                await unit.record_predictions(logged.model, logged.version, predictions)
                return  # kept; judged once (if ever) the version is promoted
            if monitored.policy.window_time is None:
                await self._fill_count_windows(unit, monitored, event, predictions)
                return
            await unit.record_predictions(logged.model, logged.version, predictions)
            late = await self._place_open(unit, monitored)
            # Placing by event time moved the version's window counter: its row is read again.
            await self._judge_complete_windows(unit, logged.model, logged.version, event)
            for index in sorted(late):
                await self._rejudge(unit, logged.model, logged.version, index, event)

    async def on_feedback_received(self, feedback: FeedbackReceived, event: Envelope) -> None:
        labels = [Label(request_id=r.request_id, label=r.label, labelled_at=r.timestamp) for r in feedback.records]
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            await unit.record_labels(feedback.model, labels)
            for version in await unit.open_versions(feedback.model):
                await self._judge_complete_windows(unit, feedback.model, version, event)
            # Windows judged before these labels came: re-decide them with their performance measured.
            for version, index in await unit.windows_of(feedback.model, [label.request_id for label in labels]):
                await self._rejudge(unit, feedback.model, version, index, event)

    async def _profile(self, promoted: ModelPromoted) -> ReferenceProfile:
        # Off the event loop: a network store (S3) may take seconds, and the consumer's heartbeat must not wait.
        data = await asyncio.to_thread(self.artifacts.get, promoted.profile.uri, promoted.profile.sha256)
        try:
            return ReferenceProfile.from_json(data)
        except ValidationError as exc:
            raise PermanentError(
                f"{promoted.model} v{promoted.version} has an unreadable reference profile: {exc}"
            ) from exc

    async def _place_open(self, unit: DriftUnit, monitored: MonitoredVersion) -> set[int]:
        """Put a version's unplaced predictions in their event-time windows; returns the judged windows they reopen."""
        assert monitored.policy.window_time is not None
        seconds = duration_seconds(monitored.policy.window_time)
        rows = await unit.open_rows(monitored.model, monitored.version)
        placed = {r.request_id: time_window(r.event_time or r.logged_at or self.clock(), seconds) for r in rows}
        if not placed:
            return set()
        await unit.place_in_windows(monitored.model, monitored.version, placed)
        newest = max(placed.values())
        if newest + 1 > monitored.next_window:
            # next_window is the event-time watermark: windows before it are complete.
            await unit.advance(monitored.model, monitored.version, next_window=newest + 1, cooldown=monitored.cooldown)
        return {index for index in placed.values() if index < monitored.next_window}

    async def _fill_count_windows(
        self, unit: DriftUnit, monitored: MonitoredVersion, cause: Envelope, arriving: list[Prediction] | None = None
    ) -> None:
        """Place a watched version's predictions in its count windows as they are recorded, and judge each window
        they complete. Predictions kept unplaced (before the version was watched, or while it was retired) go
        first, oldest first; then ``arriving``, in their order, each request id once."""
        model, version = monitored.model, monitored.version
        backlog = await unit.open_rows(model, version)
        fresh: list[Prediction] = []
        if arriving:
            seen = await unit.already_logged([p.request_id for p in arriving])
            for p in arriving:
                if p.request_id not in seen:
                    seen.add(p.request_id)
                    fresh.append(p)
        placement = place_by_count(
            monitored.next_window, monitored.window_fill, monitored.window_size, len(backlog) + len(fresh)
        )
        if backlog:
            await unit.place_in_windows(
                model, version, {row.request_id: index for row, index in zip(backlog, placement.indexes, strict=False)}
            )
        if arriving:
            placed = placement.indexes[len(backlog) :]
            for p, index in zip(fresh, placed, strict=True):
                p.window_index = index
            await unit.record_predictions(model, version, fresh)
        for index in placement.complete:
            monitored = await self._judge_window(unit, monitored, index, cause)
        if placement.indexes:
            await unit.advance(
                model,
                version,
                next_window=placement.next_window,
                cooldown=monitored.cooldown,
                window_fill=placement.filled,
            )

    async def _judge_complete_windows(self, unit: DriftUnit, model: str, version: int, cause: Envelope) -> None:
        """Judge every complete window of (model, version) not judged yet."""
        monitored = await unit.lock_monitored(model, version)
        if monitored is None:
            return  # predictions raced ahead of the promotion; judged once it arrives
        if monitored.retired:
            return  # a newer version is in production: late predictions of this one are kept, not judged
        if monitored.policy.window_time is not None:
            # The window of the newest event is still filling; every earlier one is complete.
            newest = monitored.next_window - 1
            for index in await unit.unjudged_windows(model, version, before=newest):
                monitored = await self._judge_window(unit, monitored, index, cause)
            return
        await self._fill_count_windows(unit, monitored, cause)

    async def _rejudge(self, unit: DriftUnit, model: str, version: int, index: int, cause: Envelope) -> None:
        """Re-decide a judged window of a watched version after new labels or late rows arrived."""
        monitored = await unit.lock_monitored(model, version)
        if monitored is None or monitored.retired:
            return
        latest = await unit.latest_report(model, version, index)
        if latest is None:
            return  # not judged yet: it will be once complete
        if window_closed(latest, self.clock(), self.rules.label_horizon):
            # Past the label horizon its rows may be purged already: a verdict on what is left would mislead.
            log.info("%s v%s window %d is closed (label horizon): not revised", model, version, index)
            return
        await self._judge_window(unit, monitored, index, cause)

    async def _judge_window(
        self,
        unit: DriftUnit,
        monitored: MonitoredVersion,
        index: int,
        cause: Envelope,
    ) -> MonitoredVersion:
        """Decide one window (again), keep the verdict as a report revision, and raise the alarm it calls for."""
        model, version = monitored.model, monitored.version
        rows = await unit.window_rows(model, version, index, self.rules.max_window_rows)
        if not rows:
            return monitored
        verdict = await self._evaluate(monitored, index, rows)
        previous = await unit.latest_report(model, version, index)
        stored = monitored.cooldown
        # Every judgement may release signals latched by an earlier retrain alarm (hysteresis).
        latched = self.hysteresis.observe(stored.latched, index, readings(verdict))
        if latched != stored.latched:
            monitored = monitored.model_copy(update={"cooldown": replace(stored, latched=latched)})
        basis = verdict.performance.basis
        action = verdict.recommended_action
        if previous is not None and (previous.cause, previous.action, previous.basis) == (verdict.cause, action, basis):
            # Same verdict on the same footing: refresh its evidence; only an alarm held for labels is retried.
            sent, held, cooldown = False, previous.held_for, monitored.cooldown
            if previous.held_for == HELD_FOR_LABELS:
                sent, held, cooldown = await self._alarm(unit, monitored, index, verdict)
            fields = self._report_fields(verdict, previous.emitted or sent, held)
            report = previous.model_copy(update={**fields, "updated_at": self.clock()})
            await unit.update_report(report)
        else:
            sent, held, cooldown = await self._alarm(unit, monitored, index, verdict)
            report = Report(
                id=uuid.uuid4().hex,
                model=model,
                version=version,
                window_index=index,
                revision=1 if previous is None else previous.revision + 1,
                created_at=self.clock(),
                **self._report_fields(verdict, sent, held),
            )
            await unit.add_report(report)
        if sent and action == "retrain":
            cooldown = replace(cooldown, latched=self.hysteresis.latch(cooldown.latched, index, alarm_signals(verdict)))
        if cooldown != stored:
            await unit.advance(model, version, next_window=monitored.next_window, cooldown=cooldown)
            monitored = monitored.model_copy(update={"cooldown": cooldown})
        log.info(
            "%s v%s window %d revision %d: %s%s",
            model,
            version,
            index,
            report.revision,
            report.summary,
            " -> drift.detected" if sent else "",
        )
        if sent and action is not None:
            recent: ArtifactPointer | None = None
            recent_rows = 0
            if action == "retrain":
                recent, recent_rows = await self._snapshot_recent(unit, model, monitored.target)
                await unit.mark_retrain(model, version, self.clock())
                monitored = monitored.model_copy(update={"retrain_requested_at": self.clock()})
            detected = _drift_detected(report, verdict, action, len(rows), recent, recent_rows)
            await unit.stage(new_event(detected, source=SOURCE, subject=model, cause=cause))
            DETECTED.labels(model=model, cause=report.cause or "none", action=action).inc()
        return monitored

    async def _evaluate(self, monitored: MonitoredVersion, index: int, rows: list[Observation]) -> DriftReport:
        model, version = monitored.model, monitored.version
        kinds = {name: entry.kind for name, entry in monitored.profile.features.items()}
        config = DriftConfig.from_policy(monitored.policy, monitored.metric, monitored.profile.contract)
        try:
            window = Window.from_rows(
                kinds,
                [r.inputs or {} for r in rows],
                [r.prediction for r in rows],
                [r.label for r in rows],
                [r.probabilities for r in rows] if monitored.task == "classification" else None,
                [_delay(r) for r in rows],
            )
            calibration = self._calibration(monitored)
            return await asyncio.to_thread(
                evaluate, monitored.profile, window, monitored.task, monitored.baseline, config, calibration
            )
        except ValueError as exc:
            raise PermanentError(f"window {index} of {model} v{version} cannot be judged: {exc}") from exc

    def _calibration(self, monitored: MonitoredVersion) -> Calibration | None:
        key = (monitored.model, monitored.version)
        if key not in self._calibrations:
            if len(self._calibrations) >= 64:
                self._calibrations.pop(next(iter(self._calibrations)))
            evaluation = monitored.profile.evaluation
            usable = monitored.task == "classification" and evaluation is not None
            self._calibrations[key] = Calibration.fit(evaluation) if usable and evaluation is not None else None
        return self._calibrations[key]

    async def _alarm(
        self, unit: DriftUnit, monitored: MonitoredVersion, index: int, verdict: DriftReport
    ) -> tuple[bool, str | None, CooldownState]:
        """Whether the verdict raises the alarm now, why not if it does not, and the cooldown after it."""
        action = verdict.recommended_action
        if action is None:
            return False, None, monitored.cooldown
        asked = monitored.retrain_requested_at
        in_flight = asked is not None and self.clock() - asked < self.rules.retrain_timeout
        if action == "retrain":
            # Retraining is only worth it with labels this version has not seen: its own predictions' labels.
            labelled = await unit.count_labelled(monitored.model, monitored.version)
            if labelled < self.rules.min_labelled_rows:
                return False, HELD_FOR_LABELS, monitored.cooldown  # the cooldown is not spent
        emit, cooldown = CooldownPolicy(monitored.cooldown_windows).should_emit(
            monitored.cooldown, True, index, retrain=action == "retrain"
        )
        if not emit:
            return False, HELD_FOR_COOLDOWN, cooldown
        if action == "retrain" and in_flight:
            return False, HELD_FOR_RETRAIN, monitored.cooldown  # the cooldown is not spent
        # A retrain that timed out undecided (a failed run says nothing) is no evidence that retraining
        # did not help: its latches do not hold the next one back.
        timed_out = asked is not None and not in_flight
        if action == "retrain" and not timed_out and not retrain_armed(verdict, monitored.cooldown.latched):
            return False, HELD_FOR_HYSTERESIS, monitored.cooldown  # the cooldown is not spent
        return True, None, cooldown

    def _report_fields(self, verdict: DriftReport, emitted: bool, held: str | None) -> dict[str, Any]:
        summary = verdict.summary
        if held == HELD_FOR_LABELS:
            summary += f" Waiting for labels before retraining: at least {self.rules.min_labelled_rows} labelled rows."
        elif held == HELD_FOR_COOLDOWN:
            summary += " Alarm held back by the cooldown after an earlier one."
        elif held == HELD_FOR_RETRAIN:
            summary += " A retrain asked for earlier is not decided yet: no second one meanwhile."
        elif held == HELD_FOR_HYSTERESIS:
            summary += (
                " No new retrain: what calls for it already raised one and has not fallen below"
                f" {self.rules.clear_fraction:.0%} of its alarm threshold since (hysteresis)."
            )
        return {
            "drift_detected": verdict.drift_detected,
            "cause": verdict.cause,
            "action": verdict.recommended_action,
            "emitted": emitted,
            "held_for": held,
            "basis": verdict.performance.basis,
            "label_coverage": verdict.performance.coverage,
            "summary": summary,
            "report": verdict.to_dict(),
        }

    async def _snapshot_recent(self, unit: DriftUnit, model: str, target: str) -> tuple[ArtifactPointer | None, int]:
        """The newest labelled production rows as a Parquet artifact (inputs plus the target column)."""
        rows = await unit.recent_labelled(model, self.rules.recent_rows)
        if not rows:
            return None, 0
        frame = pd.DataFrame([{**(r.inputs or {}), target: r.label} for r in rows])
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        ref = await asyncio.to_thread(self.artifacts.put, buffer.getvalue(), kind="recent", suffix=".parquet")
        return ArtifactPointer(uri=ref.uri, sha256=ref.sha256), len(frame)


def _delay(row: Observation) -> float | None:
    if row.labelled_at is None or row.logged_at is None or row.label is None:
        return None
    return (row.labelled_at - row.logged_at).total_seconds()


def _drift_detected(
    report: Report,
    verdict: DriftReport,
    action: Action,
    window_size: int,
    recent: ArtifactPointer | None,
    recent_rows: int,
) -> DriftDetected:
    """The alarm: the window's verdict with the evidence that drifted, and the recent data to retrain on."""
    details = report.report
    return DriftDetected(
        model=report.model,
        version=report.version,
        report_id=report.id,
        cause=verdict.cause,
        action=action,
        summary=report.summary,
        drifted_features=list(verdict.drifted_features),
        evidence={
            "features": {k: v for k, v in details["features"].items() if v["drifted"]},
            "performance": details["performance"],
            "prediction": details["prediction"],
            "data_quality_issues": details["data_quality_issues"],
            "revision": report.revision,
            "window_index": report.window_index,
        },
        window_size=window_size,
        recent_data=recent,
        recent_rows=recent_rows,
    )
