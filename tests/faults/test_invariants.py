"""Faults injected into the running loop, each followed by the invariant checker (tests/faults/invariants.py).

Scenarios of issue 10 covered here (the others live beside this module):

1. SIGKILL each consumer service right after its handler's database commit, before its offset commit
   (fault point ``consumer-after-handler-before-offset-commit``) → redelivery changes nothing.
2. SIGKILL the outbox relay between the broker's acknowledgement and mark-published (fault point
   ``outbox-after-publish-before-mark-sent``) → the duplicate event is absorbed downstream.
8. Replay every topic the consumers read from the start → no new runs, evaluations, versions or promotions.

The last test merges its rows into the summary table, tests/faults/results/summary.md and .json
(tests/faults/summary.py), and prints it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from mloop_cli.demo import SPEC, TARGET, TIME_COLUMN, load_rainfall
from mloop_common.events import ALL_TOPICS
from mloop_common.faults import CONSUMER_BEFORE_OFFSET_COMMIT, ENV, OUTBOX_BEFORE_MARK_SENT
from tests.conftest import eventually
from tests.faults import groups, summary
from tests.faults.invariants import Observed, check, grouped, observe, stored_predictions
from tests.faults.summary import Row
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")

# The consumer groups of the services that commit database work (serving's group is per instance and
# keeps no database; its reloads are not effects the checker counts).
GROUPS = {
    "trainer": ["mloop-trainer-data", "mloop-trainer-drift", "mloop-trainer-spec"],
    "validator": ["mloop-validator", "mloop-validator-data"],
    "registry": ["mloop-registry", "mloop-registry-alerts"],
    "drift": ["mloop-drift"],
}
CONSUMERS = tuple(GROUPS)
ROWS = slice(0, 3000)  # 1949-1957: a fit of seconds
PREDICTIONS = 24


@dataclass
class Ledger:
    """What the module's tests did to the stack: their models, what was acknowledged, the summary rows."""

    models: list[str] = field(default_factory=list)
    datasets: set[tuple[str, int]] = field(default_factory=set)
    served: dict[str, list[str]] = field(default_factory=dict)
    # Every topic's end offsets before this module's first event: where its history on this broker begins.
    start: groups.Offsets = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


async def test_1_consumer_killed_between_database_commit_and_offset_commit(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    ledger.start = await groups.end_offsets(stack.bootstrap, ALL_TOPICS)
    name = await declare(clients["registry"], ledger)
    # The unarmed trainer handles the spec's event first: armed, it would die on it while it starts.
    await eventually(lambda: announced(stack, ledger, "spec.changed"), timeout=60)
    await eventually(lambda: caught_up(stack, "trainer"), timeout=60)
    await asyncio.to_thread(_restart, stack, CONSUMERS, {ENV: CONSUMER_BEFORE_OFFSET_COMMIT})

    await publish(clients["ingest"], name, ledger)
    # Each one dies at the first record it handles: trainer (data.published), validator (model.trained),
    # drift (model.promoted) and registry (model.served); each is restarted unarmed as it dies.
    codes = await restart_as_they_die(stack, CONSUMERS, timeout=240)
    await settled(clients, name, version=1)
    await predict(clients["serving"], name, ledger)
    observed = await observe_settled(stack, clients, ledger)

    violations = check(observed)
    died = ", ".join(f"{n} {code}" for n, code in codes.items())
    counts = effect_counts(observed, name)
    ledger.rows.append(
        Row(
            "1 consumer SIGKILL after DB commit, before offset commit",
            f"{ENV}={CONSUMER_BEFORE_OFFSET_COMMIT} in {', '.join(CONSUMERS)}; one new model through the loop",
            "each dies (-9); redelivered records are no-ops: 1 run, 1 evaluation, 1 version, 1 promotion; 0 violations",
            f"exit codes: {died}; {counts}; {logged_once(observed, name)}/{PREDICTIONS} predictions logged "
            f"once; {len(violations)} violations",
            not violations and set(codes.values()) == {-9},
        )
    )
    assert codes == dict.fromkeys(CONSUMERS, -9)
    assert violations == [], grouped(violations)
    assert counts == "runs 1, evaluations 1, versions 1, promotions 1"
    for service in CONSUMERS:  # the restarted process found the record in its inbox and committed it
        assert await caught_up(stack, service)


async def test_2_relay_killed_between_publish_and_mark_published(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    if not ledger.start:
        ledger.start = await groups.end_offsets(stack.bootstrap, ALL_TOPICS)
    name = await declare(clients["registry"], ledger)
    # The trainer's relay sends model.trained, the registry's model.registered and model.promoted.
    relays = ("trainer", "registry")
    await asyncio.to_thread(_restart, stack, relays, {ENV: OUTBOX_BEFORE_MARK_SENT})

    await publish(clients["ingest"], name, ledger)
    codes = await restart_as_they_die(stack, relays, timeout=240)
    await settled(clients, name, version=1)
    observed = await observe_settled(stack, clients, ledger)
    # The restarted relays sent again what the broker had already acknowledged.
    duplicates = {
        topic: sum(1 for e in observed.of(topic) if e.subject == name)
        - sum(1 for e in observed.distinct(topic) if e.subject == name)
        for topic in ("model.trained", "model.registered", "model.promoted")
    }

    violations = check(observed)
    counts = effect_counts(observed, name)
    ledger.rows.append(
        Row(
            "2 outbox relay SIGKILL after publish, before mark-published",
            f"{ENV}={OUTBOX_BEFORE_MARK_SENT} in trainer and registry; one new model through the loop",
            "each dies (-9); its events are sent again after restart (same ids); downstream absorbs them: "
            "1 evaluation, 1 version, 1 promotion; 0 violations",
            f"exit codes: {', '.join(f'{n} {c}' for n, c in codes.items())}; redelivered "
            f"{', '.join(f'{t} x{n}' for t, n in duplicates.items())}; {counts}; {len(violations)} violations",
            not violations and duplicates["model.trained"] >= 1,
        )
    )
    assert codes == dict.fromkeys(relays, -9)
    assert duplicates["model.trained"] >= 1
    assert duplicates["model.registered"] + duplicates["model.promoted"] >= 1
    assert violations == [], grouped(violations)
    assert counts == "runs 1, evaluations 1, versions 1, promotions 1"


async def test_8_replaying_every_topic_from_the_start_changes_nothing(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    if not ledger.models:  # run alone: one model through the loop first
        ledger.start = await groups.end_offsets(stack.bootstrap, ALL_TOPICS)
        name = await declare(clients["registry"], ledger)
        await publish(clients["ingest"], name, ledger)
        await settled(clients, name, version=1)
    before = await observe_settled(stack, clients, ledger)

    await asyncio.to_thread(_stop, stack, CONSUMERS)
    rewound: dict[str, groups.Offsets] = {}
    for group in (g for service in CONSUMERS for g in GROUPS[service]):
        ends = await groups.committed(stack.bootstrap, group)  # where the group was: the replay ends there
        await groups.rewind(stack.bootstrap, group, ledger.start)
        rewound[group] = ends
    await asyncio.to_thread(stack.start, *CONSUMERS)

    async def replayed() -> bool:
        return all([await groups.caught_up(stack.bootstrap, g, ends) for g, ends in rewound.items()])

    await eventually(replayed, timeout=120, interval=0.5)
    after = await observe_settled(stack, clients, ledger)

    records = sum(end - ledger.start.get(tp, 0) for ends in rewound.values() for tp, end in ends.items())
    new = {what: len(getattr(after, what)) - len(getattr(before, what)) for what in ("runs", "evaluations", "versions")}
    new["promotions"] = promotions(after) - promotions(before)
    new["events"] = sum(len(after.distinct(t)) for t in ALL_TOPICS) - sum(len(before.distinct(t)) for t in ALL_TOPICS)
    violations = check(after)
    ledger.rows.append(
        Row(
            "8 replay every consumed topic from the start",
            f"consumer groups of {', '.join(CONSUMERS)} rewound to this run's first offsets "
            f"({records} records delivered again)",
            "no new runs, evaluations, versions, promotions or events; 0 violations",
            f"new: {', '.join(f'{k} {v}' for k, v in new.items())}; {len(violations)} violations",
            not violations and not any(new.values()),
        )
    )
    assert records > 0
    assert new == {"runs": 0, "evaluations": 0, "versions": 0, "promotions": 0, "events": 0}
    assert violations == [], grouped(violations)


async def test_summary_table(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    """Merges the scenarios that ran into tests/faults/results/summary.md and .json and prints the table."""
    summary.record_and_print(ledger.rows, capsys)


# --- driving the stack ------------------------------------------------------------------------


async def declare(registry: httpx.AsyncClient, ledger: Ledger) -> str:
    """The rainfall spec under a fresh name (also its dataset's name)."""
    name = f"inv-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load(SPEC.read_text())
    spec["name"] = spec["dataset"] = name
    response = await registry.post(
        "/v1/models", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"}
    )
    response.raise_for_status()
    ledger.models.append(name)
    return name


async def publish(ingest: httpx.AsyncClient, name: str, ledger: Ledger) -> None:
    csv = load_rainfall().iloc[ROWS].to_csv(index=False).encode()
    response = await ingest.post(
        f"/v1/datasets/{name}/versions",
        data={"target": TARGET, "time_column": TIME_COLUMN},
        files={"file": ("data.csv", csv, "text/csv")},
    )
    assert response.status_code == 201, response.text
    ledger.datasets.add((name, int(response.json()["version"])))


async def predict(serving: httpx.AsyncClient, name: str, ledger: Ledger) -> None:
    rows = load_rainfall().drop(columns=[TARGET]).iloc[ROWS.stop : ROWS.stop + PREDICTIONS]
    answered = ledger.served.setdefault(name, [])
    for start in range(0, PREDICTIONS, 4):
        instances = json.loads(rows.iloc[start : start + 4].to_json(orient="records"))
        response = await serving.post(f"/v1/models/{name}:predict", json={"instances": instances})
        assert response.status_code == 200, response.text
        answered += response.json()["request_ids"]


def _restart(stack: ServiceStack, names: tuple[str, ...], env: dict[str, str]) -> None:
    _stop(stack, names)
    stack.start(*names, env=env)


def _stop(stack: ServiceStack, names: tuple[str, ...]) -> None:
    with ThreadPoolExecutor(len(names)) as pool:  # each drains and leaves its groups on its own
        codes = dict(zip(names, pool.map(stack.terminate, names), strict=True))
    assert set(codes.values()) <= {0, -signal.SIGTERM}, codes


async def restart_as_they_die(stack: ServiceStack, names: tuple[str, ...], timeout: float) -> dict[str, int]:
    """Wait for each of ``names`` to exit (an armed fault point), restart it unarmed; their exit codes."""
    codes: dict[str, int] = {}
    restarts: list[asyncio.Task[None]] = []  # in the background: the others may die meanwhile

    def all_died() -> bool:
        for name in names:
            code = stack.exited(name) if name not in codes else None
            if code is not None:
                codes[name] = code
                restarts.append(asyncio.create_task(asyncio.to_thread(stack.start, name)))
        return len(codes) == len(names)

    try:
        await eventually(all_died, timeout=timeout, interval=0.2)
    except AssertionError as exc:
        logs = "\n".join(f"--- {n}\n{stack.log_tail(n)}" for n in names if n not in codes)
        raise AssertionError(f"{exc}; exited so far: {codes}\n{logs}") from None
    finally:
        await asyncio.gather(*restarts)
    return {name: codes[name] for name in names}


async def settled(clients: dict[str, httpx.AsyncClient], name: str, *, version: int) -> None:
    """``version`` is production and serving answers with it."""

    async def serving() -> bool:
        alias = await clients["registry"].get(f"/v1/models/{name}/aliases/production")
        if alias.status_code != 200 or alias.json().get("version") != version:
            return False
        row = json.loads(load_rainfall().drop(columns=[TARGET]).iloc[:1].to_json(orient="records"))
        response = await clients["serving"].post(f"/v1/models/{name}:predict", json={"instances": row})
        return response.status_code == 200 and response.json()["model_version"] == version

    await eventually(serving, timeout=180, interval=0.5)


async def observe_settled(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger, timeout: float = 60
) -> Observed:
    """The checker's input once the loop is quiet: every consumer group caught up and every served
    prediction stored by drift (bounded; whatever is missing then is reported as a violation)."""

    async def quiet() -> bool:
        for service in CONSUMERS:
            if not await caught_up(stack, service):
                return False
        stored = await stored_predictions(clients["drift"], ledger.served)
        return len(stored) == sum(len(ids) for ids in ledger.served.values())

    try:
        await eventually(quiet, timeout=timeout, interval=0.5)
    except AssertionError:
        pass  # the checker names what did not arrive
    return await observe(
        stack.bootstrap, clients, ledger.models, acknowledged_datasets=ledger.datasets, served=ledger.served
    )


async def announced(stack: ServiceStack, ledger: Ledger, topic: str) -> bool:
    """``topic`` has a record this test made (its end moved past where the test started)."""
    ends = await groups.end_offsets(stack.bootstrap, {topic})
    return sum(ends.values()) > sum(offset for tp, offset in ledger.start.items() if tp.topic == topic)


async def caught_up(stack: ServiceStack, service: str) -> bool:
    """Every group of ``service`` has committed up to the end of the topics it consumes."""
    for group in GROUPS[service]:
        done = await groups.committed(stack.bootstrap, group)
        ends = await groups.end_offsets(stack.bootstrap, {tp.topic for tp in done})
        if not await groups.caught_up(stack.bootstrap, group, ends):
            return False
    return True


def promotions(observed: Observed) -> int:
    return sum(1 for a in observed.audit if a["action"] == "alias.moved" and a["detail"].get("alias") == "production")


def logged_once(observed: Observed, name: str) -> int:
    """How many of the predictions served for ``name`` are in exactly one predictions.logged event."""
    logged = Counter(r["request_id"] for e in observed.distinct("predictions.logged") for r in e.data["records"])
    return sum(1 for request_id in observed.served.get(name, []) if logged[request_id] == 1)


def effect_counts(observed: Observed, name: str) -> str:
    def of(rows: list[dict[str, Any]]) -> int:
        return sum(1 for r in rows if r["model"] == name)

    mine = [a for a in observed.audit if a["model"] == name]
    moved = sum(1 for a in mine if a["action"] == "alias.moved" and a["detail"].get("alias") == "production")
    return (
        f"runs {of(observed.runs)}, evaluations {of(observed.evaluations)}, versions {of(observed.versions)}, "
        f"promotions {moved}"
    )
