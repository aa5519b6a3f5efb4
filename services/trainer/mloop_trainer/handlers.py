"""Trainer reactions: data.published and drift.detected (retrain) become runs and model.trained."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

from mloop_common.clients import RegistryClient
from mloop_common.db import already_handled, claim_event, enqueue
from mloop_common.errors import TransientError
from mloop_common.events import ArtifactPointer, DataPublished, DriftDetected, Envelope, ModelTrained, new_event
from mloop_common.runtime import Runtime
from mloop_common.spec import ModelSpec, spec_digest
from mloop_trainer import store
from mloop_trainer.jobs import run_training_job
from mloop_trainer.training import TrainingError

SOURCE = "mloop/trainer"
log = logging.getLogger(__name__)


class Trainer:
    """Handlers with their dependencies passed in (built by the composition root)."""

    def __init__(self, runtime: Runtime, registry: RegistryClient, new_pool: Callable[[], Executor]) -> None:
        self.runtime = runtime
        self.registry = registry
        self._new_pool = new_pool
        self.pool = new_pool()
        self.consumer = runtime.group_id
        self.active: dict[str, dict[str, Any]] = {}  # runs being trained right now, for GET /v1/runs

    async def on_data_published(self, event: Envelope) -> None:
        payload = event.payload()
        assert isinstance(payload, DataPublished)
        async with self.runtime.transaction() as session:
            if await already_handled(session, self.consumer, event.id):
                return
        models = await self.registry.models_for_dataset(payload.dataset)
        data = self.runtime.artifacts.get(payload.snapshot.uri, payload.snapshot.sha256)
        dataset = {
            "name": payload.dataset,
            "version": payload.version,
            "snapshot_uri": payload.snapshot.uri,
            "snapshot_sha256": payload.snapshot.sha256,
            "target": payload.target,
            "time_column": payload.time_column,
        }
        runs = [
            await self._train(
                ModelSpec.model_validate(m["spec"]), m["spec_version"], dataset, data, None, trigger="data.published"
            )
            for m in models
        ]
        async with self.runtime.transaction() as session:
            if not await claim_event(session, self.consumer, event):
                return
            await store.remember_dataset(session, dataset)
            for run in runs:
                await self._record(session, run, event)

    async def on_drift_detected(self, event: Envelope) -> None:
        payload = event.payload()
        assert isinstance(payload, DriftDetected)
        if payload.action != "retrain" or payload.recent_data is None:
            return  # an "investigate" verdict is for humans; nothing to train on
        async with self.runtime.transaction() as session:
            if await already_handled(session, self.consumer, event.id):
                return
        production = await self.registry.alias(payload.model, "production")
        if production is None or production["version"] != payload.version:
            # The model moved on since this drift was seen (a retrain already landed): nothing to do.
            log.info(
                "ignoring drift on %s v%s: production is now v%s",
                payload.model,
                payload.version,
                production["version"] if production else None,
            )
            async with self.runtime.transaction() as session:
                await claim_event(session, self.consumer, event)
            return
        model = await self.registry.model(payload.model)
        spec = ModelSpec.model_validate(model["spec"])
        async with self.runtime.transaction() as session:
            dataset = await store.latest_dataset(session, spec.dataset)
        data = self.runtime.artifacts.get(dataset["snapshot_uri"], dataset["snapshot_sha256"])
        recent = self.runtime.artifacts.get(payload.recent_data.uri, payload.recent_data.sha256)
        run = await self._train(
            spec,
            model["spec_version"],
            dataset,
            data,
            recent,
            trigger="drift.detected",
            recent_sha256=payload.recent_data.sha256,
        )
        async with self.runtime.transaction() as session:
            if await claim_event(session, self.consumer, event):
                await self._record(session, run, event)

    async def _train(
        self,
        spec: ModelSpec,
        spec_version: int,
        dataset: dict[str, Any],
        data: bytes,
        recent: bytes | None,
        *,
        trigger: str,
        recent_sha256: str | None = None,
    ) -> dict[str, Any]:
        run: dict[str, Any] = {
            "run_id": uuid.uuid4().hex,
            "model": spec.name,
            "trigger": trigger,
            "spec_version": spec_version,
            "spec_digest": spec_digest(spec),
            "spec": spec,
            "dataset": dataset["name"],
            "dataset_version": dataset["version"],
            "dataset_sha256": dataset["snapshot_sha256"],
            "recent_data_sha256": recent_sha256,
            "started_at": datetime.now(UTC),
        }
        log.info("training %s on %s v%s (%s)", spec.name, dataset["name"], dataset["version"], trigger)
        loop = asyncio.get_running_loop()
        self.active[run["run_id"]] = {
            key: run[key] for key in ("run_id", "model", "trigger", "dataset", "dataset_version", "started_at")
        }
        try:
            result = await loop.run_in_executor(
                self.pool, run_training_job, spec.model_dump(by_alias=True), data, recent
            )
        except TrainingError as exc:
            log.warning("run %s for %s failed: %s", run["run_id"], spec.name, exc)
            return {**run, "status": "failed", "error": str(exc)}
        except BrokenProcessPool as exc:
            # A worker died (out of memory, killed): start fresh workers and let the bus retry the event.
            log.error("training worker died during run %s; restarting the pool", run["run_id"])
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
            raise TransientError("training worker died; the run will be retried") from exc
        finally:
            self.active.pop(run["run_id"], None)
        artifacts = self.runtime.artifacts
        run["model_ref"] = artifacts.put(result.pop("model"), kind="models", suffix=".skops")
        profile = json.dumps(result.pop("profile"), sort_keys=True).encode()
        run["profile_ref"] = artifacts.put(profile, kind="profiles", suffix=".json")
        run["holdout_ref"] = artifacts.put(result.pop("holdout"), kind="holdouts", suffix=".parquet")
        log.info(
            "run %s: %s cv=%.4f in %.1fs",
            run["run_id"],
            result["estimator_class"],
            result["cv_score"],
            result["timings"]["job_s"],
        )
        return {**run, "status": "succeeded", "result": result}

    async def _record(self, session: Any, run: dict[str, Any], cause: Envelope) -> None:
        spec: ModelSpec = run["spec"]
        details: dict[str, Any] = {"seed": spec.seed}
        if run["status"] == "succeeded":
            result = run["result"]
            details.update(result)
            details["artifact"] = {"uri": run["model_ref"].uri, "sha256": run["model_ref"].sha256}
            details["profile"] = {"uri": run["profile_ref"].uri, "sha256": run["profile_ref"].sha256}
            details["holdout"] = {"uri": run["holdout_ref"].uri, "sha256": run["holdout_ref"].sha256}
        await store.add_run(
            session,
            {
                "run_id": run["run_id"],
                "model": run["model"],
                "status": run["status"],
                "trigger": run["trigger"],
                "trigger_event_id": cause.id,
                "spec_version": run["spec_version"],
                "spec_digest": run["spec_digest"],
                "dataset": run["dataset"],
                "dataset_version": run["dataset_version"],
                "dataset_sha256": run["dataset_sha256"],
                "recent_data_sha256": run["recent_data_sha256"],
                "details": details,
                "error": run.get("error"),
                "code_version": self.runtime.code_version,
                "started_at": run["started_at"],
            },
        )
        if run["status"] != "succeeded":
            return
        await enqueue(
            session,
            new_event(
                ModelTrained(
                    model=spec.name,
                    run_id=run["run_id"],
                    task=spec.task,
                    spec_version=run["spec_version"],
                    spec_digest=run["spec_digest"],
                    dataset=run["dataset"],
                    dataset_version=run["dataset_version"],
                    dataset_sha256=run["dataset_sha256"],
                    recent_data_sha256=run["recent_data_sha256"],
                    trigger=run["trigger"],
                    artifact=ArtifactPointer(**details["artifact"]),
                    profile=ArtifactPointer(**details["profile"]),
                    holdout=ArtifactPointer(**details["holdout"]),
                    features=result["features"],
                    target=spec.target,
                    estimator_class=result["estimator_class"],
                    params=result["params"],
                    metric=spec.metric,
                    cv_score=result["cv_score"],
                    holdout_metrics=result["holdout_metrics"],
                    training_seconds=result["timings"]["job_s"],
                    code_version=self.runtime.code_version,
                    seed=spec.seed,
                ),
                source=SOURCE,
                subject=spec.name,
                cause=cause,
            ),
        )
