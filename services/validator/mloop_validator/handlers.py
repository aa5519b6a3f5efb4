"""Validator reaction: model.trained -> evaluate candidate vs champion -> register or model.rejected."""

from __future__ import annotations

import asyncio
import io
import logging
import uuid
from typing import Any

import pandas as pd

from mloop_common.clients import RegistryClient
from mloop_common.db import already_handled, claim_event, enqueue
from mloop_common.events import Envelope, ModelRejected, ModelTrained, new_event
from mloop_common.modelio import load_model
from mloop_common.runtime import Runtime
from mloop_common.spec import ModelSpec
from mloop_validator import store
from mloop_validator.evaluate import score_model
from mloop_validator.policy import decide

SOURCE = "mloop/validator"
log = logging.getLogger(__name__)


class Validator:
    def __init__(self, runtime: Runtime, registry: RegistryClient) -> None:
        self.runtime = runtime
        self.registry = registry
        self.consumer = runtime.group_id

    def _load(self, uri: str, sha256: str) -> Any:
        return load_model(self.runtime.artifacts.get(uri, sha256))

    async def on_model_trained(self, event: Envelope) -> None:
        trained = event.payload()
        assert isinstance(trained, ModelTrained)
        async with self.runtime.transaction() as session:
            if await already_handled(session, self.consumer, event.id):
                return
        spec = ModelSpec.model_validate((await self.registry.model(trained.model, trained.spec_version))["spec"])
        champion = await self.registry.alias(trained.model, "production")
        holdout = pd.read_parquet(io.BytesIO(self.runtime.artifacts.get(trained.holdout.uri, trained.holdout.sha256)))
        candidate_model = self._load(trained.artifact.uri, trained.artifact.sha256)
        common = {
            "target": trained.target,
            "task": trained.task,
            "metric": spec.metric,
            "slices": spec.promotion.slices,
        }
        candidate_metrics, candidate_slices = await asyncio.to_thread(
            score_model, candidate_model, holdout, features=trained.features, **common
        )
        champion_metrics = champion_slices = None
        if champion is not None:
            champion_model = self._load(champion["artifact"]["uri"], champion["artifact"]["sha256"])
            champion_metrics, champion_slices = await asyncio.to_thread(
                score_model, champion_model, holdout, features=champion["features"], **common
            )
        decision = decide(
            spec.metric, candidate_metrics, champion_metrics, candidate_slices, champion_slices or {}, spec.promotion
        )
        evaluation_id = uuid.uuid4().hex
        registered_version = None
        if decision.register:
            registered = await self.registry.register(
                trained.model,
                {
                    "run_id": trained.run_id,
                    "evaluation_id": evaluation_id,
                    "spec_version": trained.spec_version,
                    "task": trained.task,
                    "artifact": trained.artifact.model_dump(),
                    "profile": trained.profile.model_dump(),
                    "features": trained.features,
                    "metrics": candidate_metrics,
                    "lineage": {
                        "dataset": trained.dataset,
                        "dataset_version": trained.dataset_version,
                        "dataset_sha256": trained.dataset_sha256,
                        "recent_data_sha256": trained.recent_data_sha256,
                        "trigger": trained.trigger,
                        "code_version": trained.code_version,
                        "estimator_class": trained.estimator_class,
                        "params": trained.params,
                        "seed": trained.seed,
                        "training_seconds": trained.training_seconds,
                        "trained_event_id": event.id,
                        "correlation_id": event.correlationid,
                        "champion_version": champion["version"] if champion else None,
                    },
                    "correlation_id": event.correlationid,
                    "causation_id": event.id,
                },
            )
            registered_version = registered["version"]
            # The registry is idempotent per run: a replay after a crash gets the same version back.
            evaluation_id = registered["evaluation_id"]
        log.info(
            "%s run %s: %s (%s)",
            trained.model,
            trained.run_id,
            "registered" if decision.register else "rejected",
            "; ".join(decision.reasons),
        )
        async with self.runtime.transaction() as session:
            if not await claim_event(session, self.consumer, event):
                return
            await store.add(
                session,
                {
                    "id": evaluation_id,
                    "model": trained.model,
                    "run_id": trained.run_id,
                    "decision": "registered" if decision.register else "rejected",
                    "reasons": decision.reasons,
                    "metric": spec.metric,
                    "candidate_metrics": candidate_metrics,
                    "champion_version": champion["version"] if champion else None,
                    "champion_metrics": champion_metrics,
                    "slices": {"candidate": candidate_slices, "champion": champion_slices},
                    "registered_version": registered_version,
                    "holdout_rows": len(holdout),
                },
            )
            if not decision.register:
                await enqueue(
                    session,
                    new_event(
                        ModelRejected(
                            model=trained.model,
                            run_id=trained.run_id,
                            evaluation_id=evaluation_id,
                            reasons=decision.reasons,
                            candidate_metrics=candidate_metrics,
                            champion_version=champion["version"] if champion else None,
                            champion_metrics=champion_metrics,
                        ),
                        source=SOURCE,
                        subject=trained.model,
                        cause=event,
                    ),
                )
