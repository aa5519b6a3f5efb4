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
from mloop_common.contracts import PRODUCTION, AliasView, Lineage, RegisterVersion
from mloop_common.errors import DigestMismatch, InvalidInput, NotFound
from mloop_common.events import DataPublished, Envelope, ModelRejected, ModelTrained, new_event
from mloop_common.modelio import load_model
from mloop_common.spec import ModelSpec
from mloop_common.uow import Store
from mloop_validator.entities import CheckResult, DatasetVersion, Evaluation, SlicePair
from mloop_validator.evaluate import labelled, probe_candidate, score_model, unusable_evaluation_set
from mloop_validator.infra import SAMPLE_ROWS, InfraCheck, InfraReport
from mloop_validator.policy import Check, Decision, Measured, decide, decide_pinned
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

    async def on_data_published(self, published: DataPublished, event: Envelope) -> None:
        """Remember where a published version's snapshot is: a spec may pin it as its evaluation set."""
        dataset = DatasetVersion(
            name=published.dataset,
            version=published.version,
            snapshot_uri=published.snapshot.uri,
            snapshot_sha256=published.snapshot.sha256,
            rows=published.rows,
            target=published.target,
        )
        async with self.store.transaction() as unit:
            if await unit.claim(event):
                await unit.remember_dataset(dataset)

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
        champion_metrics = champion_slices = champion_model = None
        if champion is not None:
            champion_bytes = await asyncio.to_thread(
                self.artifacts.get, champion.artifact.uri, champion.artifact.sha256
            )
            champion_model = load_model(champion_bytes)
            champion_metrics, champion_slices = await asyncio.to_thread(
                score, champion_model, holdout, features=champion.features
            )
        on_holdout = decide(
            spec.metric,
            candidate_metrics,
            champion_metrics,
            candidate_slices,
            champion_slices or {},
            spec.promotion,
            measured=_measured(report, infra, len(artifact)),
        )
        decision = on_holdout
        if spec.evaluation is not None:
            report["pinned"], pinned_checks = await self._on_pinned_set(
                spec, trained, score, candidate, champion, champion_model
            )
            checks = [*on_holdout.checks, *pinned_checks]
            decision = Decision(
                all(c.passed for c in checks), [c.message for c in checks], on_holdout.improvement, checks
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

    async def _on_pinned_set(
        self,
        spec: ModelSpec,
        trained: ModelTrained,
        score: Callable[..., tuple[dict[str, float], dict[str, Any]]],
        candidate: Any,
        champion: AliasView | None,
        champion_model: Any,
    ) -> tuple[dict[str, Any], list[Check]]:
        """Candidate and champion measured on the spec's pinned dataset version: the report's ``pinned`` section
        and the checks it adds. A set that cannot be used is a failed check (the candidate is rejected with the
        reason, as trying again would fail alike), never an error that sends the event to the dead letters."""
        assert spec.evaluation is not None
        name, version = spec.evaluation.dataset or spec.dataset, spec.evaluation.version
        where = f"the pinned evaluation set {name} v{version}"
        section: dict[str, Any] = {"dataset": name, "version": version, "error": None}

        def unusable(reason: str) -> tuple[dict[str, Any], list[Check]]:
            section["error"] = reason
            return section, [Check("pinned", False, f"The candidate cannot be measured on {where}: {reason}.")]

        async with self.store.transaction() as unit:
            dataset = await unit.dataset_version(name, version)
        if dataset is None:
            return unusable(
                f"dataset {name} has no published version {version} (never published, or refused by ingest)"
            )
        section["sha256"] = dataset.snapshot_sha256
        try:
            data = await asyncio.to_thread(self.artifacts.get, dataset.snapshot_uri, dataset.snapshot_sha256)
        except (NotFound, DigestMismatch) as exc:
            return unusable(f"its snapshot cannot be read ({exc})")
        frame = pd.read_parquet(io.BytesIO(data))
        if problem := unusable_evaluation_set(frame, trained.features, trained.target):
            return unusable(problem)
        section["rows"] = len(labelled(frame, trained.target, trained.features))
        try:
            candidate_metrics, candidate_slices = await asyncio.to_thread(
                score, candidate, frame, features=trained.features
            )
        except (ValueError, TypeError, KeyError) as exc:  # e.g. a column of another type than the model learnt
            return unusable(f"the candidate cannot predict on it ({type(exc).__name__}: {exc})")
        champion_metrics = champion_slices = None
        champion_problem = None
        if champion is not None and champion_model is not None:
            champion_problem = unusable_evaluation_set(frame, champion.features, trained.target)
            if champion_problem is None:
                try:
                    champion_metrics, champion_slices = await asyncio.to_thread(
                        score, champion_model, frame, features=champion.features
                    )
                except (ValueError, TypeError, KeyError) as exc:
                    champion_problem = f"it cannot predict on it ({type(exc).__name__}: {exc})"
            champion_problem = champion_problem and f"v{champion.version}: {champion_problem}"
        section |= {
            "candidate_metrics": candidate_metrics,
            "champion_metrics": champion_metrics,
            "slices": {"candidate": candidate_slices, "champion": champion_slices},
            "champion_error": champion_problem,
        }
        measured = Check("pinned", True, f"The candidate was measured on {where} ({section['rows']} labelled rows).")
        compared = decide_pinned(
            where,
            spec.metric,
            candidate_metrics,
            champion_metrics,
            candidate_slices,
            champion_slices,
            spec.promotion,
            champion_problem=champion_problem,
        )
        return section, [measured, *compared]


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
