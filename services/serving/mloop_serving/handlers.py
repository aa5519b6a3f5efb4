"""Serving's reactions: load production versions (at start, on model.promoted), score instances, route labels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import Counter, Gauge

from mloop_common.artifacts import Artifacts
from mloop_common.bus import classify
from mloop_common.clients import Registry
from mloop_common.contracts import PRODUCTION, VersionView
from mloop_common.errors import InvalidInput, NotFound
from mloop_common.events import Envelope, FeedbackRecord, ModelPromoted, PredictionRecord
from mloop_common.modelio import load_model
from mloop_common.profile import ReferenceProfile
from mloop_common.retry import Backoff
from mloop_serving import oip
from mloop_serving.host import LoadedModel, ModelHost, warmup_instance
from mloop_serving.logbook import Logbook, RequestIndex
from mloop_serving.oip import Encoded, InferCall, check_outputs
from mloop_serving.schemas import Feedback, FeedbackReceipt

INLINE_ROWS = 64  # bigger batches are predicted in a thread so the event loop keeps serving
log = logging.getLogger(__name__)


LOAD_FAILED = Gauge(
    "mloop_serving_model_load_failed",
    "1 while the registry's production version of a model could not be loaded here (an older one, or none, serves)",
    ["model"],
)
LOAD_FAILURES = Counter("mloop_serving_model_load_failures_total", "Failed attempts to load a model version", ["model"])


@dataclass(frozen=True)
class LoadFailure:
    """The last failed attempt to bring a model's production version into serving."""

    model: str
    version: int | None  # None: the registry could not even say which version
    reason: str
    serving: int | None  # the version still served, if any
    retrying: bool  # transient (a dependency away): retried in the background; else the next promotion retries

    def describe(self) -> str:
        wanted = f"v{self.version}" if self.version is not None else "the production version"
        serving = f"serving v{self.serving}" if self.serving is not None else "not served"
        return f"{self.model}: {wanted} failed to load ({self.reason}); {serving}" + (
            ", retrying" if self.retrying else ""
        )


class Loader:
    """Keeps the production version of every model in ``host``, as the registry says it is.

    Each model loads on its own: one that fails is reported (``failures``, a metric, the log) and keeps
    its previous version, if it had one, while the others load and serve.
    """

    def __init__(
        self,
        *,
        registry: Registry,
        artifacts: Artifacts,
        host: ModelHost,
        retry_backoff: Backoff = Backoff(initial=1.0, maximum=60.0),
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.host = host
        self.synced = False
        self.failures: dict[str, LoadFailure] = {}
        self._backoff = retry_backoff
        # One lock per model: a slow load of one never holds up a promotion of another.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._retries: dict[str, asyncio.Task[None]] = {}

    async def sync_all(self) -> None:
        """Try to load the production version of every model the registry knows, all at once.

        Returns when each has been tried once; failures are recorded, and those caused by a dependency
        being away are retried in the background. Only the registry's list of models must answer.
        """
        names = [model.name for model in await self.registry.list_models() if PRODUCTION in model.aliases]
        outcomes = await asyncio.gather(*(self.ensure_production(name) for name in names), return_exceptions=True)
        for name, outcome in zip(names, outcomes, strict=True):
            failure = self.failures.get(name)
            if isinstance(outcome, BaseException) and failure is not None and failure.retrying:
                self._retry_later(name)
        self.synced = True

    async def on_model_promoted(self, promoted: ModelPromoted, event: Envelope) -> None:
        # Ask the registry rather than trust event order: a replayed old promotion must not win. A failure is
        # recorded and raised, so the consumer retries it (until back, if transient) or dead-letters it.
        await self.ensure_production(promoted.model)

    async def ensure_production(self, name: str) -> None:
        """Load, warm and swap in ``name``'s production version; one that fails to load swaps nothing."""
        async with self._locks[name]:
            version = None
            try:
                current = await self.registry.alias(name, PRODUCTION)
                if current is None or current.version == self.host.current_version(name):
                    self._loaded(name)  # e.g. a rollback to the version served makes a failed newer one moot
                    return
                version = current.version
                loaded = await asyncio.to_thread(self._load, current)
            except Exception as exc:
                self._failed(name, version, exc)
                raise
            previous = self.host.swap(loaded)
            self._loaded(name)
            log.info("serving %s v%s (was v%s)", name, loaded.version, previous.version if previous else None)

    def problems(self) -> list[str]:
        """One line per model whose production version is not the one served here."""
        return [failure.describe() for _, failure in sorted(self.failures.items())]

    async def close(self) -> None:
        for task in self._retries.values():
            task.cancel()
        await asyncio.gather(*self._retries.values(), return_exceptions=True)

    def _failed(self, name: str, version: int | None, exc: Exception) -> None:
        reason = f"{type(exc).__name__}: {exc}"[:300]
        retrying = classify(exc) == "transient"
        self.failures[name] = LoadFailure(name, version, reason, self.host.current_version(name), retrying)
        LOAD_FAILED.labels(name).set(1)
        LOAD_FAILURES.labels(name).inc()
        log.error("could not load %s v%s: %s", name, version if version is not None else "?", reason)

    def _loaded(self, name: str) -> None:
        if self.failures.pop(name, None) is not None:
            LOAD_FAILED.labels(name).set(0)

    def _retry_later(self, name: str) -> None:
        if name not in self._retries or self._retries[name].done():
            self._retries[name] = asyncio.create_task(self._retry(name), name=f"load-{name}")

    async def _retry(self, name: str) -> None:
        """Try again with backoff while the failure is transient (a dependency away)."""
        attempt = 0
        while name in self.failures and self.failures[name].retrying:
            attempt += 1
            await asyncio.sleep(self._backoff.delay(attempt))
            with contextlib.suppress(Exception):  # recorded by ensure_production
                await self.ensure_production(name)

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

    async def infer(self, name: str, call: InferCall, version: int | None = None) -> Encoded:
        """An Open Inference Protocol request scored like any other, answered in the protocol's encoding."""
        model = self.host.get(name, version)
        check_outputs(call, model)
        scored = await self._score(model, oip.instances(call, model))
        return oip.encode_response(call, model, scored.predictions, scored.probabilities, scored.request_ids)

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
