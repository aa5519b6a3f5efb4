"""Scenarios 3 and 4 of issue 10 on one stack with a broker of its own, each followed by the invariant checker.

3. SIGTERM during ordinary processing (a fit is tests/faults/test_crashes.py) → the service drains within its
   deadline, exits cleanly, and nothing is lost:
   3a. drift restarted into a backlog of prediction-log events and sent SIGTERM while it works through them:
       it finishes the record in hand, commits it and leaves; the next drift process handles the rest, once.
   3b. serving sent SIGTERM under concurrent requests, its prediction log publishing all the while: the
       requests in hand are answered, what the log holds is published at shutdown, and every prediction
       answered (before, during and after) is logged exactly once.
4. The broker killed (SIGKILL, restarted) and frozen (SIGSTOP past the consumers' session timeout, then
   SIGCONT) while a dataset publication goes through train → validate → register → promote and a trickle of
   predictions is served → no loss (every event acknowledged is consumed, every prediction answered is
   logged exactly once), consumers recover in the same processes (PIDs unchanged), no dead letter.

The module starts and owns its broker (the session broker's port + 50, fresh storage), so killing and
freezing it disturbs no other test. The rows go into tests/faults/results/summary.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mloop_common.bus import BusConfig, read_topics
from mloop_common.events import ALL_TOPICS, dlq_topic
from tests.conftest import KAFKA_PORT, LOCAL, REPO, eventually, running
from tests.faults import groups, summary
from tests.faults.invariants import check, grouped
from tests.faults.summary import Row
from tests.faults.test_invariants import (
    CONSUMERS,
    Ledger,
    caught_up,
    declare,
    effect_counts,
    observe_settled,
    publish,
    settled,
)
from tests.faults.traffic import Traffic, logged_once_of
from tests.stack import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

DRIFT_GROUP = "mloop-drift"
LOGGED = "predictions.logged"
LOG_BATCH = 2  # records per prediction-log event: a burst of predictions is many events, each a transaction
BURST = 300  # predictions answered while drift is away
# The bound on a drain: a consumer lets the record in hand finish for 30 s, uvicorn its requests for 30 s.
DRAIN_DEADLINE = 60
CLEAN = (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
OUTAGE = 6.0  # seconds the killed broker stays away
# Past the consumers' session timeout (10 s, mloop_common.bus) and the clients' request timeout (aiokafka's
# 40 s): their requests to the frozen broker time out, so they give up on it and connect again.
FREEZE = 45.0
TRICKLE_PAUSE = 0.08  # one client, a prediction every 80 ms or so


class Broker:
    """A single-node Kafka of this module's own (deploy/local/kafka.sh with its own ports and storage)."""

    def __init__(self, port: int) -> None:
        self.run = REPO / ".run" / f"test-faults-broker-{port}"
        self.env = {
            **os.environ,
            "MLOOP_RUN": str(self.run),
            "KAFKA_PORT": str(port),
            "KAFKA_CONTROLLER_PORT": str(port + 1),
            "KAFKA_SASL_PORT": "",  # no SCRAM listener: not needed here
        }
        self.bootstrap = f"127.0.0.1:{port}"
        self.starting: subprocess.Popen[bytes] | None = None

    def script(self, action: str) -> None:
        subprocess.run([str(LOCAL / "kafka.sh"), action], env=self.env, check=True, stdout=subprocess.DEVNULL)

    def start_in_background(self) -> subprocess.Popen[bytes]:
        """``kafka.sh start`` without waiting for it: services started meanwhile wait for the broker."""
        return subprocess.Popen([str(LOCAL / "kafka.sh"), "start"], env=self.env, stdout=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return int((self.run / "pids" / "kafka.pid").read_text().strip())

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush beyond what the OS already has; returns once the process is gone."""
        pid = self.pid
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)

    def freeze(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        os.kill(self.pid, signal.SIGCONT)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    own = Broker(KAFKA_PORT + 50)
    own.script("reset")
    own.starting = own.start_in_background()  # the JVM starts while the services do (they wait for it)
    try:
        yield own
    finally:
        with contextlib.suppress(Exception):
            own.thaw()  # a test that failed mid-freeze
        own.script("stop")
        own.script("reset")


@pytest.fixture(scope="module")
def stack(broker: Broker, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    root = tmp_path_factory.mktemp("drain-broker")
    services = ServiceStack(bootstrap=broker.bootstrap, database_url=postgres, root=root, repo=REPO)
    services.env["MLOOP_SERVING_LOG_SPILL_DIR"] = str(root / "spill")
    services.env["MLOOP_SERVING_LOG_BATCH_SIZE"] = str(LOG_BATCH)
    with running(services):  # ready: the broker is up
        assert broker.starting is None or broker.starting.wait(timeout=60) == 0
        yield services


@pytest.fixture(scope="module")
def ledger() -> Ledger:
    return Ledger()


async def steady_model(clients: dict[str, httpx.AsyncClient], ledger: Ledger) -> str:
    """The model the predictions ask for: through the loop once, before any fault (the first test makes it)."""
    if not ledger.models:
        name = await declare(clients["registry"], ledger)
        await publish(clients["ingest"], name, ledger)
        await settled(clients, name, version=1)
    return ledger.models[0]


# --- 3: SIGTERM during processing -----------------------------------------------------------------


async def test_3a_drift_sigterm_while_working_through_a_burst_drains_and_loses_nothing(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    name = await steady_model(clients, ledger)
    assert await asyncio.to_thread(stack.terminate, "drift") in CLEAN
    traffic = Traffic(stack.urls["serving"], name, stack.headers, clients=4).start()
    try:
        await traffic.grows(BURST)  # a backlog of some BURST / LOG_BATCH events waits for drift
    finally:
        await traffic.stop()
    ledger.served[name] = traffic.answered  # the predictions this scenario checks
    await eventually(lambda: logged_all(stack, name, traffic.answered), timeout=60, interval=0.5)
    before = await groups.committed(stack.bootstrap, DRIFT_GROUP)
    burst = await groups.end_offsets(stack.bootstrap, [LOGGED])
    await asyncio.to_thread(stack.start, "drift")

    async def working() -> bool:  # it has handled part of the backlog
        done = await groups.committed(stack.bootstrap, DRIFT_GROUP)
        return any(offset > before.get(tp, 0) for tp, offset in done.items() if tp.topic == LOGGED)

    await eventually(working, timeout=60, interval=0.05)
    signalled = time.monotonic()
    code = await asyncio.to_thread(stack.terminate, "drift", DRAIN_DEADLINE)
    drained = time.monotonic() - signalled
    left = await unhandled(stack, burst)  # what the next drift process finds of the burst
    await asyncio.to_thread(stack.start, "drift")

    observed = await observe_settled(stack, clients, ledger, timeout=120)
    violations = check(observed)
    served = len(traffic.answered)
    once = logged_once_of(observed, traffic.answered)
    stored = sum(1 for request_id in traffic.answered if request_id in observed.stored_predictions)
    drift_log = stack.log_tail("drift", 1_000_000)
    ledger.rows.append(
        Row(
            "3a drift SIGTERM while working through a burst of events",
            f"drift stopped while serving answered {BURST} predictions (prediction-log events of {LOG_BATCH}), "
            "restarted into that backlog, SIGTERM once it had committed part of it",
            f"exits cleanly (0, or the SIGTERM uvicorn re-raises after its shutdown) within {DRAIN_DEADLINE} s, "
            "leaving the rest uncommitted; the next drift handles it: every prediction answered logged once and "
            "stored by drift, drift's group caught up; 0 violations",
            f"exit code {code} after {drained:.1f} s with {left} {LOGGED} records of the burst left to the next "
            f"process; {once}/{served} predictions logged once, {stored}/{served} stored by drift; "
            f"{len(violations)} violations",
            code in CLEAN and left > 0 and once == stored == served and not violations,
        )
    )
    assert code in CLEAN
    assert "consume loop failed while stopping" not in drift_log
    assert left > 0  # SIGTERM came mid-burst: the drain left work for the next process
    assert await caught_up(stack, "drift")
    assert violations == [], grouped(violations)
    assert once == stored == served


async def test_3b_serving_sigterm_with_requests_and_log_flushes_in_flight_loses_no_prediction(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    name = await steady_model(clients, ledger)
    spill = stack.logs.parent / "spill"
    traffic = Traffic(stack.urls["serving"], name, stack.headers, clients=4).start()
    try:
        await traffic.grows(150)
        at_signal = len(traffic.answered)
        signalled = time.monotonic()
        code = await asyncio.to_thread(stack.terminate, "serving", DRAIN_DEADLINE)
        drained = time.monotonic() - signalled
        in_flight = len(traffic.answered) - at_signal  # answered after the signal: requests serving had in hand
        spilled = sum(path.stat().st_size for path in spill.glob("*")) if spill.exists() else 0
        await asyncio.to_thread(stack.start, "serving")
        await traffic.grows(150)
    finally:
        await traffic.stop()
    ledger.served[name] = traffic.answered

    observed = await observe_settled(stack, clients, ledger, timeout=120)
    violations = check(observed)
    answered = len(traffic.answered)
    once = logged_once_of(observed, traffic.answered)
    # Between the new process listening and its models loaded: 503 with Retry-After, never a 404 or a 500.
    unexpected = [failure for failure in traffic.failed if not failure.startswith("503 ")]
    ledger.rows.append(
        Row(
            "3b serving SIGTERM with requests and prediction-log flushes in flight",
            f"SIGTERM to serving under 4 concurrent clients, its log publishing events of {LOG_BATCH} records",
            f"exits cleanly within {DRAIN_DEADLINE} s; requests in hand answered; no answer but 200 (503 with "
            "Retry-After while the new process loads its models); the log published at shutdown, not spilled "
            "(Kafka is up); every prediction answered logged exactly once and stored by drift; 0 violations",
            f"exit code {code} after {drained:.1f} s; {in_flight} answers after the signal; "
            f"{len(traffic.refused)} requests refused while it restarted, other answers: {traffic.statuses()}; "
            f"spill {spilled} bytes; {once}/{answered} predictions logged once; {len(violations)} violations",
            code in CLEAN and not unexpected and spilled == 0 and once == answered and not violations,
        )
    )
    assert code in CLEAN
    assert unexpected == [], unexpected[:5]
    assert spilled == 0  # the broker was there: the shutdown published, it did not set aside
    assert violations == [], grouped(violations)
    assert once == answered


# --- 4: the broker killed and frozen --------------------------------------------------------------


async def started_training(trainer: httpx.AsyncClient, name: str) -> bool:
    runs = (await trainer.get("/v1/runs", params={"model": name})).json()
    return bool(runs["training"] or runs["runs"])


async def test_4a_broker_sigkill_and_restart_while_the_loop_and_predictions_flow(
    broker: Broker, stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    steady = await steady_model(clients, ledger)
    pids = {name: process.pid for name, process in stack.processes.items()}
    traffic = Traffic(stack.urls["serving"], steady, stack.headers, clients=1, pause=TRICKLE_PAUSE).start()
    try:
        await traffic.grows(30)
        name = await declare(clients["registry"], ledger)
        await publish(clients["ingest"], name, ledger)
        await eventually(lambda: started_training(clients["trainer"], name), timeout=60, interval=0.1)
        await asyncio.to_thread(broker.kill)
        await asyncio.sleep(OUTAGE)  # the fit ends meanwhile: its model.trained waits in the trainer's outbox
        during = len(traffic.answered)
        await asyncio.to_thread(broker.script, "start")
        await settled(clients, name, version=1)
        await traffic.grows(30)
    finally:
        await traffic.stop()
    ledger.served[steady] = traffic.answered

    row, problems = await judged(
        "4a Kafka SIGKILL and restart while the loop and predictions flow",
        f"SIGKILL to the broker once the trainer took a new dataset, restarted {OUTAGE:.0f} s later; a trickle "
        "of predictions of another model throughout",
        stack,
        clients,
        ledger,
        name,
        traffic,
        pids,
        extra=f"{during} predictions answered by the time the broker was started again",
    )
    ledger.rows.append(row)
    assert not problems, problems


async def test_4b_broker_frozen_past_the_session_timeout_while_the_loop_and_predictions_flow(
    broker: Broker, stack: ServiceStack, clients: dict[str, httpx.AsyncClient], ledger: Ledger
) -> None:
    steady = await steady_model(clients, ledger)
    pids = {name: process.pid for name, process in stack.processes.items()}
    before = _log_counts(stack)
    traffic = Traffic(stack.urls["serving"], steady, stack.headers, clients=1, pause=TRICKLE_PAUSE).start()
    try:
        await traffic.grows(30)
        name = await declare(clients["registry"], ledger)
        await publish(clients["ingest"], name, ledger)
        await eventually(lambda: started_training(clients["trainer"], name), timeout=60, interval=0.1)
        broker.freeze()
        try:
            await asyncio.sleep(FREEZE)
        finally:
            broker.thaw()
        await settled(clients, name, version=1)
        await traffic.grows(30)
    finally:
        await traffic.stop()
    ledger.served[steady] = traffic.answered
    after = _log_counts(stack)
    gave_up, rejoined = (after[i] - before[i] for i in range(2))

    row, problems = await judged(
        "4b Kafka SIGSTOP past the session timeout, then SIGCONT, while the loop and predictions flow",
        f"SIGSTOP to the broker once the trainer took a new dataset, SIGCONT {FREEZE:.0f} s later (consumer "
        "session timeout 10 s, client request timeout 40 s); a trickle of predictions of another model throughout",
        stack,
        clients,
        ledger,
        name,
        traffic,
        pids,
        extra=f"clients that marked the coordinator dead: {gave_up}, partition assignments after: {rejoined}",
    )
    ledger.rows.append(row)
    assert not problems, problems


async def test_summary_rows(ledger: Ledger, capsys: pytest.CaptureFixture[str]) -> None:
    """Merges this module's rows into tests/faults/results/summary.md and .json and prints the table."""
    summary.record_and_print(ledger.rows, capsys)


# --- helpers ----------------------------------------------------------------------------------------


async def logged_all(stack: ServiceStack, name: str, request_ids: list[str]) -> bool:
    """Whether serving has published every one of ``request_ids`` (the burst is whole on the topic)."""
    records = await read_topics(BusConfig(stack.bootstrap), [LOGGED])
    logged = {r["request_id"] for _, e in records if e is not None and e.subject == name for r in e.data["records"]}
    return set(request_ids) <= logged


async def unhandled(stack: ServiceStack, burst: groups.Offsets) -> int:
    """Records of predictions.logged up to ``burst`` that drift's group has not committed."""
    done = await groups.committed(stack.bootstrap, DRIFT_GROUP)
    return sum(max(end - done.get(tp, 0), 0) for tp, end in burst.items())


async def judged(
    scenario: str,
    injected: str,
    stack: ServiceStack,
    clients: dict[str, httpx.AsyncClient],
    ledger: Ledger,
    name: str,
    traffic: Traffic,
    pids: dict[str, int],
    *,
    extra: str,
) -> tuple[Row, list[str]]:
    """The checker and the expectations of a broker fault: the summary row, and what failed."""
    observed = await observe_settled(stack, clients, ledger, timeout=120)
    violations = check(observed)
    restarted = sorted(n for n, pid in pids.items() if stack.processes[n].pid != pid or stack.exited(n) is not None)
    letters = await dead_letters(stack.bootstrap)
    behind = [service for service in CONSUMERS if not await caught_up(stack, service)]
    died = sum(stack.log_tail(n, 10_000_000).count("consume loop died") for n in stack.processes)
    once = logged_once_of(observed, traffic.answered)
    answered = len(traffic.answered)
    problems = [
        *(f"violation {v}" for v in violations),
        *(f"{n} restarted or exited" for n in restarted),
        *(f"dead letter: {letter}" for letter in letters),
        *(f"{service} not caught up" for service in behind),
        *([f"answers other than 200: {traffic.failed[:3]}"] if traffic.failed else []),
        *([f"requests not answered: {traffic.refused[:3]}"] if traffic.refused else []),
        *([f"{died} consume loops died"] if died else []),
        *([f"{answered - once} predictions not logged exactly once"] if once != answered else []),
    ]
    row = Row(
        scenario,
        injected,
        "the new model trained, validated, registered and promoted once; every prediction answered (no "
        "failed request) logged exactly once and stored by drift; every consumer group caught up; the same "
        "service processes (PIDs unchanged), no consume loop died; no dead letter; 0 violations",
        f"{effect_counts(observed, name)}; {once}/{answered} predictions logged once, "
        f"{len(traffic.refused) + len(traffic.failed)} requests failed; {extra}; groups behind: {len(behind)}; "
        f"processes restarted: {len(restarted)}; consume loops died: {died}; dead letters: {len(letters)}; "
        f"{len(violations)} violations",
        not problems,
    )
    if violations:
        problems.append(str(grouped(violations)))
    return row, problems


async def dead_letters(bootstrap: str) -> list[str]:
    """Every record in a dead-letter topic of the module's broker (it is fresh: all of them are this module's)."""
    records = await read_topics(BusConfig(bootstrap), [dlq_topic(topic) for topic in ALL_TOPICS])
    return [
        f"{record.topic}: {dict(record.headers or ()).get('x-mloop-error', b'').decode(errors='replace')}"
        for record, _ in records
    ]


def _log_counts(stack: ServiceStack) -> tuple[int, int]:
    """Lines so far in the services' logs where a consumer gave up on its group coordinator (aiokafka's
    words) and where partitions were assigned to one (a group formed again)."""
    logs = [stack.log_tail(n, 10_000_000) for n in stack.processes]
    return sum(log.count("coordinator dead") for log in logs), sum(log.count("partitions assigned") for log in logs)
