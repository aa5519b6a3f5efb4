"""Trainer reactions: data.published and drift.detected (retrain) become runs and model.trained."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from prometheus_client import Counter, Gauge, Histogram
from pydantic import ValidationError

from mloop_common.artifacts import Artifacts, sha256_hex
from mloop_common.clients import Registry
from mloop_common.contracts import PRODUCTION
from mloop_common.datacontract import DatasetContract
from mloop_common.errors import Conflict, InvalidInput, MloopError, NotFound
from mloop_common.events import (
    ArtifactPointer,
    DataPublished,
    DriftDetected,
    Envelope,
    ModelTrained,
    SpecChanged,
    TrainingFailed,
    new_event,
)
from mloop_common.modelio import load_model
from mloop_common.profile import ReferenceProfile
from mloop_common.spec import ModelSpec, SpecLimits, check_limits, spec_digest
from mloop_common.uow import Store
from mloop_trainer.entities import ActiveRun, DatasetRef, FailedDetails, Failure, Run, TrainedDetails, Trigger
from mloop_trainer.jobs import JobOutput, run_training_job
from mloop_trainer.reproduce import Reproduction, compare_predictions, differences, inputs_of, outputs_of
from mloop_trainer.store import TrainerUnit
from mloop_trainer.training import SearchProgress, TrainingError
from mloop_trainer.workers import Budget, JobFailed, Workers

SOURCE = "mloop/trainer"
log = logging.getLogger(__name__)
# Until alerts have a channel of their own, a failed run is a counter to alert on and an error in the log.
FAILED_RUNS = Counter("mloop_trainer_failed_runs_total", "Training runs that failed", ["model", "failure"])
RUNS = Counter("mloop_trainer_runs_total", "Training runs that finished, by status", ["model", "status"])
RUN_SECONDS = Histogram(
    "mloop_trainer_run_seconds",
    "Wall time of a training run, queueing for a worker included",
    ["model"],
    buckets=(1, 5, 15, 60, 300, 900, 1800, 3600, 7200, 14400, 28800),
)

TRIALS_DONE = Gauge(
    "mloop_trainer_active_trials_done", "Parameter combinations tried by the run in progress", ["model"]
)
TRIALS_TOTAL = Gauge("mloop_trainer_active_trials_total", "Parameter combinations the run in progress plans", ["model"])

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Trainer:
    """Trains model specs off the event loop; its ports are passed in by the composition root (or a test).

    Jobs run through ``workers`` (worker processes in production), each within ``budget``; a spec
    beyond ``limits`` is not run. A run that cannot succeed (bad data, over its limits or budget, its
    worker died) is recorded as failed with the reason and announces nothing: the event is done and
    the consumer moves on, since running it again would end the same way.
    """

    def __init__(
        self,
        *,
        store: Store[TrainerUnit],
        registry: Registry,
        artifacts: Artifacts,
        workers: Workers,
        budget: Budget,
        limits: SpecLimits,
        code_version: str,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.registry = registry
        self.artifacts = artifacts
        self.workers = workers
        self.budget = budget
        self.limits = limits
        self.code_version = code_version
        self.clock = clock
        self._active: dict[str, ActiveRun] = {}

    def training(self, model: str | None = None) -> list[ActiveRun]:
        """The runs being fitted right now, of one model or of all."""
        return [run for run in self._active.values() if model in (None, run.model)]

    async def on_data_published(self, published: DataPublished, event: Envelope) -> None:
        dataset = DatasetRef(
            name=published.dataset,
            version=published.version,
            snapshot_uri=published.snapshot.uri,
            snapshot_sha256=published.snapshot.sha256,
            target=published.target,
            time_column=published.time_column,
            contract_uri=published.contract.uri if published.contract else None,
            contract_sha256=published.contract.sha256 if published.contract else None,
        )
        async with self.store.transaction() as unit:
            if await unit.handled(event):
                return
            # Known before the specs are read, so a spec stored meanwhile (spec.changed) finds this version.
            await unit.remember_dataset(dataset)
        models = await self.registry.models_for_dataset(published.dataset)
        async with self.store.transaction() as unit:
            # A spec stored just before this publication may be training (or have trained) on it already.
            models = [
                m
                for m in models
                if not await unit.has_trained(m.name, m.spec_version, dataset.version)
                and not self._training_now(m.name, m.spec_version, dataset.version)
            ]
        data = await self._get(dataset.snapshot_uri, dataset.snapshot_sha256)
        runs = [
            (model.spec, await self._train(model.spec, model.spec_version, dataset, data, "data.published", event))
            for model in models
        ]
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            for spec, run in runs:
                if await unit.has_trained(spec.name, run.spec_version, run.dataset_version):
                    # spec.changed trained the same inputs while this ran: one version is enough.
                    log.info("%s spec v%s trained meanwhile; this run is dropped", spec.name, run.spec_version)
                    continue
                await self._record(unit, spec, run, event)

    async def on_spec_changed(self, changed: SpecChanged, event: Envelope) -> None:
        """A new spec version trains on the newest version of its dataset now, not at the next publication."""
        async with self.store.transaction() as unit:
            if await unit.handled(event):
                return
            try:
                dataset: DatasetRef | None = await unit.latest_dataset(changed.dataset)
            except NotFound:
                dataset = None  # the dataset's first publication trains this spec
            done = dataset is not None and await unit.has_trained(changed.model, changed.spec_version, dataset.version)
        model = await self.registry.model(changed.model)
        skip = None
        if dataset is None:
            skip = "its dataset has no version yet; the first publication trains it"
        elif model.spec_version != changed.spec_version:
            skip = f"spec v{model.spec_version} is newer and trains instead"
        elif done or self._training_now(changed.model, changed.spec_version, dataset.version):
            skip = f"it has trained on {dataset.name} v{dataset.version} already"
        if dataset is None or skip:
            log.info("spec v%s of %s: nothing to train (%s)", changed.spec_version, changed.model, skip)
            async with self.store.transaction() as unit:
                await unit.claim(event)
            return
        data = await self._get(dataset.snapshot_uri, dataset.snapshot_sha256)
        run = await self._train(model.spec, model.spec_version, dataset, data, "spec.changed", event)
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            if await unit.has_trained(changed.model, changed.spec_version, dataset.version):
                # The dataset's publication trained the same inputs while this ran: one version is enough.
                log.info("spec v%s of %s trained meanwhile; this run is dropped", changed.spec_version, changed.model)
                return
            await self._record(unit, model.spec, run, event)

    def _training_now(self, model: str, spec_version: int, dataset_version: int) -> bool:
        return any(
            (run.model, run.spec_version, run.dataset_version) == (model, spec_version, dataset_version)
            for run in self._active.values()
        )

    async def on_drift_detected(self, drift: DriftDetected, event: Envelope) -> None:
        if drift.action != "retrain" or drift.recent_data is None:
            return  # an "investigate" verdict is for humans; nothing to train on
        async with self.store.transaction() as unit:
            if await unit.handled(event):
                return
        production = await self.registry.alias(drift.model, PRODUCTION)
        if production is None or production.version != drift.version:
            # The model moved on since this drift was seen (a retrain already landed): nothing to do.
            log.info(
                "ignoring drift on %s v%s: production is now v%s",
                drift.model,
                drift.version,
                production.version if production else None,
            )
            async with self.store.transaction() as unit:
                await unit.claim(event)
            return
        model = await self.registry.model(drift.model)
        async with self.store.transaction() as unit:
            dataset = await unit.latest_dataset(model.spec.dataset)
        data = await self._get(dataset.snapshot_uri, dataset.snapshot_sha256)
        run = await self._train(
            model.spec, model.spec_version, dataset, data, "drift.detected", event, recent=drift.recent_data
        )
        async with self.store.transaction() as unit:
            if await unit.claim(event):
                await self._record(unit, model.spec, run, event)

    async def _train(
        self,
        spec: ModelSpec,
        spec_version: int,
        dataset: DatasetRef,
        data: bytes,
        trigger: Trigger,
        cause: Envelope,
        *,
        recent: ArtifactPointer | None = None,
    ) -> Run:
        """Fit ``spec`` in a worker and store its artifacts; a run that cannot succeed is a failed run."""
        recent_data = await self._get(recent.uri, recent.sha256) if recent is not None else None
        run_id, started_at = uuid.uuid4().hex, self.clock()

        def finished(details: TrainedDetails | FailedDetails, error: str | None = None) -> Run:
            finished_at = self.clock()
            RUNS.labels(model=spec.name, status="succeeded" if error is None else "failed").inc()
            RUN_SECONDS.labels(model=spec.name).observe((finished_at - started_at).total_seconds())
            return Run(
                run_id=run_id,
                model=spec.name,
                status="succeeded" if error is None else "failed",
                trigger=trigger,
                trigger_event_id=cause.id,
                spec_version=spec_version,
                spec_digest=spec_digest(spec),
                dataset=dataset.name,
                dataset_version=dataset.version,
                dataset_sha256=dataset.snapshot_sha256,
                recent_data_sha256=recent.sha256 if recent else None,
                dataset_uri=dataset.snapshot_uri,
                recent_data_uri=recent.uri if recent else None,
                details=details,
                error=error,
                code_version=self.code_version,
                started_at=started_at,
                finished_at=finished_at,
            )

        def failed(failure: Failure, error: str) -> Run:
            log.error("ALERT run %s for %s failed (%s): %s", run_id, spec.name, failure, error)
            FAILED_RUNS.labels(model=spec.name, failure=failure).inc()
            return finished(FailedDetails(seed=spec.seed, failure=failure), error=error)

        try:
            check_limits(spec, self.limits)
        except InvalidInput as exc:
            return failed("limits", f"the spec asks for more than this trainer allows: {exc.message}")
        log.info("training %s on %s v%s (%s)", spec.name, dataset.name, dataset.version, trigger)
        self._active[run_id] = ActiveRun(
            run_id=run_id,
            model=spec.name,
            spec_version=spec_version,
            trigger=trigger,
            dataset=dataset.name,
            dataset_version=dataset.version,
            started_at=started_at,
        )
        try:
            output: JobOutput = await self.workers.run(
                self.budget,
                run_training_job,
                spec.model_dump(by_alias=True),
                data,
                recent_data,
                progress=functools.partial(self._progressed, run_id),
            )
        except TrainingError as exc:
            return failed("data", str(exc))
        except JobFailed as exc:
            # Over budget, or the worker died (the kernel's OOM killer): the same run would end the same way.
            return failed(exc.kind, exc.message)
        finally:
            self._active.pop(run_id, None)
            for gauge in (TRIALS_DONE, TRIALS_TOTAL):
                with contextlib.suppress(KeyError):
                    gauge.remove(spec.name)
        details = TrainedDetails(
            **output.report.model_dump(),
            seed=spec.seed,
            artifact=await self._put(output.model, "models", ".skops"),
            profile=await self._put(await self._with_contract(output.profile, dataset), "profiles", ".json"),
            holdout=await self._put(output.holdout, "holdouts", ".parquet"),
        )
        log.info(
            "run %s: %s cv=%.4f in %.1fs", run_id, details.estimator_class, details.cv_score, details.timings["job_s"]
        )
        return finished(details)

    async def _with_contract(self, profile: bytes, dataset: DatasetRef) -> bytes:
        """The reference profile with the dataset's schema contract in it, for drift's data-quality checks."""
        if dataset.contract_uri is None or dataset.contract_sha256 is None:
            return profile
        try:
            contract = DatasetContract.model_validate_json(
                await self._get(dataset.contract_uri, dataset.contract_sha256)
            )
        except (MloopError, ValidationError) as exc:
            # Training goes on: drift then judges data quality by the training data and the spec alone.
            log.warning(
                "the contract of %s v%s is unusable (%s); the profile goes without it",
                dataset.name,
                dataset.version,
                exc,
            )
            return profile
        return ReferenceProfile.from_json(profile).model_copy(update={"contract": contract}).to_json()

    def _progressed(self, run_id: str, progress: SearchProgress) -> None:
        """A worker's word on how far a run is (called on a thread while the job runs)."""
        active = self._active.get(run_id)
        if active is None:
            return
        self._active[run_id] = active.model_copy(
            update={"trials_done": progress.trials_done, "trials_total": progress.trials_total, "stage": progress.stage}
        )
        TRIALS_DONE.labels(active.model).set(progress.trials_done)
        TRIALS_TOTAL.labels(active.model).set(progress.trials_total)

    def active_run(self, run_id: str) -> ActiveRun | None:
        return self._active.get(run_id)

    async def reproduce(self, run_id: str) -> Reproduction:
        """Train ``run_id`` again from its recorded inputs and say whether the model and numbers are the same."""
        started = time.perf_counter()
        async with self.store.transaction() as unit:
            run = await unit.run(run_id)
        details = run.details
        if not isinstance(details, TrainedDetails):
            raise Conflict(f"run {run_id} failed ({run.error}): there is no model to reproduce", field="run_id")
        if run.dataset_uri is None or (run.recent_data_sha256 is not None and run.recent_data_uri is None):
            raise Conflict(
                f"run {run_id} was recorded before runs kept where their inputs are; it cannot be reproduced",
                field="run_id",
            )
        spec = (await self.registry.model(run.model, run.spec_version)).spec
        if spec_digest(spec) != run.spec_digest:
            raise Conflict(f"spec v{run.spec_version} of {run.model} is not the one run {run_id} trained on")
        data = await self._get(run.dataset_uri, run.dataset_sha256)
        recent = (
            await self._get(run.recent_data_uri, run.recent_data_sha256)
            if run.recent_data_uri and run.recent_data_sha256
            else None
        )
        output: JobOutput = await self.workers.run(
            self.budget, run_training_job, spec.model_dump(by_alias=True), data, recent
        )
        recorded_model = await self._get(details.artifact.uri, details.artifact.sha256)
        holdout = await self._get(details.holdout.uri, details.holdout.sha256)
        outcome, gap, rows = await asyncio.to_thread(
            _predict_both, recorded_model, output.model, holdout, details.features
        )
        found = differences(
            inputs_of(details.library_versions, run.code_version),
            inputs_of(output.report.library_versions, self.code_version),
            {**outputs_of(details), "holdout_sha256": details.holdout.sha256},
            {**outputs_of(output.report), "holdout_sha256": sha256_hex(output.holdout)},
        )
        return Reproduction(
            run_id=run_id,
            matches=outcome != "different" and not [d for d in found if d.kind == "output"],
            predictions=outcome,
            max_prediction_difference=gap,
            rows_compared=rows,
            differences=found,
            seconds=time.perf_counter() - started,
        )

    async def _get(self, uri: str, sha256: str) -> bytes:
        # Off the event loop: a network store (S3) may take seconds, and the consumer's heartbeat must not wait.
        return await asyncio.to_thread(self.artifacts.get, uri, sha256)

    async def _put(self, data: bytes, kind: str, suffix: str) -> ArtifactPointer:
        ref = await asyncio.to_thread(self.artifacts.put, data, kind=kind, suffix=suffix)
        return ArtifactPointer(uri=ref.uri, sha256=ref.sha256)

    async def _record(self, unit: TrainerUnit, spec: ModelSpec, run: Run, cause: Envelope) -> None:
        """Record the run and announce it through the outbox: a succeeded one's model (model.trained), a failed
        one's reason (training.failed, for the people the registry alerts; nothing trains on it)."""
        await unit.add_run(run)
        if isinstance(run.details, TrainedDetails):
            trained = model_trained(spec, run, run.details)
            await unit.stage(new_event(trained, source=SOURCE, subject=spec.name, cause=cause))
            return
        failed = TrainingFailed(
            model=spec.name,
            run_id=run.run_id,
            failure=run.details.failure,
            error=(run.error or "")[:2000],
            trigger=run.trigger,
            spec_version=run.spec_version,
            dataset=run.dataset,
            dataset_version=run.dataset_version,
        )
        await unit.stage(new_event(failed, source=SOURCE, subject=spec.name, cause=cause))


def _predict_both(recorded: bytes, reproduced: bytes, holdout: bytes, features: list[str]) -> tuple[Any, Any, int]:
    """Both models' outputs on the recorded held-out rows: labels or values, and probabilities when there are."""
    rows = pd.read_parquet(io.BytesIO(holdout))[features]
    first, second = load_model(recorded), load_model(reproduced)
    outcome, gap = compare_predictions(first.predict(rows), second.predict(rows))
    if outcome != "different" and hasattr(first, "predict_proba") and hasattr(second, "predict_proba"):
        outcome, gap = compare_predictions(first.predict_proba(rows), second.predict_proba(rows))
    return outcome, gap, len(rows)


def model_trained(spec: ModelSpec, run: Run, details: TrainedDetails) -> ModelTrained:
    """The model.trained announcement of a succeeded run: what the validator needs to judge it."""
    return ModelTrained(
        model=spec.name,
        run_id=run.run_id,
        task=spec.task,
        spec_version=run.spec_version,
        spec_digest=run.spec_digest,
        dataset=run.dataset,
        dataset_version=run.dataset_version,
        dataset_sha256=run.dataset_sha256,
        recent_data_sha256=run.recent_data_sha256,
        trigger=run.trigger,
        artifact=details.artifact,
        profile=details.profile,
        holdout=details.holdout,
        features=details.features,
        target=spec.target,
        estimator_class=details.estimator_class,
        params=details.params,
        metric=spec.metric,
        cv_score=details.cv_score,
        holdout_metrics=details.holdout_metrics,
        training_seconds=details.timings["job_s"],
        code_version=run.code_version,
        seed=spec.seed,
    )
