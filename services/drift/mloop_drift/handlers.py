"""Drift reactions: watch promoted versions, collect predictions and labels, judge full windows."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pandas as pd
from pydantic import ValidationError

from mloop_common.artifacts import Artifacts
from mloop_common.errors import PermanentError
from mloop_common.events import (
    ArtifactPointer,
    DriftDetected,
    Envelope,
    FeedbackReceived,
    ModelPromoted,
    PredictionsLogged,
    new_event,
)
from mloop_common.profile import ReferenceProfile
from mloop_common.uow import Store
from mloop_drift.cooldown import CooldownPolicy, CooldownState
from mloop_drift.detector import Action, DriftConfig, DriftReport, evaluate_window
from mloop_drift.entities import Label, MonitoredVersion, Observation, Prediction, Report
from mloop_drift.store import DriftUnit

SOURCE = "mloop/drift"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowRules:
    """When a full window is judged, and how much labelled evidence a retrain recommendation needs."""

    # A full window waits for labels until this share of it is labelled, or until this many
    # windows' worth of predictions are queued behind it.
    min_label_share: float
    label_wait_windows: int
    # A retrain recommendation needs at least this many labelled production rows of the version.
    min_labelled_rows: int
    # How many of the newest labelled rows a retrain recommendation carries.
    recent_rows: int


class DriftMonitor:
    """Judges the windows of each monitored version; its ports are passed in by the composition root (or a test)."""

    def __init__(
        self,
        *,
        store: Store[DriftUnit],
        artifacts: Artifacts,
        rules: WindowRules,
        detector: DriftConfig,
        clock: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.rules = rules
        self.detector = detector
        self.clock = clock

    async def on_model_promoted(self, promoted: ModelPromoted, event: Envelope) -> None:
        profile = self._profile(promoted)
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
                    window_size=promoted.drift_window,
                    cooldown_windows=promoted.cooldown_windows,
                    promoted_at=self.clock(),
                )
            )
            await self._judge_windows(unit, promoted.model, promoted.version, event)

    async def on_predictions_logged(self, logged: PredictionsLogged, event: Envelope) -> None:
        predictions = [
            Prediction(
                request_id=r.request_id,
                logged_at=r.timestamp,
                inputs=r.inputs,
                prediction=r.prediction,
                probabilities=r.probabilities,
            )
            for r in logged.records
            if r.route != "shadow"
        ]
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            await unit.record_predictions(logged.model, logged.version, predictions)
            await self._judge_windows(unit, logged.model, logged.version, event)

    async def on_feedback_received(self, feedback: FeedbackReceived, event: Envelope) -> None:
        labels = [Label(request_id=r.request_id, label=r.label, labelled_at=r.timestamp) for r in feedback.records]
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            await unit.record_labels(feedback.model, labels)
            for version in await unit.open_versions(feedback.model):
                await self._judge_windows(unit, feedback.model, version, event)

    def _profile(self, promoted: ModelPromoted) -> ReferenceProfile:
        data = self.artifacts.get(promoted.profile.uri, promoted.profile.sha256)
        try:
            return ReferenceProfile.from_json(data)
        except ValidationError as exc:
            raise PermanentError(
                f"{promoted.model} v{promoted.version} has an unreadable reference profile: {exc}"
            ) from exc

    async def _judge_windows(self, unit: DriftUnit, model: str, version: int, cause: Envelope) -> None:
        """Close every full window of (model, version); a window waits a while for its labels."""
        monitored = await unit.lock_monitored(model, version)
        if monitored is None:
            return  # predictions raced ahead of the promotion; judged once it arrives
        if monitored.retired:
            return  # a newer version is in production: late predictions of this one are kept, not judged
        size = monitored.window_size
        index, cooldown = monitored.next_window, monitored.cooldown
        while True:
            total, labelled = await unit.open_window(model, version, size)
            if total < size:
                return
            if labelled < size * self.rules.min_label_share and total < size * self.rules.label_wait_windows:
                return
            rows = await unit.take_window(model, version, size, index)
            cooldown = await self._judge(unit, monitored, index, rows, cooldown, cause)
            index += 1
            await unit.advance(model, version, next_window=index, cooldown=cooldown)

    async def _judge(
        self,
        unit: DriftUnit,
        monitored: MonitoredVersion,
        index: int,
        rows: list[Observation],
        cooldown: CooldownState,
        cause: Envelope,
    ) -> CooldownState:
        """Report on one window, and raise the alarm unless the cooldown holds it; returns the cooldown after it."""
        model, version = monitored.model, monitored.version
        labels = [r.label for r in rows]
        probabilities = [r.probabilities for r in rows]
        try:
            verdict = await asyncio.to_thread(
                evaluate_window,
                monitored.profile,
                [r.inputs or {} for r in rows],
                [r.prediction for r in rows],
                labels if any(v is not None for v in labels) else None,
                probabilities if monitored.task == "classification" and all(probabilities) else None,
                monitored.task,
                monitored.baseline,
                self.detector,
            )
        except ValueError as exc:
            raise PermanentError(f"window {index} of {model} v{version} cannot be judged: {exc}") from exc
        action = verdict.recommended_action
        summary = verdict.summary
        # Retraining is only worth it with labels this version has not seen: its own predictions' labels.
        labelled = await unit.count_labelled(model, version) if action == "retrain" else 0
        if action == "retrain" and labelled < self.rules.min_labelled_rows:
            # Keep watching without spending the cooldown: retraining needs labelled recent data.
            emit = False
            summary += (
                f" Waiting for labels before retraining: {labelled} of "
                f"{self.rules.min_labelled_rows} labelled production rows so far."
            )
        else:
            emit, cooldown = CooldownPolicy(monitored.cooldown_windows).should_emit(
                cooldown, verdict.drift_detected, index
            )
        report = Report(
            id=uuid.uuid4().hex,
            model=model,
            version=version,
            window_index=index,
            drift_detected=verdict.drift_detected,
            cause=verdict.cause,
            action=action,
            emitted=emit,
            summary=summary,
            report=verdict.to_dict(),
            created_at=self.clock(),
        )
        recent: ArtifactPointer | None = None
        recent_rows = 0
        if emit and action == "retrain":
            recent, recent_rows = await self._snapshot_recent(unit, model, monitored.target)
        await unit.add_report(report)
        log.info("%s v%s window %d: %s%s", model, version, index, summary, " -> drift.detected" if emit else "")
        if emit and action is not None:
            detected = _drift_detected(report, verdict, action, len(rows), recent, recent_rows)
            await unit.stage(new_event(detected, source=SOURCE, subject=model, cause=cause))
        return cooldown

    async def _snapshot_recent(self, unit: DriftUnit, model: str, target: str) -> tuple[ArtifactPointer | None, int]:
        """The newest labelled production rows as a Parquet artifact (inputs plus the target column)."""
        rows = await unit.recent_labelled(model, self.rules.recent_rows)
        if not rows:
            return None, 0
        frame = pd.DataFrame([{**(r.inputs or {}), target: r.label} for r in rows])
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        ref = self.artifacts.put(buffer.getvalue(), kind="recent", suffix=".parquet")
        return ArtifactPointer(uri=ref.uri, sha256=ref.sha256), len(frame)


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
        },
        window_size=window_size,
        recent_data=recent,
        recent_rows=recent_rows,
    )
