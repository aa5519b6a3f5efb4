"""What every service process runs: database + migrations, producer, outbox relay, consumers.

A service's composition root (its ``bootstrap.py``) builds one ``Runtime`` in the app's
lifespan, registers its consumers, and hands ``runtime`` to its handlers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.artifacts import ArtifactStore
from mloop_common.bus import BusConfig, Handler, OutboxRelay, Producer, Subscriber, ensure_topics
from mloop_common.db import Database
from mloop_common.settings import CommonSettings, ServiceSettings
from mloop_common.telemetry import setup_tracing

log = logging.getLogger(__name__)


@dataclass
class ConsumerSpec:
    topics: list[str]
    handler: Handler
    group_suffix: str = ""


class Runtime:
    """The adapters one service process owns, started and stopped together."""

    def __init__(
        self,
        service: str,
        common: CommonSettings,
        own: ServiceSettings,
        *,
        migrations: str | None,
        uses_database: bool = True,
    ):
        self.service = service
        self.common = common
        self.settings = own
        self.bus_config = BusConfig(common.kafka.bootstrap_servers, common.kafka.partitions, f"mloop-{service}")
        self.uses_database = uses_database
        self.db = Database(own.database_url or "", schema=own.database_schema) if uses_database else None
        self.artifacts = ArtifactStore(common.artifacts_root)
        self.producer = Producer(self.bus_config)
        self.relay = OutboxRelay(self.db, self.producer) if self.db else None
        self._migrations = migrations
        self._consumers: list[ConsumerSpec] = []
        self.subscribers: list[Subscriber] = []
        self.code_version = common.code_version or detect_code_version()

    @property
    def group_id(self) -> str:
        return f"mloop-{self.service}"

    def consume(self, topics: list[str], handler: Handler, *, group_suffix: str = "") -> None:
        """Register a consumer; it starts with the runtime."""
        self._consumers.append(ConsumerSpec(topics, handler, group_suffix))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work; events enqueued in it leave right after it commits."""
        assert self.db and self.relay, f"{self.service} runs without a database"
        async with self.db.transaction() as session:
            yield session
        self.relay.wake()

    async def start(self, app: FastAPI | None = None) -> None:
        setup_tracing(self.service)
        if self.db:
            SQLAlchemyInstrumentor().instrument(engine=self.db.engine.sync_engine)
        if self.db and self._migrations:
            await _retry("database", lambda: self.db.migrate(self._migrations))
        await _retry("kafka topics", lambda: ensure_topics(self.bus_config))
        await _retry("kafka producer", self.producer.start)
        if self.relay:
            await self.relay.start()
        for spec in self._consumers:
            subscriber = Subscriber(
                self.bus_config,
                group_id=self.group_id + spec.group_suffix,
                topics=spec.topics,
                handler=spec.handler,
                dlq_producer=self.producer,
            )
            await subscriber.start()
            self.subscribers.append(subscriber)
        if app is not None:
            app.state.checks["broker"] = self._broker_ok
            if self.db:
                app.state.checks["database"] = self.db.ping

    async def _broker_ok(self) -> bool | str:
        if self.relay and not self.relay.running:
            return "outbox relay stopped"
        stopped = [s.group_id for s in self.subscribers if not s.running]
        return f"consumers stopped: {stopped}" if stopped else True

    async def stop(self) -> None:
        for subscriber in self.subscribers:
            await subscriber.stop()
        if self.relay:
            await self.relay.stop()
        await self.producer.stop()
        if self.db:
            await self.db.dispose()


async def _retry(what: str, action, attempts: int = 30, delay: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    """The broker may still be starting when a service starts: wait for it, then give up loudly."""
    for attempt in range(1, attempts + 1):
        try:
            await action()
            return
        except Exception as exc:
            if attempt == attempts:
                raise
            log.warning("%s not reachable yet (%r); retry %d/%d", what, exc, attempt, attempts)
            await asyncio.sleep(delay)


def detect_code_version() -> str:
    """The git commit this code runs from, marked dirty when the tree has changes."""
    root = Path(__file__).resolve().parents[3]
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service's HTTP server; SIGTERM drains consumers through the lifespan."""
    logging.basicConfig(
        level=os.environ.get("MLOOP_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=30)
