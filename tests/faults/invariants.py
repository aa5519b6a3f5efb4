"""The invariant checker of the fault suite: what must hold after any fault, read from events and stored rows.

``check(observed)`` is pure: it takes what ``observe`` read from the topics and the services' APIs and
returns the violations (an empty list when every invariant holds). It judges only the subjects the test
names (the models and datasets it created): test stacks share one broker.

Invariants (the names in ``Violation.invariant``):

- ``lost``: an acknowledged event or effect is missing. Every dataset version ingest acknowledged has its
  ``data.published``; every ``data.published`` of a dataset with a model has a training run; every
  succeeded run has its ``model.trained``; every ``model.trained`` has an evaluation; every registered
  version has its ``model.registered``; every move of the production alias has its ``model.promoted``;
  every prediction serving answered is in ``predictions.logged`` and stored by drift.
- ``twice``: an effect applied more than once. Two runs for one (model, trigger event), two evaluations
  for one run, two versions for one run, two audit entries for one registration or promotion, or two
  *different* events (distinct ids) announcing the same fact. The same event id seen twice on a topic is
  a redelivery, which at-least-once delivery allows; consumers must absorb it.
- ``versions``: not exactly one model version per ``model.trained`` (none if the run was rejected).
- ``order``: per key, the first deliveries of ``data.published`` and ``model.registered`` go back in version.
- ``predictions``: a prediction served is logged zero times or more than once (by request id).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mloop_common.events import ALL_TOPICS, PRODUCTION, Envelope
from tests.conftest import topic_events


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str

    def __str__(self) -> str:
        return f"{self.invariant}: {self.detail}"


@dataclass
class Observed:
    """What the events and the stored rows say about the test's own models and datasets.

    ``acknowledged_datasets``: (dataset, version) that ingest answered 201 for; ``served``: request ids serving
    answered, per model; ``stored_predictions``: those of them drift returns. Events are in topic order
    (partition by partition, so per key in offset order), duplicates included.
    """

    models: set[str]
    events: dict[str, list[Envelope]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    versions: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    acknowledged_datasets: set[tuple[str, int]] = field(default_factory=set)
    served: dict[str, list[str]] = field(default_factory=dict)
    stored_predictions: set[str] = field(default_factory=set)

    def of(self, topic: str) -> list[Envelope]:
        return self.events.get(topic, [])

    def distinct(self, topic: str) -> list[Envelope]:
        """First delivery of each event id, in topic order: redeliveries of the same event left out."""
        seen: set[str] = set()
        first = []
        for event in self.of(topic):
            if event.id not in seen:
                seen.add(event.id)
                first.append(event)
        return first

    def redeliveries(self, topic: str) -> int:
        """How many records of ``topic`` repeat an event id already on it."""
        return len(self.of(topic)) - len(self.distinct(topic))


def check(observed: Observed) -> list[Violation]:
    """Every invariant violated by ``observed`` (empty when all hold)."""
    return [
        *_lost(observed),
        *_twice(observed),
        *_versions_per_trained(observed),
        *_order(observed),
        *_predictions(observed),
    ]


def _lost(o: Observed) -> Iterable[Violation]:
    published = {(e.data["dataset"], e.data["version"]): e for e in o.distinct("data.published")}
    for dataset, version in sorted(o.acknowledged_datasets - published.keys()):
        yield Violation("lost", f"{dataset} v{version}: acknowledged by ingest, no data.published")
    triggers = {(r["model"], r["trigger_event_id"]) for r in o.runs}
    for (dataset, version), event in published.items():
        if dataset in o.models and (dataset, event.id) not in triggers:
            yield Violation("lost", f"data.published {dataset} v{version} ({event.id}): no training run")
    trained = {e.data["run_id"]: e for e in o.distinct("model.trained")}
    for run in o.runs:
        if run["status"] == "succeeded" and run["run_id"] not in trained:
            yield Violation("lost", f"run {run['run_id']} of {run['model']} succeeded, no model.trained")
    evaluated = {e["run_id"] for e in o.evaluations}
    for run_id, event in trained.items():
        if run_id not in evaluated:
            yield Violation("lost", f"model.trained {event.data['model']} run {run_id}: never evaluated")
    registered = {(e.data["model"], e.data["version"]) for e in o.distinct("model.registered")}
    for v in o.versions:
        if (v["model"], v["version"]) not in registered:
            yield Violation("lost", f"{v['model']} v{v['version']}: registered, no model.registered")
    promoted = {(e.data["model"], e.data["version"]) for e in o.distinct("model.promoted")}
    for entry in _promotions(o):
        if (entry["model"], entry["version"]) not in promoted:
            yield Violation("lost", f"{entry['model']} v{entry['version']}: made production, no model.promoted")


def _twice(o: Observed) -> Iterable[Violation]:
    def repeated(what: str, keys: Iterable[object]) -> Iterable[Violation]:
        for key, count in sorted(Counter(keys).items(), key=str):
            if count > 1:
                yield Violation("twice", f"{what} {key}: {count} times")

    yield from repeated(
        "training run for (model, trigger event)", ((r["model"], r["trigger_event_id"]) for r in o.runs)
    )
    yield from repeated("evaluation of run", (e["run_id"] for e in o.evaluations))
    yield from repeated("version of run", (v["run_id"] for v in o.versions))
    yield from repeated(
        "audit version.registered",
        ((a["model"], a["version"]) for a in o.audit if a["action"] == "version.registered"),
    )
    yield from repeated("audit production move", ((a["model"], a["version"]) for a in _promotions(o)))
    yield from repeated(
        "distinct data.published", ((e.data["dataset"], e.data["version"]) for e in o.distinct("data.published"))
    )
    yield from repeated("distinct model.trained", (e.data["run_id"] for e in o.distinct("model.trained")))
    yield from repeated(
        "distinct model.registered", ((e.data["model"], e.data["version"]) for e in o.distinct("model.registered"))
    )
    yield from repeated(
        "distinct model.promoted",
        ((e.data["model"], e.data["version"], e.data.get("alias", PRODUCTION)) for e in o.distinct("model.promoted")),
    )


def _versions_per_trained(o: Observed) -> Iterable[Violation]:
    by_run = Counter(v["run_id"] for v in o.versions)
    rejected = {e.data["run_id"] for e in o.distinct("model.rejected")}
    trained = {e.data["run_id"]: e.data["model"] for e in o.distinct("model.trained")}
    for run_id, model in trained.items():
        expected = 0 if run_id in rejected else 1
        if by_run[run_id] != expected:
            yield Violation(
                "versions", f"model.trained {model} run {run_id}: {by_run[run_id]} versions, expected {expected}"
            )
    for v in o.versions:
        if v["run_id"] not in trained:
            yield Violation("versions", f"{v['model']} v{v['version']}: no model.trained for run {v['run_id']}")


def _order(o: Observed) -> Iterable[Violation]:
    for topic, key_field in (("data.published", "dataset"), ("model.registered", "model")):
        last: dict[str, int] = {}
        for event in o.distinct(topic):
            key, version = event.data[key_field], event.data["version"]
            if version < last.get(key, version):
                yield Violation("order", f"{topic} {key}: v{version} after v{last[key]}")
            last[key] = max(version, last.get(key, version))


def _predictions(o: Observed) -> Iterable[Violation]:
    logged: Counter[str] = Counter()
    for event in o.distinct("predictions.logged"):
        logged.update(record["request_id"] for record in event.data["records"])
    for model, request_ids in sorted(o.served.items()):
        for request_id in request_ids:
            if logged[request_id] != 1:
                yield Violation("predictions", f"{model} request {request_id}: logged {logged[request_id]} times")
            elif request_id not in o.stored_predictions:
                yield Violation("lost", f"{model} request {request_id}: logged, not stored by drift")


def _promotions(o: Observed) -> list[dict[str, Any]]:
    return [a for a in o.audit if a["action"] == "alias.moved" and a["detail"].get("alias") == PRODUCTION]


# --- reading what the stack did ---------------------------------------------------------------


async def observe(
    bootstrap: str,
    clients: dict[str, httpx.AsyncClient],
    models: Iterable[str],
    *,
    acknowledged_datasets: Iterable[tuple[str, int]] = (),
    served: dict[str, list[str]] | None = None,
) -> Observed:
    """Read the topics and the services' APIs for ``models`` (each also the name of its dataset)."""
    names = set(models)
    observed = Observed(models=names, acknowledged_datasets=set(acknowledged_datasets), served=dict(served or {}))
    read = await asyncio.gather(*(topic_events(bootstrap, topic) for topic in ALL_TOPICS))
    observed.events = {
        topic: [e for e in events if e.subject in names] for topic, events in zip(ALL_TOPICS, read, strict=True)
    }
    for name in sorted(names):
        runs = await _json(clients["trainer"], "/v1/runs", model=name, limit=500)
        observed.runs += runs["runs"]
        observed.evaluations += (await _json(clients["validator"], "/v1/evaluations", model=name, limit=500))[
            "evaluations"
        ]
        response = await clients["registry"].get(f"/v1/models/{name}/versions")
        if response.status_code != 404:
            response.raise_for_status()
            observed.versions += response.json()["versions"]
        observed.audit += (await _json(clients["registry"], "/v1/audit", model=name, limit=1000))["entries"]
    observed.stored_predictions = await stored_predictions(clients["drift"], observed.served)
    return observed


async def stored_predictions(drift: httpx.AsyncClient, served: dict[str, list[str]]) -> set[str]:
    """The request ids among ``served`` that drift has stored."""
    stored = set()
    for request_ids in served.values():
        for request_id in request_ids:
            response = await drift.get(f"/v1/predictions/{request_id}")
            if response.status_code == 200:
                stored.add(request_id)
            elif response.status_code != 404:
                response.raise_for_status()
    return stored


async def _json(client: httpx.AsyncClient, path: str, **params: str | int) -> Any:
    response = await client.get(path, params=params)
    response.raise_for_status()
    return response.json()


def grouped(violations: Iterable[Violation]) -> dict[str, list[str]]:
    """Violations by invariant, for a readable assertion message."""
    out: dict[str, list[str]] = defaultdict(list)
    for violation in violations:
        out[violation.invariant].append(violation.detail)
    return dict(out)
