"""Validator reaction: model.trained -> judge the candidate against the champion -> register or model.rejected.

The verdict for a run is decided once and stored before any effect (registering, which may promote
the candidate, or announcing a rejection). A replay after a crash reuses the stored verdict, so the
candidate is never judged again against a champion that may by then be the candidate itself.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prometheus_client import Counter

from mloop_common.artifacts import Artifacts
from mloop_common.clients import Registry
from mloop_common.contracts import PRODUCTION, Lineage, RegisterVersion
from mloop_common.errors import InvalidInput
from mloop_common.events import Envelope, ModelRejected, ModelTrained, new_event
from mloop_common.modelio import load_model
from mloop_common.spec import ModelSpec
from mloop_common.uow import Store
from mloop_validator.entities import CheckResult, Evaluation, SlicePair
from mloop_validator.evaluate import probe_candidate, score_model
from mloop_validator.infra import SAMPLE_ROWS, InfraCheck, InfraReport
from mloop_validator.policy import Check, Decision, Measured, decide
from mloop_validator.store import ValidatorUnit

SOURCE = "mloop/validator"
log = logging.getLogger(__name__)
# Until alerts have a channel of their own, a rejection is a counter to alert on and a warning in the log.
REJECTED = Counter("mloop_validator_rejections_total", "Candidates the release gate rejected", ["model"])
MB = 1024 * 1024


def utc_now() -> datetime:
    return datetime.now(UTC)


class Validator:
    """Judges each trained candidate; its ports are passed in by the composition root (or a test)."""

    def __init__(
        self,
        *,
        store: Store[ValidatorUnit],
        registry: Registry,
        artifacts: Artifacts,
        infra_check: InfraCheck,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.store = store
        self.registry = registry
        self.artifacts = artifacts
        self.infra_check = infra_check
        self.clock = clock

    async def on_model_trained(self, trained: ModelTrained, event: Envelope) -> None:
        async with self.store.transaction() as unit:
            if await unit.handled(event):
                return
            verdict = await unit.evaluation_of_run(trained.run_id)
        if verdict is None:
            judged = await self._judge(trained)
            async with self.store.transaction() as unit:
                await unit.add_evaluation(judged)  # a concurrent verdict for the run: Conflict, and a retry reuses it
            verdict = judged
        registered_version = verdict.registered_version
        if verdict.decision == "registered" and verdict.settled_at is None:
            # The registry is idempotent per run: a replay after a crash gets the same version back.
            registered = await self.registry.register(trained.model, _registration(trained, event, verdict))
            registered_version = registered.version
        async with self.store.transaction() as unit:
            if not await unit.claim(event) or verdict.settled_at is not None:
                return  # another delivery of this run's event already did what the verdict asks
            await unit.settle(verdict.id, registered_version, self.clock())
            if verdict.decision == "rejected":
                rejected = ModelRejected(
                    model=trained.model,
                    run_id=trained.run_id,
                    evaluation_id=verdict.id,
                    reasons=[check.message for check in verdict.failed_checks] or verdict.reasons,
                    candidate_metrics=verdict.candidate_metrics,
                    champion_version=verdict.champion_version,
                    champion_metrics=verdict.champion_metrics,
                )
                await unit.stage(new_event(rejected, source=SOURCE, subject=trained.model, cause=event))
        if verdict.decision == "rejected":
            REJECTED.labels(model=trained.model).inc()
            log.warning(
                "ALERT %s run %s rejected by the release gate (evaluation %s): failed %s",
                trained.model,
                trained.run_id,
                verdict.id,
                "; ".join(f"{c.name}: {c.message}" for c in verdict.failed_checks),
            )
        else:
            log.info("%s run %s: registered as v%s", trained.model, trained.run_id, registered_version)

    async def _judge(self, trained: ModelTrained) -> Evaluation:
        """Measure candidate and champion on the run's holdout and apply the promotion policy (no effects)."""
        spec = (await self.registry.model(trained.model, trained.spec_version)).spec
        champion = await self.registry.alias(trained.model, PRODUCTION)
        evaluation_id = uuid.uuid4().hex
        if champion is not None and champion.run_id == trained.run_id:
            # Registered (and promoted) by an attempt from before verdicts were stored first, which crashed
            # before recording its verdict: judging it now would compare it with itself. Its verdict stands.
            sentence = f"This run was registered as v{champion.version} by an earlier attempt; that verdict stands."
            already = Decision(True, [sentence], None, [Check("registered", True, sentence)])
            return _evaluation(
                champion.evaluation_id, trained, spec, already, champion.metrics, {}, None, None, None, 0, {}
            )
        # Off the event loop: a network store (S3) may take seconds, and the consumer's heartbeat must not wait.
        holdout_bytes, artifact = await asyncio.gather(
            asyncio.to_thread(self.artifacts.get, trained.holdout.uri, trained.holdout.sha256),
            asyncio.to_thread(self.artifacts.get, trained.artifact.uri, trained.artifact.sha256),
        )
        holdout = pd.read_parquet(io.BytesIO(holdout_bytes))
        try:
            candidate = load_model(artifact)
        except InvalidInput as exc:
            # A candidate that cannot be loaded safely is rejected, not retried: loading it again fails alike.
            unloadable = Check("infra", False, f"The artifact cannot be loaded: {exc.message}")
            decision = Decision(False, [unloadable.message], None, [unloadable])
            return _evaluation(evaluation_id, trained, spec, decision, {}, {}, None, None, None, 0, {})
        score = functools.partial(
            score_model, target=trained.target, task=trained.task, metric=spec.metric, slices=spec.promotion.slices
        )
        candidate_metrics, candidate_slices = await asyncio.to_thread(
            score, candidate, holdout, features=trained.features
        )
        report = await asyncio.to_thread(
            probe_candidate,
            candidate,
            holdout,
            features=trained.features,
            target=trained.target,
            task=trained.task,
            metric=spec.metric,
            policy=spec.promotion,
            seed=trained.seed,
        )
        infra = await self.infra_check(artifact, candidate, holdout[trained.features].head(SAMPLE_ROWS))
        report["profile"] = {
            "artifact_bytes": len(artifact),
            "load_seconds": infra.load_seconds,
            "latency": report.pop("latency"),
        }
        report["infra"] = {"error": infra.error, "rows": infra.rows}
        champion_metrics = champion_slices = None
        if champion is not None:
            champion_bytes = await asyncio.to_thread(
                self.artifacts.get, champion.artifact.uri, champion.artifact.sha256
            )
            champion_model = load_model(champion_bytes)
            champion_metrics, champion_slices = await asyncio.to_thread(
                score, champion_model, holdout, features=champion.features
            )
        decision = decide(
            spec.metric,
            candidate_metrics,
            champion_metrics,
            candidate_slices,
            champion_slices or {},
            spec.promotion,
            measured=_measured(report, infra, len(artifact)),
        )
        return _evaluation(
            evaluation_id,
            trained,
            spec,
            decision,
            candidate_metrics,
            candidate_slices,
            champion.version if champion else None,
            champion_metrics,
            champion_slices,
            len(holdout),
            report,
        )


def _measured(report: dict[str, Any], infra: InfraReport, artifact_bytes: int) -> Measured:
    """The policy's view of the candidate's report."""
    calibration = report.get("calibration")
    return Measured(
        flip_rate=report["robustness"]["flip_rate"],
        calibration_error=calibration["ece"] if calibration else None,
        fairness=report.get("fairness", {}),
        p99_latency_ms=report["profile"]["latency"]["batch_1"]["p99_ms"],
        artifact_mb=artifact_bytes / MB,
        infra_checked=True,
        infra_error=infra.error,
    )


def _evaluation(
    evaluation_id: str,
    trained: ModelTrained,
    spec: ModelSpec,
    decision: Decision,
    candidate_metrics: dict[str, float],
    candidate_slices: dict[str, Any],
    champion_version: int | None,
    champion_metrics: dict[str, float] | None,
    champion_slices: dict[str, Any] | None,
    holdout_rows: int,
    report: dict[str, Any],
) -> Evaluation:
    return Evaluation(
        id=evaluation_id,
        model=trained.model,
        run_id=trained.run_id,
        decision="registered" if decision.register else "rejected",
        reasons=decision.reasons,
        metric=spec.metric,
        candidate_metrics=candidate_metrics,
        champion_version=champion_version,
        champion_metrics=champion_metrics,
        slices=SlicePair(candidate=candidate_slices, champion=champion_slices),
        registered_version=None,
        holdout_rows=holdout_rows,
        checks=[CheckResult(**vars(check)) for check in decision.checks],
        report=report,
    )


def _registration(trained: ModelTrained, event: Envelope, verdict: Evaluation) -> RegisterVersion:
    """What the registry records for a candidate that passed: artifacts, metrics and full lineage."""
    return RegisterVersion(
        run_id=trained.run_id,
        evaluation_id=verdict.id,
        spec_version=trained.spec_version,
        task=trained.task,
        artifact=trained.artifact,
        profile=trained.profile,
        features=trained.features,
        metrics=verdict.candidate_metrics,
        lineage=Lineage(
            dataset=trained.dataset,
            dataset_version=trained.dataset_version,
            dataset_sha256=trained.dataset_sha256,
            recent_data_sha256=trained.recent_data_sha256,
            trigger=trained.trigger,
            code_version=trained.code_version,
            estimator_class=trained.estimator_class,
            params=trained.params,
            seed=trained.seed,
            training_seconds=trained.training_seconds,
            trained_event_id=event.id,
            correlation_id=event.correlationid,
            champion_version=verdict.champion_version,
        ),
        correlation_id=event.correlationid,
        causation_id=event.id,
    )
