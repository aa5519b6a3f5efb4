"""PostgreSQL stops as a crash leaves it (an immediate shutdown: no checkpoint) and starts again with crash
recovery while requests flow: answers are 503 with ``Retry-After`` during the outage, never a 500 or a hang,
and the service recovers by itself (no restart of its process).

Scenario 5 of issue 10 (the restart; pool exhaustion: tests/integration/test_pool_exhaustion.py): row 5 of
tests/faults/results/summary.md."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LOCAL, REPO, eventually, running
from tests.faults import summary
from tests.faults.summary import Row
from tests.stack import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("pg-restart"), repo=REPO
    )
    try:
        with running(services, "registry"):
            yield services
    finally:
        database("start")  # whatever a failed test left behind, the session's database runs again


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's rows of the fault suite's summary table."""
    return []


def database(*args: str) -> str:
    """Runs deploy/local/postgres.sh with ``args``; returns what it printed."""
    return subprocess.run([str(LOCAL / "postgres.sh"), *args], check=True, capture_output=True, text=True).stdout


async def test_requests_during_a_database_restart_get_503_with_retry_after_and_the_service_recovers(
    stack: ServiceStack, rows: list[Row]
) -> None:
    answers: list[tuple[float, int, str | None]] = []  # (when, status, Retry-After)
    stop = asyncio.Event()

    async def load(http: httpx.AsyncClient) -> None:
        while not stop.is_set():
            response = await http.get("/v1/models")
            answers.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))
            await asyncio.sleep(0.05)

    async with httpx.AsyncClient(base_url=stack.urls["registry"], timeout=30, headers=stack.headers) as http:
        running_load = asyncio.create_task(load(http))
        await eventually(lambda: len(answers) > 10, timeout=30, interval=0.1)
        stopped = await asyncio.to_thread(database, "stop", "--immediate")
        down_at = time.monotonic()
        await eventually(lambda: any(s == 503 for _, s, _ in answers), timeout=30, interval=0.1)
        await asyncio.to_thread(database, "start")
        up_at = time.monotonic()
        await eventually(lambda: any(s == 200 and t > up_at for t, s, _ in answers), timeout=60, interval=0.2)
        stop.set()
        await running_load

    during = [(status, retry) for at, status, retry in answers if at > down_at]
    statuses = sorted({s for _, s, _ in answers})
    refused = [retry for status, retry in during if status == 503]
    unavailable = [retry for _, s, retry in answers if s == 503]
    unavailable_for = max(t for t, s, _ in answers if s == 503) - min(t for t, s, _ in answers if s == 503)
    recovered_after = min(t for t, s, _ in answers if s == 200 and t > up_at) - up_at
    exit_code = stack.processes["registry"].poll()  # None: recovered in place, not restarted
    # The control file as the immediate stop left it: "in production", so the start had to replay the WAL.
    crashed = "cluster state: in production" in stopped
    rows.append(
        Row(
            "5 PostgreSQL immediate restart under load",
            "deploy/local/postgres.sh stop --immediate (pg_ctl -m immediate: no checkpoint, as a crash leaves "
            "it), then start (crash recovery), under a client reading the registry (GET /v1/models every 50 ms)",
            "503 with Retry-After during the outage, never a 500 or a hang; answers 200 again once the "
            "database is back, the same process",
            f"{len(answers)} answers: "
            f"{', '.join(f'{s} x{sum(1 for _, a, _ in answers if a == s)}' for s in statuses)}; "
            f"503s over {unavailable_for:.1f} s, Retry-After 5 on {unavailable.count('5')}/{len(unavailable)} "
            f"({sum(1 for r in refused if r == '5')}/{len(refused)} after the stop returned); first 200 "
            f"{recovered_after:.1f} s after the start returned; "
            f"{'same process' if exit_code is None else f'process exited ({exit_code})'}; cluster state after the "
            f"stop: {'in production (not shut down: crash recovery at start)' if crashed else repr(stopped.strip())}",
            set(statuses) <= {200, 503} and all(r == "5" for r in refused) and exit_code is None and crashed,
        )
    )
    assert set(statuses) <= {200, 503}, statuses  # never a 500
    assert all(retry == "5" for retry in refused)
    assert exit_code is None  # recovered in place, not restarted
    assert crashed, stopped


async def test_summary_rows(rows: list[Row], capsys: pytest.CaptureFixture[str]) -> None:
    """Merges this module's row into tests/faults/results/summary.md and .json and prints the table."""
    summary.record_and_print(rows, capsys)
