"""What every service process runs: database + migrations, producer, outbox relay, consumers.

A service's composition root (its ``bootstrap.py``) builds one ``Runtime`` in the app's
lifespan, registers its consumers, and hands the adapters it owns (``store()``, ``artifacts``,
``producer``) to its handlers; handlers never see the ``Runtime`` itself.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import uvicorn
from fastapi import FastAPI

from mloop_common.artifacts import ArtifactStoreUnusable, S3ArtifactStore, open_artifact_store
from mloop_common.bus import BusConfig, OutboxRelay, Producer, Route, Subscriber, ensure_topics
from mloop_common.http import Starting
from mloop_common.retry import Backoff, retry_call
from mloop_common.settings import ServiceSettings
from mloop_common.telemetry import configure_logging, setup_tracing

# The database layer is imported only by services that have one: serving installs no database driver.
if TYPE_CHECKING:
    from mloop_common.db import Database
    from mloop_common.uow import SqlStore, SqlUnit

    S = TypeVar("S", bound=SqlUnit)

log = logging.getLogger(__name__)

# The broker, the database or the artifact store may still be starting, or be away for a while: a service
# waits for them (its /readyz says what for) and never gives up on its own; its supervisor decides.
STARTUP_BACKOFF = Backoff(initial=0.5, maximum=5.0)
STARTUP_ATTEMPTS: int | None = None
# A consumer whose loop died is restarted this often per process; after that the process exits.
CONSUMER_RESTARTS = 3


@dataclass
class ConsumerSpec:
    routes: list[Route[Any]]
    group_suffix: str = ""
    stop_timeout: float = 30.0
    broadcast: bool = False
    fetch_max_wait_ms: int = 2000


def bus_config(settings: ServiceSettings) -> BusConfig:
    """How this service's Kafka clients connect and create topics (from ``MLOOP_KAFKA__*``)."""
    kafka = settings.common.kafka
    return BusConfig(
        kafka.bootstrap_servers,
        kafka.partitions,
        f"mloop-{settings.service}",
        max_message_bytes=kafka.max_message_bytes,
        replication_factor=kafka.replication_factor or 1,
        min_insync_replicas=kafka.min_insync_replicas,
        security=kafka.client_security(),
    )


class Runtime:
    """The adapters one service process owns, started and stopped together."""

    def __init__(self, settings: ServiceSettings, *, migrations: str | None = None):
        service, common, own = settings.service, settings.common, settings
        uses_database = settings.uses_database
        self.service = service
        self.common = common
        self.settings = own
        self.bus_config = bus_config(settings)
        self.uses_database = uses_database
        self.db: Database | None = None
        if uses_database:
            from mloop_common.db import MAX_MESSAGE_BYTES_INFO, Database

            self.db = Database(
                own.database_url or "",
                schema=own.database_schema,
                pool_size=own.database_pool_size,
                pool_timeout=own.database_pool_timeout_seconds,
            )
            # enqueue() refuses events over the broker's limit when they are staged
            self.db.sessions.configure(info={MAX_MESSAGE_BYTES_INFO: self.bus_config.max_message_bytes})
        self.artifacts = open_artifact_store(common.artifacts_root, common.s3)
        self.producer = Producer(self.bus_config)
        self.relay = (
            OutboxRelay(self.db, self.producer, inbox_retention_seconds=common.inbox_retention_days * 86_400)
            if self.db
            else None
        )
        self._migrations = migrations
        self._consumers: list[ConsumerSpec] = []
        self.subscribers: list[Subscriber] = []
        self.restart_backoff = Backoff(1.0, 10.0)
        self._restarts: dict[str, int] = {}
        self._supervisors: set[asyncio.Task[None]] = set()
        self._on_fatal: Callable[[str], None] | None = None
        self._stopping = False
        self.code_version = common.code_version or detect_code_version()

    @property
    def group_id(self) -> str:
        return f"mloop-{self.service}"

    def consume(
        self,
        *routes: Route[Any],
        group_suffix: str = "",
        stop_timeout: float = 30.0,
        broadcast: bool = False,
        fetch_max_wait_ms: int = 2000,
    ) -> None:
        """Register one consumer (group) for these routes; it starts with the runtime.

        At stop, a handler still running after ``stop_timeout`` seconds is cancelled (its record is redelivered).
        ``broadcast``: every process sees every record, with no consumer group (see ``Subscriber``).
        ``fetch_max_wait_ms``: the longest a busy partition's next records may wait (see ``Subscriber``).
        """
        self._consumers.append(ConsumerSpec(list(routes), group_suffix, stop_timeout, broadcast, fetch_max_wait_ms))

    def store(self, unit: type[S]) -> SqlStore[S]:
        """Units of work of type ``unit`` on this service's schema; staged events leave right after commit."""
        from mloop_common.uow import SqlStore

        if self.db is None or self.relay is None:
            raise RuntimeError(f"{self.service} runs without a database")
        return SqlStore(self.db, unit, consumer=self.group_id, on_commit=self.relay.wake)

    async def start(self, app: FastAPI | None = None) -> None:
        """Migrate, create topics, start the producer, the outbox relay and the consumers.

        ``app.state.on_fatal`` (set by ``serve``) is called with a reason when a consumer died and
        cannot be restarted: the process should then exit non-zero so that its supervisor restarts it.
        """
        starting = None
        if app is not None:
            self._on_fatal = getattr(app.state, "on_fatal", None)
            app.state.code_version = self.code_version  # /healthz shows it
            starting = getattr(app.state, "starting", None)
        setup_tracing(self.service)
        db, migrations = self.db, self._migrations
        if db:
            from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

            SQLAlchemyInstrumentor().instrument(engine=db.engine.sync_engine)
        artifacts = self.artifacts
        if isinstance(artifacts, S3ArtifactStore):
            # A missing bucket or refused credentials stop the service now, not at the first artifact it stores;
            # an endpoint that does not answer yet is waited for like the broker and the database.
            await _retry("artifact store", lambda: asyncio.to_thread(artifacts.check), _store_may_recover, starting)
        if db and migrations:
            await _retry("database", lambda: db.migrate(migrations), starting=starting)
        await _retry("kafka topics", lambda: ensure_topics(self.bus_config), starting=starting)
        await _retry("kafka producer", self.producer.start, starting=starting)
        if self.relay:
            await self.relay.start()
        for spec in self._consumers:
            subscriber = Subscriber(
                self.bus_config,
                group_id=self.group_id + spec.group_suffix,
                routes=spec.routes,
                dlq_producer=self.producer,
                on_failure=self._consumer_died,
                stop_timeout=spec.stop_timeout,
                broadcast=spec.broadcast,
                fetch_max_wait_ms=spec.fetch_max_wait_ms,
            )
            await subscriber.start()
            self.subscribers.append(subscriber)
        if app is not None:
            app.state.checks["broker"] = self._broker_ok
            if self.db:
                app.state.checks["database"] = self.db.ping

    async def _broker_ok(self) -> bool | str:
        problems = ["outbox relay stopped"] if self.relay and not self.relay.running else []
        problems += [f"consumer {s.group_id} stopped: {s.error!r}"[:300] for s in self.subscribers if not s.running]
        return "; ".join(problems) or True

    def _consumer_died(self, subscriber: Subscriber, error: BaseException) -> None:
        if self._stopping:
            return
        task = asyncio.get_running_loop().create_task(self._revive(subscriber, error))
        self._supervisors.add(task)
        task.add_done_callback(self._supervisors.discard)

    async def _revive(self, subscriber: Subscriber, error: BaseException) -> None:
        """Restart a consumer whose loop died; if that fails (or keeps happening), end the process."""
        group = subscriber.group_id
        self._restarts[group] = restarts = self._restarts.get(group, 0) + 1
        if restarts > CONSUMER_RESTARTS:
            self._fatal(f"consumer {group} died {restarts} times, last with {error!r}")
            return
        try:
            await retry_call(
                subscriber.restart, what=f"restarting consumer {group}", backoff=self.restart_backoff, attempts=5
            )
        except Exception as exc:
            self._fatal(f"consumer {group} died ({error!r}) and cannot be restarted: {exc!r}")
            return
        log.warning("consumer %s restarted after its loop died (%d/%d)", group, restarts, CONSUMER_RESTARTS)

    def _fatal(self, reason: str) -> None:
        log.critical("%s: %s", self.service, reason)
        if self._on_fatal is not None:
            self._on_fatal(reason)

    async def stop(self) -> None:
        self._stopping = True
        for task in list(self._supervisors):
            task.cancel()
        for subscriber in self.subscribers:
            await subscriber.stop()
        if self.relay:
            await self.relay.stop()
        await self.producer.stop()
        if self.db:
            await self.db.dispose()


async def _retry(
    what: str,
    action: Callable[[], Awaitable[object]],
    retry_if: Callable[[BaseException], bool] = lambda exc: isinstance(exc, Exception),
    starting: Starting | None = None,
) -> None:
    """A dependency may still be starting when a service starts: wait for it, telling ``starting`` (the app's
    start-up state, which /readyz shows) of each failed attempt."""
    await retry_call(
        action,
        what=f"connecting to the {what}",
        backoff=STARTUP_BACKOFF,
        attempts=STARTUP_ATTEMPTS,
        retry_if=retry_if,
        on_retry=functools.partial(starting.waiting, what) if starting is not None else None,
    )


def _store_may_recover(error: BaseException) -> bool:
    return isinstance(error, ArtifactStoreUnusable) and error.transient


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


class _Server(uvicorn.Server):
    """uvicorn's server with its housekeeping tick once a second instead of ten times.

    The tick refreshes the Date header (once a second either way) and notices a requested exit
    (now within a second); ten wake-ups a second were most of what an idle service cost.
    """

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864_000  # on_tick counts tenths of a second
            await asyncio.sleep(1.0)
            should_exit = await self.on_tick(counter)


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run one service's HTTP server; SIGTERM drains consumers through the lifespan.

    A fatal runtime failure (``app.state.on_fatal``: a consumer that cannot be restarted) shuts the
    server down the same way and the process exits with status 1.
    """
    configure_logging(settings.service)
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    server = _Server(
        # log_config=None: uvicorn's own lines go through the root handler too (JSON by default), not its formatter.
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level="warning",
            log_config=None,
            timeout_graceful_shutdown=30,
        )
    )
    fatal: list[str] = []

    def shut_down(reason: str) -> None:
        fatal.append(reason)
        server.should_exit = True

    app.state.on_fatal = shut_down
    server.run()
    if fatal:
        log.critical("%s exits: %s", settings.service, "; ".join(fatal))
        sys.exit(1)
    if not server.started:
        sys.exit(3)  # startup failed (uvicorn.run's status for it)
