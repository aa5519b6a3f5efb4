"""Validator reaction: model.trained -> evaluate candidate vs champion -> register or model.rejected."""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import uuid
from typing import Any

import pandas as pd

from mloop_common.artifacts import Artifacts
from mloop_common.clients import Registry
from mloop_common.contracts import PRODUCTION, AliasView, Lineage, RegisterVersion
from mloop_common.events import Envelope, ModelRejected, ModelTrained, new_event
from mloop_common.modelio import load_model
from mloop_common.uow import Store
from mloop_validator.entities import Evaluation, SlicePair
from mloop_validator.evaluate import score_model
from mloop_validator.policy import decide
from mloop_validator.store import ValidatorUnit

SOURCE = "mloop/validator"
log = logging.getLogger(__name__)


class Validator:
    """Judges each trained candidate; its ports are passed in by the composition root (or a test)."""

    def __init__(self, *, store: Store[ValidatorUnit], registry: Registry, artifacts: Artifacts) -> None:
        self.store = store
        self.registry = registry
        self.artifacts = artifacts

    def _load(self, uri: str, sha256: str) -> Any:
        return load_model(self.artifacts.get(uri, sha256))

    async def on_model_trained(self, trained: ModelTrained, event: Envelope) -> None:
        async with self.store.transaction() as unit:
            if await unit.handled(event):
                return
        spec = (await self.registry.model(trained.model, trained.spec_version)).spec
        champion = await self.registry.alias(trained.model, PRODUCTION)
        holdout = pd.read_parquet(io.BytesIO(self.artifacts.get(trained.holdout.uri, trained.holdout.sha256)))
        candidate_model = self._load(trained.artifact.uri, trained.artifact.sha256)
        # Both models are scored the same way on the same rows; only their features differ.
        score = functools.partial(
            score_model, target=trained.target, task=trained.task, metric=spec.metric, slices=spec.promotion.slices
        )
        candidate_metrics, candidate_slices = await asyncio.to_thread(
            score, candidate_model, holdout, features=trained.features
        )
        champion_metrics = champion_slices = None
        if champion is not None:
            champion_model = self._load(champion.artifact.uri, champion.artifact.sha256)
            champion_metrics, champion_slices = await asyncio.to_thread(
                score, champion_model, holdout, features=champion.features
            )
        decision = decide(
            spec.metric, candidate_metrics, champion_metrics, candidate_slices, champion_slices or {}, spec.promotion
        )
        evaluation_id = uuid.uuid4().hex
        registered_version = None
        if decision.register:
            registered = await self.registry.register(
                trained.model, _registration(trained, event, evaluation_id, candidate_metrics, champion)
            )
            registered_version = registered.version
            # The registry is idempotent per run: a replay after a crash gets the same version back.
            evaluation_id = registered.evaluation_id
        outcome = "registered" if decision.register else "rejected"
        log.info("%s run %s: %s (%s)", trained.model, trained.run_id, outcome, "; ".join(decision.reasons))
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            await unit.add_evaluation(
                Evaluation(
                    id=evaluation_id,
                    model=trained.model,
                    run_id=trained.run_id,
                    decision=outcome,
                    reasons=decision.reasons,
                    metric=spec.metric,
                    candidate_metrics=candidate_metrics,
                    champion_version=champion.version if champion else None,
                    champion_metrics=champion_metrics,
                    slices=SlicePair(candidate=candidate_slices, champion=champion_slices),
                    registered_version=registered_version,
                    holdout_rows=len(holdout),
                )
            )
            if not decision.register:
                rejected = ModelRejected(
                    model=trained.model,
                    run_id=trained.run_id,
                    evaluation_id=evaluation_id,
                    reasons=decision.reasons,
                    candidate_metrics=candidate_metrics,
                    champion_version=champion.version if champion else None,
                    champion_metrics=champion_metrics,
                )
                await unit.stage(new_event(rejected, source=SOURCE, subject=trained.model, cause=event))


def _registration(
    trained: ModelTrained,
    event: Envelope,
    evaluation_id: str,
    metrics: dict[str, float],
    champion: AliasView | None,
) -> RegisterVersion:
    """What the registry records for a candidate that passed: artifacts, metrics and full lineage."""
    return RegisterVersion(
        run_id=trained.run_id,
        evaluation_id=evaluation_id,
        spec_version=trained.spec_version,
        task=trained.task,
        artifact=trained.artifact,
        profile=trained.profile,
        features=trained.features,
        metrics=metrics,
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
            champion_version=champion.version if champion else None,
        ),
        correlation_id=event.correlationid,
        causation_id=event.id,
    )
