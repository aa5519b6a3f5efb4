"""Drift reactions: remember promoted versions, collect predictions and labels, judge full windows."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from typing import Any

import pandas as pd
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.db import claim_event, enqueue
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
from mloop_common.runtime import Runtime
from mloop_drift import store
from mloop_drift.config import DriftSettings
from mloop_drift.cooldown import CooldownPolicy, CooldownState
from mloop_drift.detector import DriftConfig, evaluate_window

SOURCE = "mloop/drift"
log = logging.getLogger(__name__)


class DriftMonitor:
    def __init__(self, runtime: Runtime, settings: DriftSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.consumer = runtime.group_id
        self.config = DriftConfig(out_of_range_share=settings.out_of_range_share)

    async def on_model_promoted(self, event: Envelope) -> None:
        promoted = event.payload()
        assert isinstance(promoted, ModelPromoted)
        profile = json.loads(self.runtime.artifacts.get(promoted.profile.uri, promoted.profile.sha256))
        async with self.runtime.transaction() as session:
            if not await claim_event(session, self.consumer, event):
                return
            await store.add_monitored(
                session,
                {
                    "model": promoted.model,
                    "version": promoted.version,
                    "task": promoted.task,
                    "target": promoted.target,
                    "features": promoted.features,
                    "profile": profile,
                    "baseline": promoted.metrics,
                    "window_size": promoted.drift_window,
                    "cooldown_windows": promoted.cooldown_windows,
                },
            )
            await self._judge_windows(session, promoted.model, promoted.version, event)

    async def on_predictions_logged(self, event: Envelope) -> None:
        logged = event.payload()
        assert isinstance(logged, PredictionsLogged)
        rows = [
            {
                "request_id": r.request_id,
                "logged_at": r.timestamp,
                "inputs": r.inputs,
                "prediction": r.prediction,
                "probabilities": r.probabilities,
            }
            for r in logged.records
            if r.route != "shadow"
        ]
        async with self.runtime.transaction() as session:
            if not await claim_event(session, self.consumer, event):
                return
            await store.record_predictions(session, logged.model, logged.version, rows)
            await self._judge_windows(session, logged.model, logged.version, event)

    async def on_feedback_received(self, event: Envelope) -> None:
        feedback = event.payload()
        assert isinstance(feedback, FeedbackReceived)
        rows = [{"request_id": r.request_id, "label": r.label, "labelled_at": r.timestamp} for r in feedback.records]
        async with self.runtime.transaction() as session:
            if not await claim_event(session, self.consumer, event):
                return
            await store.record_labels(session, feedback.model, rows)
            for version in await store.open_versions(session, feedback.model):
                await self._judge_windows(session, feedback.model, version, event)

    async def _judge_windows(self, session: AsyncSession, model: str, version: int, cause: Envelope) -> None:
        """Close every full window of (model, version); a window waits a while for its labels."""
        monitor = await store.get_monitored(session, model, version, for_update=True)
        if monitor is None:
            return  # predictions raced ahead of the promotion; judged once it arrives
        if monitor["retired"]:
            return  # a newer version is in production: late predictions of this one are kept, not judged
        size = monitor["window_size"]
        while True:
            total, labelled = await store.open_window_stats(session, model, version, size)
            if total < size:
                return
            if labelled < size * self.settings.min_label_share and total < size * self.settings.label_wait_windows:
                return
            index = monitor["next_window"]
            rows = await store.take_window(session, model, version, size, index)
            await self._judge(session, monitor, index, rows, cause)
            monitor["next_window"] = index + 1
            await store.update_monitored(session, model, version, next_window=index + 1, cooldown=monitor["cooldown"])

    async def _judge(
        self, session: AsyncSession, monitor: dict[str, Any], index: int, rows: list[dict[str, Any]], cause: Envelope
    ) -> None:
        model, version = monitor["model"], monitor["version"]
        labels = [r["label"] for r in rows]
        probabilities = [r["probabilities"] for r in rows]
        try:
            report = await asyncio.to_thread(
                evaluate_window,
                monitor["profile"],
                [r["inputs"] or {} for r in rows],
                [r["prediction"] for r in rows],
                labels if any(v is not None for v in labels) else None,
                probabilities if monitor["task"] == "classification" and all(probabilities) else None,
                monitor["task"],
                monitor["baseline"],
                self.config,
            )
        except ValueError as exc:
            raise PermanentError(f"window {index} of {model} v{version} cannot be judged: {exc}") from exc
        details = report.to_dict()
        action = report.recommended_action
        summary = report.summary
        state = CooldownState.from_dict(monitor["cooldown"])
        # Retraining is only worth it with labels this version has not seen: its own predictions' labels.
        labelled = await store.count_labelled(session, model, version) if action == "retrain" else 0
        if action == "retrain" and labelled < self.settings.min_labelled_rows:
            # Keep watching without spending the cooldown: retraining needs labelled recent data.
            emit = False
            summary += (
                f" Waiting for labels before retraining: {labelled} of "
                f"{self.settings.min_labelled_rows} labelled production rows so far."
            )
        else:
            emit, state = CooldownPolicy(monitor["cooldown_windows"]).should_emit(state, report.drift_detected, index)
        monitor["cooldown"] = state.to_dict()
        report_id = uuid.uuid4().hex
        recent: ArtifactPointer | None = None
        recent_rows = 0
        if emit and action == "retrain":
            recent, recent_rows = await self._snapshot_recent(session, model, monitor["target"])
        await store.add_report(
            session,
            {
                "id": report_id,
                "model": model,
                "version": version,
                "window_index": index,
                "drift_detected": report.drift_detected,
                "cause": report.cause,
                "action": action,
                "emitted": emit,
                "summary": summary,
                "report": details,
            },
        )
        log.info("%s v%s window %d: %s%s", model, version, index, summary, " -> drift.detected" if emit else "")
        if emit and action is not None:
            await enqueue(
                session,
                new_event(
                    DriftDetected(
                        model=model,
                        version=version,
                        report_id=report_id,
                        cause=report.cause,
                        action=action,
                        summary=summary,
                        drifted_features=list(report.drifted_features),
                        evidence={
                            "features": {k: v for k, v in details["features"].items() if v["drifted"]},
                            "performance": details["performance"],
                            "prediction": details["prediction"],
                            "data_quality_issues": details["data_quality_issues"],
                        },
                        window_size=len(rows),
                        recent_data=recent,
                        recent_rows=recent_rows,
                    ),
                    source=SOURCE,
                    subject=model,
                    cause=cause,
                ),
            )

    async def _snapshot_recent(
        self, session: AsyncSession, model: str, target: str
    ) -> tuple[ArtifactPointer | None, int]:
        """The newest labelled production rows as a Parquet artifact (inputs plus the target column)."""
        rows = await store.recent_labelled(session, model, self.settings.recent_rows)
        if not rows:
            return None, 0
        frame = pd.DataFrame([{**(r["inputs"] or {}), target: r["label"]} for r in rows])
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        ref = self.runtime.artifacts.put(buffer.getvalue(), kind="recent", suffix=".parquet")
        return ArtifactPointer(uri=ref.uri, sha256=ref.sha256), len(frame)
