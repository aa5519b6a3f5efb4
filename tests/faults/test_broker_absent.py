"""Kafka is not there when a service starts: the service waits, answers its probes and says what it waits for,
refuses work with 503 meanwhile, and starts on its own once the broker is back (it never exits)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import REPO, eventually, running
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


async def test_a_service_started_without_the_broker_waits_not_ready_and_starts_when_it_returns(stack: ServiceStack):
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
            assert status["checks"]["startup"].startswith("waiting for the kafka topics")
            refused = await ingest.get("/v1/datasets")
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert (await ingest.get("/healthz")).status_code == 200
            await asyncio.sleep(PATIENCE)
            assert stack.processes["ingest"].poll() is None  # still there, still waiting
            assert (await ingest.get("/readyz")).status_code == 503
    finally:
        await asyncio.to_thread(broker, "start")

    await asyncio.to_thread(stack.wait_ready, "ingest", timeout=120)  # started on its own
    async with httpx.AsyncClient(base_url=stack.urls["ingest"], timeout=30, headers=stack.headers) as ingest:
        published = await ingest.post(
            "/v1/datasets/absent-broker/versions",
            data={"target": "y"},
            files={"file": ("d.csv", "x,y\n" + "".join(f"{i},{'ab'[i % 2]}\n" for i in range(60)), "text/csv")},
        )
    assert published.status_code == 201, published.text
