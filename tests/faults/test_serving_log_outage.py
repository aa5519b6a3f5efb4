"""Serving under a steady stream of predictions: Kafka going away, or production swapped back and forth,
fails no request and loses no prediction record.

The real broker is stopped and started under load; serving keeps answering, spills what Kafka does not
take to its local file, and replays it when the broker is back. The test counts request ids end to end:
every id serving answered must appear in ``predictions.logged``. A SIGTERM during the outage spills
what is buffered, and the next serving process replays it. Ten promotions under load (production moved
between two versions) fail no request, and serving's memory stays flat across them: scenario 11 of
issue 10, row 11 of tests/faults/results/summary.md.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from sklearn.linear_model import LogisticRegression

from mloop_common.bus import BusConfig, tail
from mloop_common.modelio import dump_model
from mloop_common.profile import build_reference_profile
from tests.conftest import LOCAL, REPO, _kafka_env, eventually, running
from tests.faults import summary
from tests.faults.summary import Row
from tests.stack import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
FEATURES = ["usage", "calls"]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """Registry and serving only: the model is registered directly, so nothing else needs to run."""
    root = tmp_path_factory.mktemp("log-outage")
    services = ServiceStack(bootstrap=kafka_bootstrap, database_url=postgres, root=root, repo=REPO)
    services.env["MLOOP_SERVING_LOG_SPILL_DIR"] = str(root / "spill")
    with running(services, "registry", "serving"):
        try:
            yield services
        finally:
            broker("start")  # whatever a failed test left behind, the session's broker runs again


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's rows of the fault suite's summary table."""
    return []


def broker(action: str) -> None:
    subprocess.run([str(LOCAL / "kafka.sh"), action], env=_kafka_env(), check=True, stdout=subprocess.DEVNULL)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def model(stack: ServiceStack) -> str:
    """A fitted classifier registered (and so promoted) as version 1 of a fresh model, served."""
    name = f"outage-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(register, stack, name, c=1.0)
    async with httpx.AsyncClient(base_url=stack.urls["serving"], timeout=5, headers=stack.headers) as serving:
        await eventually(lambda: _served(serving, name), timeout=60, interval=0.2)
    return name


def register(stack: ServiceStack, name: str, *, c: float) -> None:
    """A new version of ``name`` (a logistic regression with inverse regularisation ``c``), made production."""
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"usage": rng.normal(size=300), "calls": rng.normal(size=300)})
    frame["churned"] = np.where(frame["usage"] + frame["calls"] > 0, "yes", "no")
    stack.register_directly(
        name,
        model=dump_model(LogisticRegression(C=c).fit(frame[FEATURES], frame["churned"])),
        profile=build_reference_profile(frame, FEATURES).to_json(),
        features=FEATURES,
        target="churned",
        estimator="LogisticRegression",
    )


async def _served(serving: httpx.AsyncClient, name: str) -> bool:
    return (await serving.get(f"/v2/models/{name}/ready")).status_code == 200


@dataclass
class Load:
    """Clients asking for one prediction at a time, as fast as serving answers, remembering every request id."""

    url: str
    model: str
    headers: dict[str, str]
    answered: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    versions: list[int] = field(default_factory=list)  # the model version of each answer, in order
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _running: asyncio.Task[None] | None = None

    def start(self, clients: int = 4) -> None:
        self._running = asyncio.create_task(self._run(clients))

    async def stop(self) -> None:
        """Stop sending and wait for the answers in flight, so ``answered`` is complete."""
        self._stop.set()
        if self._running is not None:
            await self._running

    async def _run(self, clients: int) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30, headers=self.headers) as http:
            await asyncio.gather(*(self._client(http, seed) for seed in range(clients)))

    async def _client(self, http: httpx.AsyncClient, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            instance = {"usage": float(rng.normal()), "calls": float(rng.normal())}
            try:
                response = await http.post(f"/v1/models/{self.model}:predict", json={"instances": [instance]})
            except httpx.TransportError as exc:  # serving restarting (the SIGTERM test): not an answer
                self.failures.append(repr(exc))
                await asyncio.sleep(0.2)
                continue
            if response.status_code == 200:
                answer = response.json()
                self.answered += answer["request_ids"]
                self.versions.append(int(answer["model_version"]))
            else:
                self.failures.append(f"{response.status_code} {response.text[:200]}")


@pytest_asyncio.fixture(loop_scope="module")
async def load(stack: ServiceStack, model: str) -> AsyncIterator[Load]:
    load = Load(stack.urls["serving"], model, stack.headers)
    load.start()
    yield load
    await load.stop()


async def metric(stack: ServiceStack, name: str) -> float:
    async with httpx.AsyncClient(base_url=stack.urls["serving"], timeout=5) as serving:
        text = (await serving.get("/metrics")).text
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def logged_request_ids(stack: ServiceStack, model: str, wanted: set[str], timeout: float = 120) -> set[str]:
    """Request ids of ``model`` in predictions.logged, read from the beginning until ``wanted`` are all seen."""
    seen: set[str] = set()

    async def read() -> None:
        async with tail(BusConfig(stack.bootstrap), ["predictions.logged"], from_beginning=True) as records:
            async for _, event in records:
                if event is not None and event.subject == model:
                    seen.update(r["request_id"] for r in event.data["records"])
                    if wanted <= seen:
                        return

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        pass
    return seen


async def grows(load: Load, by: int) -> None:
    target = len(load.answered) + by
    await eventually(lambda: len(load.answered) >= target, timeout=60, interval=0.05)


async def test_a_broker_stop_and_start_under_load_loses_no_prediction(stack: ServiceStack, model: str, load: Load):
    spilled_before = await metric(stack, "mloop_serving_log_spilled_records_total")
    replayed_before = await metric(stack, "mloop_serving_log_replayed_records_total")
    await grows(load, 200)

    await asyncio.to_thread(broker, "stop")
    # Serving keeps answering while Kafka is away, and sets aside what Kafka does not take.
    await eventually(
        lambda: _above(stack, "mloop_serving_log_spilled_records_total", spilled_before), timeout=60, interval=0.5
    )
    await grows(load, 200)
    await asyncio.to_thread(broker, "start")
    await eventually(
        lambda: _above(stack, "mloop_serving_log_replayed_records_total", replayed_before), timeout=90, interval=0.5
    )
    await grows(load, 200)
    await load.stop()

    answered = set(load.answered)
    logged = await logged_request_ids(stack, model, answered)
    assert load.failures == []
    assert len(answered) == len(load.answered) > 600
    assert answered - logged == set(), f"{len(answered - logged)} of {len(answered)} answered predictions not logged"


async def test_sigterm_while_the_broker_is_away_spills_and_the_next_process_replays(
    stack: ServiceStack, model: str, load: Load
):
    await grows(load, 100)
    await asyncio.to_thread(broker, "stop")
    await grows(load, 300)
    await load.stop()
    answered = set(load.answered)

    codes = await asyncio.to_thread(_stop_serving, stack)
    await asyncio.to_thread(broker, "start")
    await asyncio.to_thread(stack.start, "serving")
    logged = await logged_request_ids(stack, model, answered)

    assert codes in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert answered - logged == set(), f"{len(answered - logged)} of {len(answered)} answered predictions not logged"


async def test_ten_promotions_under_load_fail_no_request_lose_no_record_and_keep_memory_flat(
    stack: ServiceStack, model: str, load: Load, rows: list[Row]
):
    started = time.monotonic()
    await asyncio.to_thread(register, stack, model, c=0.01)  # version 2, production at once
    await eventually(lambda: 2 in load.versions[-20:], timeout=60, interval=0.1)
    rss = [_rss_kib(stack.processes["serving"].pid)]

    for swap in range(10):
        target = 1 if swap % 2 == 0 else 2
        async with httpx.AsyncClient(base_url=stack.urls["registry"], timeout=30, headers=stack.headers) as registry:
            moved = await registry.put(f"/v1/models/{model}/aliases/production", json={"version": target})
            assert moved.status_code == 200, moved.text
        seen = len(load.versions)
        await eventually(lambda: target in load.versions[seen:], timeout=60, interval=0.05)  # noqa: B023
        await grows(load, 100)  # answers from the new version for a while before the next swap
        rss.append(_rss_kib(stack.processes["serving"].pid))
    await load.stop()
    lasted = time.monotonic() - started

    answered = set(load.answered)
    logged = await logged_request_ids(stack, model, answered)
    switches = sum(1 for a, b in zip(load.versions, load.versions[1:], strict=False) if a != b)
    # Flat: after the first swaps have loaded both versions once, ten more cost no lasting memory.
    grown = rss[-1] - rss[2]
    rows.append(
        Row(
            "11 serving under sustained load with 10 swaps",
            "4 clients predicting one row at a time without pause; a second version registered, then "
            f"production moved 10 times between the two, 100 answers or more apart ({lasted:.0f} s in all)",
            "0 failed requests; 100 % of the predictions answered logged; serving's answers follow each swap; "
            "memory flat (RSS after the 10th swap within 64 MiB of that after the 2nd)",
            f"{len(load.failures)} failed of {len(load.answered) + len(load.failures)} requests; "
            f"{len(answered & logged)}/{len(answered)} logged; {switches} version switches in the answers; "
            f"RSS {rss[2] / 1024:.0f} MiB after the 2nd swap, {rss[-1] / 1024:.0f} MiB after the 10th "
            f"({grown / 1024:+.1f} MiB)",
            not load.failures and answered <= logged and switches >= 10 and grown < 64 * 1024,
        )
    )
    assert load.failures == [], load.failures[:5]
    assert answered - logged == set(), f"{len(answered - logged)} of {len(answered)} answered predictions not logged"
    assert switches >= 10  # serving really moved each time (answers in flight may interleave at a swap)
    assert grown < 64 * 1024, f"serving's RSS in KiB across the swaps: {rss}"


async def test_summary_rows(rows: list[Row], capsys: pytest.CaptureFixture[str]) -> None:
    """Merges this module's row into tests/faults/results/summary.md and .json and prints the table."""
    assert rows, "no scenario ran"
    table = summary.write(rows)
    with capsys.disabled():
        print("\n" + table)
    assert all(r.passed for r in rows)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


def _stop_serving(stack: ServiceStack) -> int:
    process = stack.processes["serving"]
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=60)


async def _above(stack: ServiceStack, name: str, floor: float) -> bool:
    return await metric(stack, name) > floor
