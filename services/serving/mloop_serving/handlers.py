"""Serving's reactions: load production versions (at start, on model.promoted), score instances, route labels."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from prometheus_client import Counter, Gauge

from mloop_common.artifacts import Artifacts
from mloop_common.bus import classify
from mloop_common.clients import Registry
from mloop_common.contracts import PRODUCTION, AliasView, VersionView
from mloop_common.errors import InvalidInput, NotFound
from mloop_common.events import (
    CANARY,
    CHALLENGER,
    SHADOW,
    Envelope,
    FeedbackRecord,
    ModelPromoted,
    ModelRollout,
    ModelServed,
    new_event,
)
from mloop_common.modelio import load_model
from mloop_common.profile import ReferenceProfile
from mloop_common.retry import Backoff
from mloop_common.telemetry import SpanContext, current_span_context
from mloop_serving import oip
from mloop_serving.batching import Answer, MicroBatcher
from mloop_serving.host import LoadedModel, ModelHost, Rollout, Routed, warmup_instance
from mloop_serving.logbook import SOURCE, Logbook, Publisher, RequestIndex, prediction_fields
from mloop_serving.oip import Encoded, InferCall, check_outputs
from mloop_serving.schemas import Feedback, FeedbackReceipt

INLINE_ROWS = 64  # bigger requests are predicted alone in a thread so the event loop keeps serving
ROLLOUT_ALIASES = (CANARY, SHADOW, CHALLENGER)  # served beside production
REPORT_TIMEOUT = 5.0  # seconds a load report may wait for Kafka; it is a status line, not worth stalling a load
log = logging.getLogger(__name__)


LOAD_FAILED = Gauge(
    "mloop_serving_model_load_failed",
    "1 while the registry's production version of a model could not be loaded here (an older one, or none, serves)",
    ["model"],
)
LOAD_FAILURES = Counter("mloop_serving_model_load_failures_total", "Failed attempts to load a model version", ["model"])
ROUTED = Counter("mloop_serving_routed_requests_total", "Requests answered, by model and route", ["model", "route"])
UNLOGGED = Counter(
    "mloop_serving_unlogged_predictions_total", "Predictions answered with log=false (batch scoring)", ["model"]
)
SHADOW_SCORED = Counter("mloop_serving_shadow_scored_total", "Requests scored by a shadow version", ["model"])
SHADOW_SKIPPED = Counter(
    "mloop_serving_shadow_skipped_total",
    "Requests a shadow version did not score: too many shadow scorings pending, or the shadow failed",
    ["model", "reason"],
)


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
        reports: Publisher | None = None,
        instance: str = "serving",
    ) -> None:
        self.registry = registry
        self.artifacts = artifacts
        self.host = host
        # Each load outcome goes to the registry as model.served, so it can show a version nobody serves.
        self._reports = reports
        self._instance = instance
        self.rollout_failures: dict[tuple[str, str], str] = {}
        self.synced = False
        host.starting = True  # until sync_all has tried every production model
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
        models = await self.registry.list_models()
        names = [model.name for model in models if PRODUCTION in model.aliases]
        outcomes = await asyncio.gather(*(self.ensure_production(name) for name in names), return_exceptions=True)
        for name, outcome in zip(names, outcomes, strict=True):
            failure = self.failures.get(name)
            if isinstance(outcome, BaseException) and failure is not None and failure.retrying:
                self._retry_later(name)
        # Rollouts come second: production answers first. A rollout that fails is reported and waits for its
        # next model.rollout event (or a restart); it never holds up readiness.
        rolled_out = [m.name for m in models if PRODUCTION in m.aliases and set(m.aliases) & set(ROLLOUT_ALIASES)]
        await asyncio.gather(*(self.ensure_rollouts(name) for name in rolled_out), return_exceptions=True)
        freeze_heap()
        self.synced = True
        self.host.starting = False

    async def on_model_promoted(self, promoted: ModelPromoted, event: Envelope) -> None:
        # Ask the registry rather than trust event order: a replayed old promotion must not win. A failure is
        # recorded and raised, so the consumer retries it (until back, if transient) or dead-letters it.
        await self.ensure_production(promoted.model)

    async def on_model_rollout(self, rollout: ModelRollout, event: Envelope) -> None:
        # As for promotions, the registry says where every rollout alias points now; the event is only the cue.
        await self.ensure_rollouts(rollout.model)

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
                # A canary made production is already loaded and warm.
                loaded = await self._hosted_or_load(current)
            except Exception as exc:
                self._failed(name, version, exc)
                if version is not None:
                    await self._report(name, PRODUCTION, version, error=self.failures[name].reason)
                raise
            previous = self.host.swap(loaded)
            self._loaded(name)
            log.info("serving %s v%s (was v%s)", name, loaded.version, previous.version if previous else None)
            await self._report(name, PRODUCTION, loaded.version)

    async def ensure_rollouts(self, name: str) -> None:
        """Host the versions ``name``'s rollout aliases name (canary, shadow, challenger), and only those.

        One alias failing to load leaves it as it was and the others still sync; the first failure is raised.
        """
        async with self._locks[name]:
            failed: Exception | None = None
            for alias in ROLLOUT_ALIASES:
                try:
                    await self._sync_rollout(name, alias)
                    self.rollout_failures.pop((name, alias), None)
                except Exception as exc:
                    failed = failed or exc
                    LOAD_FAILURES.labels(name).inc()
                    self.rollout_failures[(name, alias)] = f"{type(exc).__name__}: {exc}"[:300]
                    log.error("could not load %s %s: %s", name, alias, self.rollout_failures[(name, alias)])
            if failed is not None:
                raise failed

    async def _sync_rollout(self, name: str, alias: str) -> None:
        target = await self.registry.alias(name, alias)
        if target is None:
            if self.host.set_rollout(name, None, alias) is not None:
                log.info("%s %s no longer served", name, alias)
            return
        percent = await self._canary_share(name, target) if alias == CANARY else 0.0
        hosted = self.host.rollout(name, alias)
        if hosted is not None and hosted.model.version == target.version and hosted.percent == percent:
            return
        try:
            model = await self._hosted_or_load(target)
        except Exception as exc:
            await self._report(name, alias, target.version, error=f"{type(exc).__name__}: {exc}"[:300])
            raise
        self.host.set_rollout(name, Rollout(alias, model, percent), alias)
        log.info("serving %s v%s as %s%s", name, model.version, alias, f" ({percent}%)" if alias == CANARY else "")
        await self._report(name, alias, model.version)

    async def _hosted_or_load(self, version: VersionView) -> LoadedModel:
        hosted = self.host.loaded(version.model, version.version)
        return hosted if hosted is not None else await asyncio.to_thread(self._load, version)

    async def _canary_share(self, name: str, target: AliasView) -> float:
        """The canary's share: the larger of its own spec's and the model's current spec's, as the registry rules."""
        own = await self.registry.model(name, target.spec_version)
        current = await self.registry.model(name)
        return max(own.spec.promotion.canary_percent, current.spec.promotion.canary_percent)

    async def _report(self, name: str, alias: str, version: int, *, error: str | None = None) -> None:
        """Tell the registry (model.served) what this instance made of ``alias``; a lost report is only logged."""
        if self._reports is None:
            return
        served = ModelServed(
            model=name,
            alias=alias,
            version=version,
            instance=self._instance,
            loaded=error is None,
            error=error,
            serving_version=self.host.current_version(name, alias),
        )
        try:
            await asyncio.wait_for(
                self._reports.publish(new_event(served, source=SOURCE, subject=name)), REPORT_TIMEOUT
            )
        except Exception as exc:
            log.warning("could not report loading %s %s v%s to the registry: %r", name, alias, version, exc)

    def problems(self) -> list[str]:
        """One line per model whose production version (or a rollout) is not the one served here."""
        return [failure.describe() for _, failure in sorted(self.failures.items())] + [
            f"{name}: {alias} failed to load ({reason})"
            for (name, alias), reason in sorted(self.rollout_failures.items())
        ]

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


YOUNG_COLLECTION_THRESHOLD = 20_000  # net new container objects between young collections (Python's default: 700)


def freeze_heap() -> None:
    """Take what is alive now (the libraries, the models just loaded) out of the cyclic garbage collector's sight,
    and collect the young generation less often.

    A full collection walks every tracked object: with scikit-learn, pandas and a model in memory some 200,000,
    about 90 ms of a core, on the event loop, every few seconds under load; each stalled every request in flight
    (most of serving's p99). Frozen objects are still freed by reference counting; only cycles among them are
    never collected, which for modules and the models serving starts with is what happens anyway.

    Python's young collection runs every 700 new objects: under load that caught each request in flight, moved
    its objects to the middle generation and walked them there again (some 6% of a request's CPU). At 20,000
    most of a request's objects are already freed when it runs; cyclic garbage waits a little longer for it.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, max(middle, 20), max(old, 20))


@dataclass(frozen=True)
class Scored:
    """A model's answer to some instances, one request id per instance, and the route that chose the model."""

    model: LoadedModel
    predictions: list[Any]
    probabilities: list[list[float]] | None
    request_ids: list[str]
    route: str


@dataclass(frozen=True, slots=True)
class _Unlogged:
    """What logging a request's predictions needs besides them: its micro-batch logs them all at once."""

    instances: list[dict[str, Any]]
    request_ids: list[str]
    route: str
    context: SpanContext  # the request's span, which the log's event links to


@dataclass(frozen=True)
class ScoredCall:
    """An inference request scored: the answer and the route that chose its model."""

    scored: Scored
    routed: Routed


def encode_answer(call: InferCall, scored: ScoredCall) -> Encoded:
    """The protocol's answer to ``call``, as it asked for it (JSON or binary outputs)."""
    answer, model = scored.scored, scored.routed.model
    return oip.encode_response(
        call, model, answer.predictions, answer.probabilities, answer.request_ids, route=scored.routed.route
    )


class Scorer:
    """Scores instances with a loaded model, logs every prediction, and routes labels to their model.

    Requests without a version go to production or, for its share of routing keys, the canary; a shadow
    version scores a copy of them in the background. A version (or alias) named by the client answers itself.
    """

    def __init__(
        self,
        *,
        host: ModelHost,
        requests: RequestIndex,
        logbook: Logbook,
        clock: Callable[[], datetime],
        new_id: Callable[[], str],
        max_instances: int = 10_000,
        max_shadow_pending: int = 8,
        batcher: MicroBatcher | None = None,
        log_predictions: bool = True,
    ) -> None:
        self.host = host
        self.requests = requests
        self.logbook = logbook
        self.clock = clock
        self.new_id = new_id
        self.max_instances = max_instances
        self.max_shadow_pending = max_shadow_pending
        self.log_predictions = log_predictions
        self._shadows: set[asyncio.Task[None]] = set()
        self.batcher: MicroBatcher | None = None
        self.batch_with(batcher)

    def batch_with(self, batcher: MicroBatcher | None) -> None:
        """Score small requests in ``batcher``'s micro-batches, logged a batch at a time; None: each on its own."""
        if batcher is not None:
            batcher.on_scored = self._log_batch
        self.batcher = batcher

    async def score(
        self,
        name: str,
        instances: list[dict[str, Any]],
        version: int | None = None,
        *,
        alias: str | None = None,
        key: str | None = None,
        log: bool = True,
    ) -> Scored:
        """Predict ``instances`` with model ``name``: routed by ``key``, or the ``version`` or ``alias`` named.

        ``log=False`` (batch scoring) logs no prediction and scores no shadow copy: drift never sees them.
        """
        request_ids = self._ids(instances)
        routed = self._pick(name, version, alias, key or request_ids[0])
        scored = await self._score(routed, instances, request_ids, log=log)
        if version is None and alias is None and log:
            self._shadow(name, instances, request_ids)
        return scored

    async def infer(
        self, name: str, call: InferCall, version: int | None = None, *, key: str | None = None
    ) -> tuple[Encoded, Routed]:
        """An Open Inference Protocol request scored like any other, answered in the protocol's encoding.

        Routed by ``key``, else by the request's ``id``, so a client that reuses its ids is sticky too.
        """
        scored = await self.score_call(name, call, version, key=key)
        return encode_answer(call, scored), scored.routed

    async def score_call(
        self, name: str, call: InferCall, version: int | None = None, *, key: str | None = None
    ) -> ScoredCall:
        """``infer`` up to the answer's encoding: scored, logged, and the shadow's copy sent."""
        routed = self._pick(name, version, None, key or call.id or self.new_id())
        check_outputs(call, routed.model)
        instances = oip.instances(call, routed.model)
        request_ids = self._ids(instances)
        # The tensors' datatypes have checked every value: the rows need no second check
        scored = await self._score(routed, instances, request_ids, rows=routed.model.checked_rows(instances))
        if version is None:
            self._shadow(name, instances, request_ids)
        return ScoredCall(scored, routed)

    async def close(self) -> None:
        """Let pending shadow scorings finish (their records are logged before the log stops)."""
        await asyncio.gather(*self._shadows, return_exceptions=True)

    def _ids(self, instances: list[dict[str, Any]]) -> list[str]:
        if len(instances) > self.max_instances:
            raise InvalidInput(f"at most {self.max_instances} instances per request", field="instances")
        return [self.new_id() for _ in instances]

    def _pick(self, name: str, version: int | None, alias: str | None, key: str) -> Routed:
        if alias is not None:
            return self.host.explicit(self.host.by_alias(name, alias))
        if version is not None:
            return self.host.explicit(self.host.get(name, version))
        return self.host.route(name, key)

    async def _score(
        self,
        routed: Routed,
        instances: list[dict[str, Any]],
        request_ids: list[str],
        *,
        log: bool = True,
        rows: list[list[Any]] | None = None,
    ) -> Scored:
        """Predict, and log the predictions under the version that answered (published later, in batches).

        ``rows``: the instances as the model's rows, when already checked (else checked here)."""
        model = routed.model
        if rows is None:
            rows = model.rows(instances)
        logged = False  # by the micro-batch
        if self.batcher is not None and len(rows) <= INLINE_ROWS:
            unlogged = None
            if log and self.log_predictions:
                unlogged = _Unlogged(instances, request_ids, routed.route, current_span_context())
            predictions, probabilities = await self.batcher.predict(model, rows, unlogged)
            logged = unlogged is not None
        elif len(rows) <= INLINE_ROWS:
            predictions, probabilities = model.predict(model.frame_of(rows))
        else:
            predictions, probabilities = await asyncio.to_thread(lambda: model.predict(model.frame_of(rows)))
        for request_id in request_ids:
            self.requests.add(request_id, model.name, model.version)
        if not log:
            UNLOGGED.labels(model.name).inc(len(request_ids))
        elif not logged:
            self._log(model, instances, request_ids, predictions, probabilities, routed.route)
        ROUTED.labels(model.name, routed.route).inc()
        return Scored(model, predictions, probabilities, request_ids, routed.route)

    def _log(
        self,
        model: LoadedModel,
        instances: list[dict[str, Any]],
        request_ids: list[str],
        predictions: list[Any],
        probabilities: list[list[float]] | None,
        route: Literal["champion", "canary", "shadow", "challenger"],
    ) -> None:
        """Log one request's predictions (one scored outside a micro-batch, or a shadow's copy)."""
        if not self.log_predictions:
            return
        unlogged = _Unlogged(instances, request_ids, route, current_span_context())
        self._log_batch(model, [(unlogged, (predictions, probabilities))])

    def _log_batch(self, model: LoadedModel, answered: list[tuple[_Unlogged | None, Answer]]) -> None:
        """Log a micro-batch's predictions in one pass, each request's with its own span to link to."""
        now = self.clock()
        records: list[dict[str, Any]] = []
        contexts: list[SpanContext] = []
        for unlogged, (predictions, probabilities) in answered:
            if unlogged is None:  # not to be logged (batch scoring, or logging off)
                continue
            instances, route = unlogged.instances, unlogged.route
            for i, request_id in enumerate(unlogged.request_ids):
                probability = probabilities[i] if probabilities else None
                records.append(prediction_fields(request_id, now, instances[i], predictions[i], probability, route))
            contexts += [unlogged.context] * len(unlogged.request_ids)
        if records:
            self.logbook.log_prediction_fields(model.name, model.version, records, contexts)

    def _shadow(self, name: str, instances: list[dict[str, Any]], request_ids: list[str]) -> None:
        """Score a copy of a production request with the shadow version, off the response path.

        Bounded: with ``max_shadow_pending`` scorings already running, the copy is skipped (and counted)
        rather than queued, so a slow shadow can never build a backlog that slows production.
        """
        shadow = self.host.shadow(name)
        if shadow is None:
            return
        if len(self._shadows) >= self.max_shadow_pending:
            SHADOW_SKIPPED.labels(name, "busy").inc()
            return
        task = asyncio.create_task(self._score_shadow(shadow, instances, request_ids), name=f"shadow-{name}")
        self._shadows.add(task)
        task.add_done_callback(self._shadows.discard)

    async def _score_shadow(self, model: LoadedModel, instances: list[dict[str, Any]], request_ids: list[str]) -> None:
        try:
            frame = model.frame(instances)
            predictions, probabilities = await asyncio.to_thread(model.predict, frame)
        except Exception as exc:  # the shadow's failure is its own: the client already has its answer
            SHADOW_SKIPPED.labels(model.name, "failed").inc()
            log.warning("shadow %s v%s failed: %r", model.name, model.version, exc)
            return
        self._log(model, instances, request_ids, predictions, probabilities, "shadow")
        SHADOW_SCORED.labels(model.name).inc()

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
