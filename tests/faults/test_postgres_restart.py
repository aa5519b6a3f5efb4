"""PostgreSQL stops and starts while requests flow: answers are 503 with ``Retry-After`` during the outage,
never a 500 or a hang, and the service recovers by itself (no restart of its process)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import LOCAL, REPO, eventually, running
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


def database(action: str) -> None:
    subprocess.run([str(LOCAL / "postgres.sh"), action], check=True, stdout=subprocess.DEVNULL)


async def test_requests_during_a_database_restart_get_503_with_retry_after_and_the_service_recovers(
    stack: ServiceStack,
):
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
        await asyncio.to_thread(database, "stop")
        down_at = time.monotonic()
        await eventually(lambda: any(s == 503 for _, s, _ in answers), timeout=30, interval=0.1)
        await asyncio.to_thread(database, "start")
        up_at = time.monotonic()
        await eventually(lambda: any(s == 200 and t > up_at for t, s, _ in answers), timeout=60, interval=0.2)
        stop.set()
        await running_load

    during = [(status, retry) for at, status, retry in answers if at > down_at]
    assert {status for _, status, _ in answers} <= {200, 503}, sorted({s for _, s, _ in answers})  # never a 500
    assert all(retry == "5" for status, retry in during if status == 503)
    assert stack.processes["registry"].poll() is None  # recovered in place, not restarted
