"""Serving's reactions: load production versions (at start, on model.promoted), score instances, route labels."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mloop_common.artifacts import Artifacts
from mloop_common.clients import Registry
from mloop_common.contracts import PRODUCTION, VersionView
from mloop_common.errors import InvalidInput, NotFound
from mloop_common.events import Envelope, FeedbackRecord, ModelPromoted, PredictionRecord
from mloop_common.modelio import load_model
from mloop_common.profile import ReferenceProfile
from mloop_serving.host import LoadedModel, ModelHost, warmup_instance
from mloop_serving.logbook import Logbook, RequestIndex
from mloop_serving.oip import InferRequest, InferResponse, infer_response, oip_instances
from mloop_serving.schemas import Feedback, FeedbackReceipt

INLINE_ROWS = 64  # bigger batches are predicted in a thread so the event loop keeps serving
log = logging.getLogger(__name__)


class Loader:
    """Keeps the production version of every model in ``host``, as the registry says it is."""

    def __init__(self, *, registry: Registry, artifacts: Artifacts, host: ModelHost) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.host = host
        self.synced = False
        self._lock = asyncio.Lock()

    async def sync_all(self) -> None:
        """Load the production version of every model the registry knows."""
        for model in await self.registry.list_models():
            if PRODUCTION in model.aliases:
                await self.ensure_production(model.name)
        self.synced = True

    async def on_model_promoted(self, promoted: ModelPromoted, event: Envelope) -> None:
        # Ask the registry rather than trust event order: a replayed old promotion must not win.
        await self.ensure_production(promoted.model)

    async def ensure_production(self, name: str) -> None:
        """Load, warm and swap in ``name``'s production version; a version that fails to load swaps nothing."""
        async with self._lock:
            current = await self.registry.alias(name, PRODUCTION)
            if current is None or current.version == self.host.current_version(name):
                return
            loaded = await asyncio.to_thread(self._load, current)
            previous = self.host.swap(loaded)
            log.info("serving %s v%s (was v%s)", name, loaded.version, previous.version if previous else None)

    def _load(self, version: VersionView) -> LoadedModel:
        """Verify, deserialise safely and warm a version; runs in a worker thread."""
        estimator = load_model(self.artifacts.get(version.artifact.uri, version.artifact.sha256))
        profile = ReferenceProfile.from_json(self.artifacts.get(version.profile.uri, version.profile.sha256))
        features = list(version.features)
        model = LoadedModel(
            name=version.model,
            version=version.version,
            task=version.task,
            features=features,
            kinds={f: profile.kind_of(f) for f in features},
            estimator=estimator,
            classes=[c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])],
        )
        model.predict(model.frame([warmup_instance(profile, features)]))
        return model


@dataclass(frozen=True)
class Scored:
    """A model's answer to some instances, one request id per instance."""

    model: LoadedModel
    predictions: list[Any]
    probabilities: list[list[float]] | None
    request_ids: list[str]


class Scorer:
    """Scores instances with a loaded model, logs every prediction, and routes labels to their model."""

    def __init__(
        self,
        *,
        host: ModelHost,
        requests: RequestIndex,
        logbook: Logbook,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        max_instances: int = 10_000,
    ) -> None:
        self.host = host
        self.requests = requests
        self.logbook = logbook
        self.clock = clock
        self.new_id = new_id
        self.max_instances = max_instances

    async def score(self, name: str, instances: list[dict[str, Any]], version: int | None = None) -> Scored:
        """Predict ``instances`` with model ``name`` (production, or ``version`` if that is the one loaded)."""
        return await self._score(self.host.get(name, version), instances)

    async def infer(self, name: str, request: InferRequest, version: int | None = None) -> InferResponse:
        """An Open Inference Protocol request scored like any other, answered in the protocol's shape."""
        model = self.host.get(name, version)
        scored = await self._score(model, oip_instances(request, model))
        return infer_response(request, model, scored.predictions, scored.probabilities, scored.request_ids)

    async def _score(self, model: LoadedModel, instances: list[dict[str, Any]]) -> Scored:
        """Predict, give each instance a request id, and log the predictions (published later, in batches)."""
        if len(instances) > self.max_instances:
            raise InvalidInput(f"at most {self.max_instances} instances per request", field="instances")
        frame = model.frame(instances)
        if len(instances) <= INLINE_ROWS:
            predictions, probabilities = model.predict(frame)
        else:
            predictions, probabilities = await asyncio.to_thread(model.predict, frame)
        now = self.clock()
        request_ids = [self.new_id() for _ in instances]
        records = []
        for i, request_id in enumerate(request_ids):
            self.requests.add(request_id, model.name, model.version)
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    timestamp=now,
                    inputs=instances[i],
                    prediction=predictions[i],
                    probabilities=probabilities[i] if probabilities else None,
                )
            )
        self.logbook.log_predictions(model.name, model.version, records)
        return Scored(model, predictions, probabilities, request_ids)

    def record_feedback(self, items: Sequence[Feedback]) -> FeedbackReceipt:
        """Log each label for the model that answered its request (remembered here, or named by the item).

        Labels whose model is unknown are reported back; if none is known the whole call is NotFound.
        """
        if not items:
            raise InvalidInput("no feedback given", field="body")
        now = self.clock()
        unknown: list[str] = []
        by_model: dict[str, list[FeedbackRecord]] = {}
        for item in items:
            answered_by = self.requests.get(item.request_id)
            model = answered_by[0] if answered_by else item.model
            if model is None:
                unknown.append(item.request_id)
                continue
            by_model.setdefault(model, []).append(
                FeedbackRecord(request_id=item.request_id, label=item.label, timestamp=now)
            )
        if unknown and not by_model:
            raise NotFound(f"unknown request id(s): {unknown[:10]}", field="request_id")
        for model, records in by_model.items():
            self.logbook.log_feedback(model, records)
        return FeedbackReceipt(accepted=len(items) - len(unknown), unknown=unknown)
