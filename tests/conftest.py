"""Fixtures for tests on real infrastructure.

Integration and end-to-end tests get their own Kafka broker (started from the same Maven
jars, on other ports, with fresh storage each session), so they never see the events of a
running `make up` stack, and their own PostgreSQL schemas, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from mloop_common.bus import BusConfig, read_topics
from mloop_common.events import Envelope
from tests.stack import ServiceStack

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / "deploy" / "local"
# Another port (and MLOOP_TEST_PORT_OFFSET for the services) lets two test sessions run side by side.
KAFKA_PORT = int(os.environ.get("MLOOP_TEST_KAFKA_PORT", "19092"))
KAFKA_SASL_PORT = KAFKA_PORT + 2
SCRAM_USER, SCRAM_PASSWORD = "mloop-tests", "scram-password-of-the-tests"
TEST_RUN = REPO / ".run" / ("test" if KAFKA_PORT == 19092 else f"test-{KAFKA_PORT}")
PG_PORT = int(os.environ.get("MLOOP_DATABASE_PORT", "55432"))
ADMIN_DSN = f"postgresql://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
ADMIN_URL = f"postgresql+asyncpg://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = str(item.path)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/e2e/" in path or "/tests/faults/" in path or "/tests/ui/" in path:
            item.add_marker(pytest.mark.e2e)


def _kafka_env() -> dict[str, str]:
    return {
        **os.environ,
        "MLOOP_RUN": str(TEST_RUN),
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
        "KAFKA_SASL_PORT": str(KAFKA_SASL_PORT),  # a SCRAM listener too (tests/integration/test_kafka_security.py)
        "KAFKA_SCRAM_USER": SCRAM_USER,
        "KAFKA_SCRAM_PASSWORD": SCRAM_PASSWORD,
    }


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """A fresh single-node KRaft broker for this test session."""
    env = _kafka_env()
    subprocess.run([str(LOCAL / "kafka.sh"), "reset"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([str(LOCAL / "kafka.sh"), "start"], env=env, check=True)
    yield f"127.0.0.1:{KAFKA_PORT}"
    subprocess.run([str(LOCAL / "kafka.sh"), "stop"], env=env, check=False)


@pytest.fixture(scope="session")
def postgres() -> str:
    """The local PostgreSQL (started if needed); tests use the `mloop` role and their own schemas."""
    subprocess.run([str(LOCAL / "postgres.sh"), "start"], check=True, stdout=subprocess.DEVNULL)
    return ADMIN_URL


@contextmanager
def running(services: ServiceStack, *names: str) -> Iterator[ServiceStack]:
    """Start ``names`` (all six by default); afterwards stop them, drop their schemas and check that every
    process exited cleanly (a SIGKILL a test sent itself counts as clean)."""
    try:
        services.start(*names)
        yield services
    finally:
        codes = services.stop()
        asyncio.run(drop_schemas(services.schemas))
    unclean = {name: code for name, code in codes.items() if code not in (0, -signal.SIGTERM, -signal.SIGKILL)}
    assert not unclean, f"services exited uncleanly: {unclean} (logs in {services.logs})"


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """All six services as processes with their own ports (18001..18006), schemas and artifact folder."""
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("stack"), repo=REPO
    )
    with running(services):
        yield services


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def clients(stack: ServiceStack) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    """One HTTP client per service of the stack (for the module, as the stack is)."""
    by_service = {
        name: httpx.AsyncClient(base_url=url, timeout=30, headers=stack.headers) for name, url in stack.urls.items()
    }
    yield by_service
    for client in by_service.values():
        await client.aclose()


async def drop_schemas(names: list[str]) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        for name in names:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
async def schema(postgres: str) -> AsyncIterator[str]:
    """A random schema name, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    yield name
    await drop_schemas([name])


async def eventually(predicate, timeout: float = 20.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Await ``predicate()`` (sync or async) until it is truthy; fail with its last value."""
    deadline = asyncio.get_running_loop().time() + timeout
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool from Debian's prometheus package (fetched into .cache/ when none is installed)."""
    done = subprocess.run(
        [str(REPO / "deploy" / "local" / "promtool.sh")], capture_output=True, text=True, check=True, timeout=600
    )
    return Path(done.stdout.strip().splitlines()[-1])


async def topic_events(bootstrap: str, topic: str, subject: str | None = None) -> list[Envelope]:
    """Every event on ``topic`` (of ``subject``, if given) up to its end offsets now, from the beginning."""
    records = await read_topics(BusConfig(bootstrap), [topic])
    return [e for _, e in records if e is not None and (subject is None or e.subject == subject)]
