"""Kafka is not there when a service starts: the service waits, answers its probes and says what it waits for,
refuses work with 503 meanwhile, and starts on its own once the broker is back (it never exits).

Scenario 4 of issue 10, broker absent at start: row 4c of tests/faults/results/summary.md."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO, eventually, running
from tests.faults import summary
from tests.faults.summary import Row
from tests.faults.test_serving_log_outage import broker
from tests.stack import ServiceStack

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]
PATIENCE = 20  # seconds the service is watched waiting (the old start-up gave up after about a minute)


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("absent"), repo=REPO
    )
    with running(services, "registry"):  # ingest checks keys with the registry; the registry starts normally
        yield services


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's rows of the fault suite's summary table."""
    return []


async def test_a_service_started_without_the_broker_waits_not_ready_and_starts_when_it_returns(
    stack: ServiceStack, rows: list[Row]
) -> None:
    await asyncio.to_thread(broker, "stop")
    try:
        await asyncio.to_thread(stack.start, "ingest", wait=False)
        async with httpx.AsyncClient(base_url=stack.urls["ingest"], timeout=5, headers=stack.headers) as ingest:

            async def waiting() -> dict | None:  # type: ignore[type-arg]
                try:
                    ready = await ingest.get("/readyz")
                except httpx.TransportError:
                    return None  # not listening yet
                return ready.json() if ready.status_code == 503 else None

            status = await eventually(waiting, timeout=60, interval=0.5)
            refused = await ingest.get("/v1/datasets")
            health = (await ingest.get("/healthz")).status_code
            await asyncio.sleep(PATIENCE)
            exit_code = stack.processes["ingest"].poll()  # None: still there, still waiting
            still_waiting = (await ingest.get("/readyz")).status_code
    finally:
        await asyncio.to_thread(broker, "start")
    back = time.monotonic()

    await asyncio.to_thread(stack.wait_ready, "ingest", timeout=120)  # started on its own
    ready_after = time.monotonic() - back
    async with httpx.AsyncClient(base_url=stack.urls["ingest"], timeout=30, headers=stack.headers) as ingest:
        published = await ingest.post(
            "/v1/datasets/absent-broker/versions",
            data={"target": "y"},
            files={"file": ("d.csv", "x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(60)), "text/csv")},
        )

    startup = status["checks"]["startup"]
    retry_after = refused.headers.get("retry-after")
    rows.append(
        Row(
            "4c broker absent at start",
            f"ingest started with the broker stopped; the broker started again after {PATIENCE} s more",
            "ingest waits: /readyz 503 naming the Kafka topics, /healthz 200, work refused with 503 and "
            "Retry-After, the process still running; ready on its own once the broker is back, then accepts a "
            "dataset (201)",
            f"/readyz 503 ({startup.split(':', 1)[0]}); /healthz {health}; GET /v1/datasets {refused.status_code} "
            f"(Retry-After {retry_after}); after {PATIENCE} s: "
            f"{'process running' if exit_code is None else f'process exited ({exit_code})'}, /readyz "
            f"{still_waiting}; ready {ready_after:.1f} s after the broker start returned; dataset published: "
            f"{published.status_code}",
            startup.startswith("waiting for the kafka topics")
            and refused.status_code == 503
            and retry_after == "5"
            and health == 200
            and exit_code is None
            and still_waiting == 503
            and published.status_code == 201,
        )
    )
    assert startup.startswith("waiting for the kafka topics")
    assert refused.status_code == 503 and retry_after == "5"
    assert health == 200
    assert exit_code is None  # still there, still waiting
    assert still_waiting == 503
    assert published.status_code == 201, published.text


async def test_summary_rows(rows: list[Row], capsys: pytest.CaptureFixture[str]) -> None:
    """Merges this module's row into tests/faults/results/summary.md and .json and prints the table."""
    summary.record_and_print(rows, capsys)
