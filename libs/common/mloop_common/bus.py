"""All Kafka client code: topics, producer, consumer runner (retries, DLQ, commits), outbox relay.

Delivery is at least once. A consumer commits offset+1 for a partition only after its
handler returned (the handler commits its own database transaction, which records the
event id in the inbox), so a crash replays the message and the inbox makes it a no-op.

What a failed handler means is decided in one place, ``classify``:

- ``transient``: a dependency is down (the database restarting, a dropped connection, the broker or
  another service unreachable). Waited out with backoff for as long as it lasts, never dead-lettered,
  and not counted against ``max_attempts``.
- ``permanent``: the message can never succeed (not a valid event, a payload that does not validate,
  data the database refuses, such as a number out of range). Dead-lettered at once.
- ``retry``: anything else (a bug, a lost race). Retried up to ``max_attempts``, then dead-lettered.

Nothing ends a consumer's loop silently: a record that cannot even be decoded is dead-lettered, a
failed DLQ write leaves the record uncommitted and is retried, and any other error is logged, counted
(``mloop_consumer_errors_total``) and the loop goes on from the first record it had not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import BrokerResponseError, CommitFailedError, KafkaError, TopicAlreadyExistsError
from opentelemetry.trace import Span
from prometheus_client import Counter, Gauge, Histogram

from mloop_common.errors import PayloadTooLarge, PermanentError, TransientError
from mloop_common.events import (
    ALL_TOPICS,
    MAX_MESSAGE_BYTES,
    TOPIC_OF,
    Envelope,
    Header,
    InvalidEvent,
    P,
    dlq_topic,
    ensure_fits,
    from_record,
    to_record,
)
from mloop_common.faults import CONSUMER_BEFORE_OFFSET_COMMIT, OUTBOX_BEFORE_MARK_SENT, fault_point
from mloop_common.retry import Backoff
from mloop_common.telemetry import consumer_span, current_trace_headers, end_send_span, start_send_span

if TYPE_CHECKING:  # the relay's database side is imported where used: serving has no database
    import asyncpg  # type: ignore[import-untyped]

    from mloop_common.db import Database, OutboxRow

log = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes, list[Header]]  # topic, key, value, headers


@dataclass(frozen=True)
class Route(Generic[P]):
    """A typed subscription: the handler sees the validated payload model, plus the envelope for its ids.

    A record whose payload does not validate never reaches the handler: it is dead-lettered at the edge.
    """

    payload: type[P]
    handler: Callable[[P, Envelope], Awaitable[None]]
    topic: str


def route(payload: type[P], handler: Callable[[P, Envelope], Awaitable[None]], *, topic: str | None = None) -> Route[P]:
    """Subscribe ``handler`` to the topic that carries ``payload`` (or to ``topic``, for payloads of tests)."""
    return Route(payload, handler, topic or TOPIC_OF[payload])


CONSUMED = Counter("mloop_events_consumed_total", "Events handled by a consumer", ["topic", "group", "outcome"])
# Handlers range from milliseconds (a prediction batch) to hours (a training run).
HANDLER_BUCKETS = (0.005, 0.025, 0.1, 0.25, 1, 2.5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 14400)
HANDLER_SECONDS = Histogram(
    "mloop_event_handler_seconds", "Time spent in an event handler", ["topic", "group"], buckets=HANDLER_BUCKETS
)
HANDLER_FAILURES = Counter(
    "mloop_event_handler_failures_total",
    "Failed handler attempts, by classification (transient, retry, permanent)",
    ["topic", "group", "kind"],
)
PUBLISHED = Counter("mloop_events_published_total", "Events published to Kafka", ["topic"])
CONSUMER_LAG = Gauge(
    "mloop_consumer_lag", "Records on a partition not yet handled by the group", ["group", "topic", "partition"]
)
DEAD_LETTERED = Counter("mloop_events_dead_lettered_total", "Events sent to a DLQ", ["topic", "group"])
CONSUMER_ERRORS = Counter(
    "mloop_consumer_errors_total",
    "Errors in a consumer's own loop, not its handler (stage: poll, dlq, loop, died); the consumer goes on",
    ["group", "stage"],
)
OUTBOX_SET_ASIDE = Counter(
    "mloop_outbox_set_aside_total", "Outbox rows the broker refused for good, copied to the DLQ instead", ["topic"]
)
RELAY_ERRORS = Counter("mloop_outbox_relay_errors_total", "Outbox publish rounds that failed (retried with backoff)")
# Measured when a publish round fails (the backlog that waits) and zero once a round finds nothing to send.
OUTBOX_PENDING = Gauge("mloop_outbox_pending_events", "Committed events not yet published to Kafka")
OUTBOX_OLDEST_AGE = Gauge(
    "mloop_outbox_oldest_pending_age_seconds", "Age of the oldest committed event not yet published to Kafka"
)


# --- what a failure means -------------------------------------------------------------------

Verdict = Literal["transient", "permanent", "retry"]

# PostgreSQL SQLSTATEs of a database that is down, restarting, overloaded or failing over.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "53")  # connection exception, insufficient resources (e.g. 53300)
_TRANSIENT_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend, a fast shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now: starting up or recovering
        "25006",  # read_only_sql_transaction: connected to a standby during a failover
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "55P03",  # lock_not_available
        "58000",  # system_error
        "58030",  # io_error
    }
)
_PERMANENT_SQLSTATE_CLASSES = ("22",)  # data exception: this message's data fails however often it is retried

# Without a SQLSTATE, by class name (anywhere in the class's MRO), so that neither sqlalchemy nor
# asyncpg needs to be importable here.
_TRANSIENT_NAMES = frozenset(
    {
        "ConnectionError",  # builtins (refused, reset, aborted, broken pipe)
        "TimeoutError",  # builtins and asyncio, and sqlalchemy's pool timeout
        "gaierror",  # name resolution
        "OperationalError",  # DBAPI: the database's operation, e.g. an unexpected disconnect
        "InterfaceError",  # DBAPI and asyncpg: "connection is closed"
        "DisconnectionError",  # sqlalchemy
        "ConnectionDoesNotExistError",  # asyncpg
        "PostgresConnectionError",  # asyncpg
        "TransportError",  # httpx: connect, read, write and pool errors and timeouts
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "KafkaUnavailableError",
        "NoBrokersAvailable",
        # The idempotent producer's state after the broker refused a batch; the producer renews itself.
        "OutOfOrderSequenceNumber",
        "UnknownProducerId",
        "InvalidProducerEpoch",
    }
)
_PERMANENT_NAMES = frozenset(
    {
        "DataError",  # DBAPI: the data, not the database
        # What the broker refuses to store, however often it is sent:
        "MessageSizeTooLargeError",
        "RecordTooLargeError",
        "RecordListTooLargeError",
        "InvalidTopicError",
        "CorruptRecordException",
        "InvalidMessageError",
        "InvalidTimestampError",
        "UnsupportedForMessageFormatError",
    }
)
_WAIT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.EHOSTDOWN,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.ETIMEDOUT,
        errno.EPIPE,
        # A full disk or quota (an artifact or spool write): the work is fine, space comes back.
        errno.ENOSPC,
        errno.EDQUOT,
    }
)


def classify(exc: BaseException) -> Verdict:
    """What a failure means: ``transient`` (a dependency is down: wait), ``permanent`` (the message can
    never succeed: dead-letter it now) or ``retry`` (anything else: a few attempts, then dead-letter).

    mloop's own error tree decides first, then the first SQLSTATE along the chain of wrapped errors
    (SQLAlchemy's ``orig``, explicit causes), then class names along it.
    """
    chain = _chain(exc)
    for error in chain:
        if isinstance(error, TransientError):
            return "transient"
        if isinstance(error, PermanentError | PayloadTooLarge):
            return "permanent"
    for error in chain:
        state = _sqlstate(error)
        if state is None:
            continue
        if state in _TRANSIENT_SQLSTATES or state.startswith(_TRANSIENT_SQLSTATE_CLASSES):
            return "transient"
        if state.startswith(_PERMANENT_SQLSTATE_CLASSES):
            return "permanent"
        return "retry"  # a definite answer of the database: a bug, or a race (23xxx) a retry may resolve
    for error in chain:
        names = {cls.__name__ for cls in type(error).__mro__}
        if names & _PERMANENT_NAMES:
            return "permanent"
        if (
            names & _TRANSIENT_NAMES
            or getattr(error, "connection_invalidated", False) is True  # sqlalchemy: the connection died
            or (type(error).__module__.startswith("aiokafka") and getattr(error, "retriable", False) is True)
            or (isinstance(error, OSError) and error.errno in _WAIT_ERRNOS)
        ):
            return "transient"
    return "retry"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: a DBAPI wrapper's ``orig`` and explicit causes (``raise ... from``)."""
    chain: list[BaseException] = []
    todo = [exc]
    while todo and len(chain) < 16:
        error = todo.pop(0)
        if any(error is seen for seen in chain):
            continue
        chain.append(error)
        todo += [e for e in (getattr(error, "orig", None), error.__cause__) if isinstance(e, BaseException)]
    return chain


def _sqlstate(error: BaseException) -> str | None:
    for attribute in ("sqlstate", "pgcode"):  # asyncpg and sqlalchemy's adapted errors; psycopg
        value = getattr(error, attribute, None)
        if isinstance(value, str) and len(value) == 5:
            return value.upper()
    return None


# --- topics and producer --------------------------------------------------------------------


@dataclass(frozen=True)
class BusConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = 3
    client_id: str = "mloop"
    # Largest record (key + value + headers) mloop creates; the broker's default limit is 1 MiB.
    max_message_bytes: int = MAX_MESSAGE_BYTES
    replication_factor: int = 1
    min_insync_replicas: int | None = None  # None: the broker's default
    # How every client connects: security_protocol, sasl_* and ssl_context, as aiokafka names them.
    security: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def connection(self) -> dict[str, Any]:
        """The keyword arguments every aiokafka client of this bus starts with."""
        return {"bootstrap_servers": self.bootstrap_servers, **self.security}


async def ensure_topics(config: BusConfig, topics: Iterable[str] = ALL_TOPICS, *, with_dlq: bool = True) -> None:
    """Create the topics (and their DLQs) that do not exist yet; auto-create is off on the broker."""
    wanted = set(topics)
    if with_dlq:
        wanted |= {dlq_topic(t) for t in wanted if not t.endswith(".dlq")}
    admin = AIOKafkaAdminClient(**config.connection(), client_id=config.client_id)
    await admin.start()
    try:
        missing = wanted - set(await admin.list_topics())
        if missing:
            configs = {"min.insync.replicas": str(config.min_insync_replicas)} if config.min_insync_replicas else {}
            new = [
                NewTopic(
                    name=t,
                    num_partitions=config.partitions,
                    replication_factor=config.replication_factor,
                    topic_configs=configs,
                )
                for t in sorted(missing)
            ]
            response = await admin.create_topics(new)
            # Errors come per topic, not raised; one that already exists was made by another service just now.
            failed = [e for e in response.topic_errors if e[1] not in (0, TopicAlreadyExistsError.errno)]
            if failed:
                raise KafkaError(f"creating topics failed: {failed}")
    finally:
        await admin.close()


class Producer:
    """Idempotent producer (acks=all) that publishes envelopes and raw records (outbox rows, DLQ copies)."""

    def __init__(self, config: BusConfig) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None
        self._renewing = asyncio.Lock()

    async def start(self) -> None:
        self._producer = await self._started_client()

    async def _started_client(self) -> AIOKafkaProducer:
        # aiokafka clients bind to the running loop, so they are built here, not in __init__.
        producer = AIOKafkaProducer(
            **self.config.connection(),
            client_id=self.config.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
            # Never below aiokafka's default; room for the headers a DLQ copy adds to a record at the limit.
            max_request_size=max(1_048_576, self.config.max_message_bytes + 65_536),
        )
        await producer.start()
        return producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    @property
    def _client(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("producer is not started")
        return self._producer

    async def publish(self, event: Envelope) -> None:
        """Publish one event now (outside any transaction); prefer the outbox for state changes.

        An event over ``BusConfig.max_message_bytes`` raises ``PayloadTooLarge`` and is not sent.
        """
        if event.traceparent is None:
            event = event.with_trace(*current_trace_headers())
        key, value, headers = to_record(event)
        ensure_fits(event.topic, key, value, headers, self.config.max_message_bytes)
        await self.send_raw(event.topic, key, value, headers)

    async def send_raw(self, topic: str, key: bytes, value: bytes, headers: list[Header]) -> None:
        [error] = await self.send_each([(topic, key, value, headers)])
        if error is not None:
            raise error

    async def send_each(self, records: Sequence[Record]) -> list[Exception | None]:
        """Send a batch, wait for the broker's answers, and return each record's error (None: stored)."""
        client = self._client
        pending: list[asyncio.Future[Any] | Exception] = []
        spans: list[Span] = []  # one PRODUCER span per record; on the wire, its context replaces the record's
        errors: list[Exception | None] = []
        try:
            for topic, key, value, headers in records:
                span, headers = start_send_span(topic, key, headers, client_id=self.config.client_id)
                spans.append(span)
                try:
                    pending.append(await client.send(topic, value=value, key=key, headers=headers))
                except Exception as exc:  # refused before sending, e.g. over max_request_size
                    pending.append(exc)
            for (topic, *_), outcome, span in zip(records, pending, spans, strict=True):
                if isinstance(outcome, Exception):
                    end_send_span(span, error=outcome)
                    errors.append(outcome)
                    continue
                try:
                    metadata = await outcome
                except Exception as exc:
                    end_send_span(span, error=exc)
                    errors.append(exc)
                    continue
                end_send_span(span, partition=metadata.partition, offset=metadata.offset)
                PUBLISHED.labels(topic).inc()
                errors.append(None)
        finally:
            for span in spans:
                if span.is_recording():  # cancelled while waiting for the broker
                    span.end()
        if any(isinstance(e, BrokerResponseError) and not e.retriable for e in errors):
            await self._renew(client)
        return errors

    async def _renew(self, old: AIOKafkaProducer) -> None:
        """Replace the client after the broker refused a batch (too large, say).

        The refused batch used up sequence numbers the broker never stored, so every later send of
        this idempotent producer to that partition would fail as out of order; a new producer id
        starts the sequences afresh.
        """
        async with self._renewing:
            current = self._producer
            if current is None or current is not old:
                return  # renewed (or stopped) meanwhile
            log.warning("producer %s: the broker refused a batch; starting a fresh producer", self.config.client_id)
            self._producer = await self._started_client()
        with contextlib.suppress(Exception):
            await old.stop()

    async def ensure_topic(self, topic: str) -> None:
        """Create ``topic`` if the broker does not know it (how dead-letter topics are made on first use).

        Without this, sending to a missing topic waits for its metadata for the whole request timeout.
        """
        client = self._client.client
        if client.cluster.partitions_for_topic(topic) is None:
            await client.add_topic(topic)  # a metadata refresh that includes it
        if client.cluster.partitions_for_topic(topic) is None:
            await ensure_topics(self.config, [topic], with_dlq=False)


# --- consumers ------------------------------------------------------------------------------


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, group: str) -> None:
        self.group = group

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("%s: partitions revoked %s", self.group, sorted(str(tp) for tp in revoked))
        for tp in revoked:
            # Another member reports this partition's lag now; a frozen series here would look like lag.
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.group, tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            log.info("%s: partitions assigned %s", self.group, sorted(str(tp) for tp in assigned))


class Subscriber:
    """Runs one consumer group: handle each record, retry with backoff, DLQ, then commit.

    Args:
        config: the broker.
        group_id: the consumer group; its partitions are shared with other members of the group.
        routes: the typed subscriptions (one per topic).
        dlq_producer: writes the copies of failed records to ``<topic>.dlq``.
        max_attempts: failed attempts (not counting transient ones) before a record is dead-lettered.
        backoff_seconds, max_backoff_seconds: the retry backoff (exponential with jitter).
        max_poll_interval_ms: the group's limit between polls; long handlers keep polling (paused).
        poll_while_busy_seconds: how often a long handler's consumer polls to stay in the group.
        poll_timeout_ms: how long one idle poll waits for records (stop() waits up to this long).
        fetch_max_wait_ms: how long the broker holds a fetch while it has nothing new. The client keeps one
            fetch in flight per broker, and a partition whose fetched records are still being handled is left
            out of it; once they are handled, that partition's next records wait for the fetch in flight (held
            for the idle partitions) to come back: up to this long. A long wait saves idle round trips (each
            costs a little CPU); a consumer of a busy topic takes a short one (drift: at 2000 ms it handled
            2,000 predictions/s in bursts, 4,500 records behind at times; at 500 ms, never over 1,000).
        max_partition_fetch_bytes: how much one fetch brings of each partition. Events come close to the
            1 MiB message limit (a prediction log batch is split at 900 kB), so the client's 1 MiB default
            brought one event per round trip, and the consumer waited on the broker as long as it worked
            (drift drained a backlog at 1,790 records/s; 3,230 with 8 MiB). At most this much per
            assigned partition is held in memory.
        lag_report_seconds: how often consumer lag is reported while no records arrive.
        on_failure: called with the subscriber and the error if its loop ever dies.
        stop_timeout: how long stop() lets the record in hand finish before cancelling its handler.
        broadcast: every process with this subscriber sees every record (serving replicas and promotions):
            no consumer group on the broker (``group_id`` only names it in logs and metrics), nothing is
            committed, and it reads from the end of each partition as of start(); what came before is the
            caller's to catch up on (serving loads every production model from the registry after start).
    """

    def __init__(
        self,
        config: BusConfig,
        *,
        group_id: str,
        routes: Iterable[Route[Any]],
        dlq_producer: Producer,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 10.0,
        max_poll_interval_ms: int = 300_000,
        poll_while_busy_seconds: float = 5.0,
        poll_timeout_ms: int = 1000,
        fetch_max_wait_ms: int = 2000,
        max_partition_fetch_bytes: int = 8 * 1024 * 1024,
        lag_report_seconds: float = 5.0,
        on_failure: Callable[[Subscriber, BaseException], None] | None = None,
        stop_timeout: float = 30.0,
        broadcast: bool = False,
    ) -> None:
        self.group_id = group_id
        self.broadcast = broadcast
        self.stop_timeout = stop_timeout
        self._poll_while_busy = poll_while_busy_seconds
        self._poll_timeout_ms = poll_timeout_ms
        self._lag_interval = lag_report_seconds
        self._next_lag_report = 0.0
        self._routes = {r.topic: r for r in routes}
        self.topics = list(self._routes)
        self._dlq = dlq_producer
        self._max_attempts = max_attempts
        self._backoff = Backoff(backoff_seconds, max_backoff_seconds)
        self._on_failure = on_failure
        self._consumer_options = {
            **config.connection(),
            "client_id": f"{config.client_id}-{group_id}",
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "metadata_max_age_ms": 30_000,
            "fetch_max_wait_ms": fetch_max_wait_ms,
            "max_partition_fetch_bytes": max_partition_fetch_bytes,
            # The fetcher's safety-net wake-up; it reacts to polls, seeks, pauses and rebalances at once.
            "consumer_timeout_ms": 1000,
        }
        if broadcast:
            # No group, so no orphan groups named after pods that are gone; every partition, from now on.
            self._consumer_options.update({"group_id": None, "auto_offset_reset": "latest"})
        self._consumer: AIOKafkaConsumer = None  # built in start()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.assigned = asyncio.Event()
        self.error: BaseException | None = None  # why the loop died, if it did

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self._consumer_options)
        if self.broadcast:
            consumer.subscribe(self.topics)
        else:
            consumer.subscribe(self.topics, listener=_Rebalance(self.group_id))
        await consumer.start()
        if self.broadcast:
            # Resolve "the end" now: a record published after start() returns is never skipped.
            for tp in consumer.assignment():
                await consumer.position(tp)
        self._consumer = consumer
        self.error = None
        self._task = asyncio.create_task(self._run(), name=f"subscriber-{self.group_id}")
        self._task.add_done_callback(self._finished)

    async def restart(self) -> None:
        """Start a new consumer in the same group after the loop died; it resumes from the committed offsets."""
        if self.running:
            return
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        await self.start()

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the record in hand within ``timeout`` (default: ``stop_timeout``), commit it, leave the group.

        A handler still running then is cancelled: its record stays uncommitted and is delivered again, to
        this group's next member (its transaction rolled back, the inbox makes the redelivery safe).
        """
        self._stopping.set()
        timeout = self.stop_timeout if timeout is None else timeout
        if self._task is not None and not self._task.done():
            await asyncio.wait({self._task}, timeout=timeout)
            if not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task})
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def _finished(self, task: asyncio.Task[None]) -> None:
        """The loop task ended: expected after stop(), otherwise it died and readiness shows why."""
        error = None if task.cancelled() else task.exception()  # retrieved, so asyncio does not warn
        if self._stopping.is_set():
            if error is not None:
                log.error("%s: consume loop failed while stopping: %r", self.group_id, error, exc_info=error)
            return
        self.error = error or asyncio.CancelledError("consume loop cancelled")
        CONSUMER_ERRORS.labels(self.group_id, "died").inc()
        log.critical("%s: consume loop died: %r", self.group_id, self.error, exc_info=error)
        if self._on_failure is not None:
            self._on_failure(self, self.error)

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            unfinished: dict[TopicPartition, int] = {}  # partition -> offset of its first record not done with
            try:
                batch = await self._consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=100)
                if self._consumer.assignment():
                    self.assigned.set()
                unfinished = {tp: records[0].offset for tp, records in batch.items() if records}
                for tp, records in batch.items():
                    for record in records:
                        if self._stopping.is_set() or tp not in self._consumer.assignment():
                            break  # uncommitted records are redelivered to whoever owns the partition
                        if not await self._handle(record):
                            break  # shutting down mid-retry: leave it uncommitted for the next owner
                        fault_point(CONSUMER_BEFORE_OFFSET_COMMIT)  # test hook (tests/faults/)
                        if not await self._commit(tp, record.offset + 1):
                            break  # _commit put the position back
                        unfinished[tp] = record.offset + 1
                    unfinished.pop(tp, None)
                await self._report_lag(fetched=bool(batch))
            except Exception as exc:
                failures += 1
                self._rewind(unfinished)
                delay = self._backoff.delay(failures)
                if isinstance(exc, KafkaError):
                    CONSUMER_ERRORS.labels(self.group_id, "poll").inc()
                    log.warning("%s: poll failed (%r); retrying in %.1fs", self.group_id, exc, delay)
                else:
                    CONSUMER_ERRORS.labels(self.group_id, "loop").inc()
                    log.exception(
                        "%s: unexpected error in the consume loop; resuming from the first unfinished record in %.1fs",
                        self.group_id,
                        delay,
                    )
                await self._pause(delay)
            else:
                failures = 0

    def _rewind(self, unfinished: dict[TopicPartition, int]) -> None:
        """Put positions back to records fetched but not done with, so the next poll returns them again."""
        with contextlib.suppress(Exception):
            assignment = self._consumer.assignment()
            for tp, offset in unfinished.items():
                if tp in assignment:
                    self._consumer.seek(tp, offset)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up for stop()."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _report_lag(self, *, fetched: bool) -> None:
        """Consumer lag per partition, from the broker's high watermark seen in the last fetch.

        After every batch, and every ``lag_report_seconds`` while idle (it costs little, but not nothing).
        """
        now = time.monotonic()
        if not fetched and now < self._next_lag_report:
            return
        self._next_lag_report = now + self._lag_interval
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(Exception):
                position = await self._consumer.position(tp)
                CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(max(highwater - position, 0))

    async def _run_while_polling(self, work: Awaitable[None]) -> None:
        """Await a handler (or a retry's backoff); if it runs long, keep polling with every partition paused.

        Polling is what tells the group coordinator this consumer is alive (max_poll_interval_ms),
        so a fit that takes an hour neither gets the consumer evicted nor needs a huge interval.
        """
        task = asyncio.ensure_future(work)
        paused: set[TopicPartition] = set()
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._poll_while_busy)
                if done:
                    break
                paused = self._consumer.assignment()
                self._consumer.pause(*paused)
                # Paused partitions return nothing; one assigned by a rebalance since the pause might,
                # so its position is put back to be handled after this record.
                try:
                    stray = await self._consumer.getmany(timeout_ms=0)
                except KafkaError as exc:  # the work goes on; the next poll tries again
                    log.warning("%s: poll during a long handler failed: %r", self.group_id, exc)
                    continue
                for tp, records in stray.items():
                    if records:
                        self._consumer.seek(tp, records[0].offset)
        finally:
            if not task.done():
                task.cancel()
            if paused:
                self._consumer.resume(*(paused & self._consumer.assignment()))
        task.result()

    async def _commit(self, tp: TopicPartition, offset: int) -> bool:
        if self.broadcast:
            return True  # no group, nothing to commit: a restart reads from the end again
        try:
            await self._consumer.commit({tp: offset})
            return True
        except (CommitFailedError, KafkaError) as exc:
            # A rebalance took the partition; the new owner replays it and the inbox dedupes.
            log.warning("%s: commit of %s@%d failed: %s", self.group_id, tp, offset, exc)
            with contextlib.suppress(Exception):
                self._consumer.seek(tp, offset - 1)
            return False

    async def _handle(self, record: ConsumerRecord) -> bool:
        """Handle one record; True when it is done with (handled or dead-lettered) and may be committed."""
        topic = record.topic
        try:
            event = from_record(record.value, record.headers)
            route = self._routes.get(event.type)
            if route is None:
                raise InvalidEvent(f"{self.group_id} has no handler for events of type {event.type!r}")
            payload = event.decode(route.payload)
        except Exception as exc:  # not an event this consumer can read, e.g. JSON nested too deep to parse
            return await self._dead_letter(record, exc, attempts=1)
        counted = 0  # failed attempts that count against max_attempts: waiting out an outage does not
        tries = 0
        while True:
            tries += 1
            started = time.perf_counter()
            try:
                with consumer_span(
                    event, self.group_id, partition=record.partition, offset=record.offset, key=record.key
                ):
                    await self._run_while_polling(route.handler(payload, event))
            except Exception as exc:
                verdict = classify(exc)
                HANDLER_FAILURES.labels(topic, self.group_id, verdict).inc()
                if verdict != "transient":
                    counted += 1
                if verdict == "permanent" or counted >= self._max_attempts:
                    return await self._dead_letter(record, exc, attempts=counted)
                if self._stopping.is_set():
                    return False
                delay = self._backoff.delay(tries)
                log.warning(
                    "%s: %s %s failed (%s; attempt %d/%d counted): %r; retrying in %.1fs",
                    self.group_id,
                    topic,
                    event.id,
                    verdict,
                    counted,
                    self._max_attempts,
                    exc,
                    delay,
                )
                await self._run_while_polling(self._pause(delay))
                if self._stopping.is_set():
                    return False
                continue
            finally:
                HANDLER_SECONDS.labels(topic, self.group_id).observe(time.perf_counter() - started)
            CONSUMED.labels(topic, self.group_id, "ok").inc()
            return True

    async def _dead_letter(self, record: ConsumerRecord, exc: BaseException, *, attempts: int) -> bool:
        """Copy ``record`` to its DLQ; True once the broker has it.

        A failed write is retried with backoff while the record stays uncommitted; False if the
        consumer stops first.
        """
        log.error(
            "%s: %s@%d offset %d goes to the DLQ after %d attempt(s): %r",
            self.group_id,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            exc,
        )
        topic = dlq_topic(record.topic)
        key, value = record.key or b"", record.value or b""
        headers = list(record.headers or ()) + [
            ("x-mloop-error", f"{type(exc).__name__}: {exc}"[:4000].encode()),
            ("x-mloop-original-topic", record.topic.encode()),
            ("x-mloop-original-partition", str(record.partition).encode()),
            ("x-mloop-original-offset", str(record.offset).encode()),
            ("x-mloop-attempts", str(attempts).encode()),
            ("x-mloop-consumer-group", self.group_id.encode()),
        ]
        failures = 0
        while True:
            try:
                await self._dlq.ensure_topic(topic)
                await self._dlq.send_raw(topic, key, value, headers)
                break
            except Exception as error:
                failures += 1
                CONSUMER_ERRORS.labels(self.group_id, "dlq").inc()
                if value and classify(error) == "permanent":
                    # Too large even for the DLQ with its error headers: keep those, the original stays
                    # in its topic (x-mloop-original-offset) until retention removes it.
                    log.error(
                        "%s: %s refused the record (%r); dead-lettering it without its value",
                        self.group_id,
                        topic,
                        error,
                    )
                    headers.append(("x-mloop-value-omitted", str(len(value)).encode()))
                    value = b""
                    continue
                if self._stopping.is_set():
                    return False
                delay = self._backoff.delay(failures)
                log.warning(
                    "%s: writing %s@%d offset %d to %s failed (%r); it stays uncommitted, retrying in %.1fs",
                    self.group_id,
                    record.topic,
                    record.partition,
                    record.offset,
                    topic,
                    error,
                    delay,
                )
                await self._run_while_polling(self._pause(delay))
                if self._stopping.is_set():
                    return False
        DEAD_LETTERED.labels(record.topic, self.group_id).inc()
        CONSUMED.labels(record.topic, self.group_id, "dead_lettered").inc()
        return True


# --- outbox relay ---------------------------------------------------------------------------


@dataclass
class _RowFailures:
    """Failed sends per outbox row (by seq) that count towards setting it aside; outages do not count."""

    limit: int
    counts: dict[int, int] = field(default_factory=dict)

    def hopeless(self, seq: int) -> bool:
        if len(self.counts) > 10_000:  # rows another relay took over never come back here
            self.counts.clear()
        self.counts[seq] = self.counts.get(seq, 0) + 1
        return self.counts[seq] >= self.limit


class OutboxRelay:
    """Publishes committed outbox rows in order and marks them sent; safe to run in several processes.

    It wakes when a commit in this process staged events (``wake()``), when one in another process
    did (PostgreSQL LISTEN/NOTIFY on a dedicated connection), and otherwise polls rarely: after
    ``idle_seconds``, doubling while nothing comes, up to ``max_idle_seconds``. A row the broker
    refuses for good (too large, invalid) is copied to its topic's DLQ and marked sent, so the
    rows after it still go out, in order.
    """

    def __init__(
        self,
        db: Database,
        producer: Producer,
        *,
        batch_size: int = 200,
        idle_seconds: float = 0.1,
        max_idle_seconds: float = 5.0,
        retention_seconds: float = 86_400,
        inbox_retention_seconds: float = 30 * 86_400,
        max_attempts: int = 5,
        backoff: Backoff = Backoff(0.5, 10.0),
        listen: bool = True,
    ):
        self._retention = retention_seconds
        self._inbox_retention = inbox_retention_seconds
        self._next_purge = 0.0
        self._db = db
        self._producer = producer
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._max_idle = max_idle_seconds
        self._backoff = backoff
        self._failures = _RowFailures(max_attempts)
        self._listen_enabled = listen and db.engine.dialect.name == "postgresql" and db.engine.driver == "asyncpg"
        self._listen_check_seconds = 30.0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self.listening = False  # a LISTEN connection is up

    def wake(self) -> None:
        """Hint that new rows were committed, so they leave without waiting for the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")
        if self._listen_enabled:
            self._listener = asyncio.create_task(self._listen(), name="outbox-listener")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._listener is not None:
            self._listener.cancel()  # it may be waiting for a database that does not answer
            await asyncio.wait({self._listener})
        if self._task is not None:
            await asyncio.wait({self._task})
        # Publish whatever a last handler committed before shutdown.
        with contextlib.suppress(Exception):
            while await self.publish_pending():
                pass

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows left the outbox (sent, or set aside in the DLQ).

        If a row cannot be sent for now (the broker unreachable...), what did go out is marked sent
        and that row's error is raised, so the caller backs off and the row leaves first next time.
        """
        from mloop_common.db import lock_pending, mark_sent

        stuck: Exception | None = None
        async with self._db.transaction() as session:
            rows = await lock_pending(session, self._batch_size)
            if not rows:
                return 0
            limit = self._producer.config.max_message_bytes
            sendable = [row for row in rows if row.size <= limit]
            results = await self._producer.send_each([_record(row) for row in sendable])
            outcomes = {row.seq: error for row, error in zip(sendable, results, strict=True)}
            done: list[int] = []
            for row in rows:
                error = outcomes[row.seq] if row.seq in outcomes else _too_large(row, limit)
                if error is not None and stuck is None:
                    if row.seq in outcomes and classify(error) == "permanent":
                        # The broker refuses a whole batch for one bad record: alone, a row shows its own fate.
                        [error] = await self._producer.send_each([_record(row)])
                    if error is not None:
                        error = await self._set_aside_if_hopeless(row, error)
                if error is None:
                    done.append(row.seq)
                elif stuck is None:
                    stuck = error  # later rows that failed too wait for the next round, in order
            if done:
                fault_point(OUTBOX_BEFORE_MARK_SENT)  # test hook (tests/faults/)
                await mark_sent(session, done)
        if stuck is not None:
            raise stuck
        return len(done)

    async def _set_aside_if_hopeless(self, row: OutboxRow, error: Exception) -> Exception | None:
        """Copy a row the broker will never take to its DLQ (None once done); else return the error to retry."""
        verdict = classify(error)
        if verdict == "transient" or (verdict == "retry" and not self._failures.hopeless(row.seq)):
            return error
        dlq = dlq_topic(row.topic)
        headers = row.headers + [
            ("x-mloop-error", f"{type(error).__name__}: {error}"[:4000].encode()),
            ("x-mloop-original-topic", row.topic.encode()),
            ("x-mloop-outbox-seq", str(row.seq).encode()),
        ]
        try:
            await self._producer.ensure_topic(dlq)
        except Exception as exc:
            return exc
        [failure] = await self._producer.send_each([(dlq, row.key, row.value, headers)])
        if failure is not None and classify(failure) == "permanent":
            # Too large for the DLQ too: the value stays in the outbox row until the sent rows are purged.
            omitted = headers + [("x-mloop-value-omitted", str(len(row.value)).encode())]
            [failure] = await self._producer.send_each([(dlq, row.key, b"", omitted)])
        if failure is not None:
            return failure
        self._failures.counts.pop(row.seq, None)
        OUTBOX_SET_ASIDE.labels(row.topic).inc()
        event_id = dict(row.headers).get("ce_id", b"?").decode(errors="replace")
        log.error(
            "outbox relay: the broker refused row %d (event %s for %s, %d bytes): %r; copied to %s, moving on",
            row.seq,
            event_id,
            row.topic,
            row.size,
            error,
            dlq,
        )
        return None

    async def _run(self) -> None:
        failures = 0
        idle = self._idle
        while not self._stopping.is_set():
            try:
                sent = await self.publish_pending()
            except Exception as exc:
                failures += 1
                RELAY_ERRORS.inc()
                await self._measure_backlog()
                delay = self._backoff.delay(failures)
                log.warning("outbox relay: publish failed (%r); retrying in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):  # commits meanwhile do not cut the backoff short
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            failures = 0
            if sent:
                idle = self._idle
                continue
            OUTBOX_PENDING.set(0)
            OUTBOX_OLDEST_AGE.set(0)
            await self._purge_if_due()
            try:
                await asyncio.wait_for(self._wake.wait(), idle)
                idle = self._idle
            except TimeoutError:
                idle = min(idle * 2, self._max_idle)
            self._wake.clear()

    async def _measure_backlog(self) -> None:
        from mloop_common.db import outbox_backlog

        with contextlib.suppress(Exception):  # the database may be what is failing
            async with self._db.transaction() as session:
                pending, oldest_age = await outbox_backlog(session)
            OUTBOX_PENDING.set(pending)
            OUTBOX_OLDEST_AGE.set(oldest_age)

    async def _purge_if_due(self) -> None:
        """Every 10 minutes: outbox rows sent long ago, and inbox entries older than any record the broker
        can still deliver (the inbox must outlive the topics' retention, or a redelivery would act twice)."""
        from mloop_common.db import purge_handled, purge_sent

        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + 600
        with contextlib.suppress(Exception):
            async with self._db.transaction() as session:
                await purge_sent(session, self._retention)
                await purge_handled(session, self._inbox_retention)

    async def _listen(self) -> None:
        """Keep a LISTEN connection open, so that commits in other processes wake this relay at once."""
        from mloop_common.db import listen_for_outbox

        failures = 0
        while not self._stopping.is_set():
            connection: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                connection = await listen_for_outbox(self._db, self.wake)
                connection.add_termination_listener(lambda _, lost=lost: lost.set())
                self.listening = True
                failures = 0
                self.wake()  # whatever was notified while nobody listened
                while not self._stopping.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), self._listen_check_seconds)
                    if lost.is_set():
                        log.warning("outbox relay: LISTEN connection lost; reconnecting")
                        break
                    await connection.execute("SELECT 1", timeout=10)  # a silently dropped connection shows here
            except Exception as exc:
                failures += 1
                log.warning("outbox relay: LISTEN connection failed (%r); polling until it is back", exc)
            finally:
                self.listening = False
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await connection.close(timeout=5)
            if not self._stopping.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self._backoff.delay(max(failures, 1)))


def _record(row: OutboxRow) -> Record:
    return row.topic, row.key, row.value, row.headers


def _too_large(row: OutboxRow, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"outbox row {row.seq} for topic {row.topic!r} is {row.size} bytes encoded, over the {limit}-byte limit"
    )


@contextlib.asynccontextmanager
async def tail(
    config: BusConfig,
    topics: Iterable[str],
    *,
    from_beginning: bool = False,
    backlog: int | Mapping[str, int] = 0,
) -> AsyncIterator[AsyncIterator[tuple[ConsumerRecord, Envelope | None]]]:
    """Read topics without a consumer group (no commits): for the CLI, demos, tests and the web UI's live view.

    ``backlog``: start that many records before the end of each partition (the recent past, then what comes),
    the same for every topic or per topic."""
    consumer = AIOKafkaConsumer(
        *topics,
        **config.connection(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    assigned = list(consumer.assignment())
    if backlog and assigned:
        starts, ends = await consumer.beginning_offsets(assigned), await consumer.end_offsets(assigned)
        for tp in assigned:
            back = backlog if isinstance(backlog, int) else backlog.get(tp.topic, 0)
            consumer.seek(tp, max(starts[tp], ends[tp] - back))
    # Resolve the starting offsets now, so nothing published after this returns is missed.
    for tp in assigned:
        await consumer.position(tp)

    async def records() -> AsyncIterator[tuple[ConsumerRecord, Envelope | None]]:
        async for record in consumer:
            yield record, _decoded(record)

    try:
        yield records()
    finally:
        await consumer.stop()


async def read_topics(config: BusConfig, topics: Iterable[str]) -> list[tuple[ConsumerRecord, Envelope | None]]:
    """Every record the ``topics`` hold now, from their beginning up to their end offsets at the call (no
    group, no commits); a record that is not a CloudEvent comes with ``None``. A topic that does not exist
    is skipped. For tools that look back over what is retained (``mloop trace``) and for tests."""
    consumer = AIOKafkaConsumer(
        *topics, **config.connection(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[tuple[ConsumerRecord, Envelope | None]] = []
    try:
        assigned = list(consumer.assignment())
        if not assigned:
            return found
        await consumer.seek_to_beginning(*assigned)
        ends = await consumer.end_offsets(assigned)
        # One getmany returns at most one fetch per partition: read on until every partition is at its end.
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=1000, max_records=10_000)).values():
                for record in records:
                    if record.offset < ends[TopicPartition(record.topic, record.partition)]:
                        found.append((record, _decoded(record)))
    finally:
        await consumer.stop()
    return found


def _decoded(record: ConsumerRecord) -> Envelope | None:
    try:
        return from_record(record.value, record.headers)
    except (InvalidEvent, RecursionError):  # RecursionError: JSON nested too deep to parse
        return None


async def topic_sizes(config: BusConfig, topics: Iterable[str]) -> dict[str, int]:
    """How many records each topic holds now (end minus beginning offsets over its partitions); a topic that
    does not exist holds 0."""
    names = list(topics)
    consumer = AIOKafkaConsumer(*names, **config.connection(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = list(consumer.assignment())
        beginnings = await consumer.beginning_offsets(assigned) if assigned else {}
        ends = await consumer.end_offsets(assigned) if assigned else {}
    finally:
        await consumer.stop()
    sizes = dict.fromkeys(names, 0)
    for tp, end in ends.items():
        sizes[tp.topic] += end - beginnings[tp]
    return sizes


# --- dead letters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A record a consumer group gave up on: where it came from, why, and the record itself."""

    partition: int  # in the DLQ topic
    offset: int
    original_topic: str
    original_partition: int
    original_offset: int
    error: str
    attempts: int
    group: str
    key: bytes
    value: bytes
    headers: list[Header]
    value_omitted: bool  # too large even for the DLQ: only the headers were kept

    @property
    def event(self) -> Envelope | None:
        try:
            return from_record(self.value, self.headers)
        except (InvalidEvent, RecursionError):  # RecursionError: JSON nested too deep to parse
            return None

    @property
    def original_headers(self) -> list[Header]:
        """The headers the record had before it was dead-lettered (what a replay sends again)."""
        return [(k, v) for k, v in self.headers if not k.startswith("x-mloop-")]


def _dead_letter(record: ConsumerRecord) -> DeadLetter:
    headers = list(record.headers or ())
    found = {k: v.decode(errors="replace") for k, v in headers if k.startswith("x-mloop-")}
    return DeadLetter(
        partition=record.partition,
        offset=record.offset,
        original_topic=found.get("x-mloop-original-topic", record.topic.removesuffix(".dlq")),
        original_partition=int(found.get("x-mloop-original-partition", "-1")),
        original_offset=int(found.get("x-mloop-original-offset", "-1")),
        error=found.get("x-mloop-error", ""),
        attempts=int(found.get("x-mloop-attempts", "0")),
        group=found.get("x-mloop-consumer-group", ""),
        key=record.key or b"",
        value=record.value or b"",
        headers=headers,
        value_omitted="x-mloop-value-omitted" in found,
    )


async def dead_letters(config: BusConfig, topic: str) -> list[DeadLetter]:
    """Every record now in ``topic``'s DLQ, oldest first per partition (none if it has no DLQ yet)."""
    dlq = topic if topic.endswith(".dlq") else dlq_topic(topic)
    consumer = AIOKafkaConsumer(
        dlq,
        **config.connection(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()  # without a group it is given every partition of the DLQ (none if it does not exist)
    try:
        assigned = list(consumer.assignment())
        if not assigned:
            return []
        ends = await consumer.end_offsets(assigned)
        letters: list[DeadLetter] = []
        while any([await consumer.position(tp) < end for tp, end in ends.items()]):
            for records in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                letters.extend(_dead_letter(r) for r in records if r.offset < ends[TopicPartition(dlq, r.partition)])
        return letters
    finally:
        await consumer.stop()


async def replay_dead_letters(producer: Producer, letters: Iterable[DeadLetter]) -> tuple[int, list[DeadLetter]]:
    """Publish each letter's original record to its original topic again: (how many, those that cannot be).

    Every group on that topic reads it again; those that handled it the first time find its event id in
    their inbox and do nothing, so only the group that failed acts on it.
    """
    sent, skipped = 0, []
    for letter in letters:
        if letter.value_omitted or not letter.value:
            skipped.append(letter)
            continue
        replayed = (f"{dlq_topic(letter.original_topic)}@{letter.partition}:{letter.offset}").encode()
        headers = [*letter.original_headers, ("x-mloop-replayed-from", replayed)]
        await producer.send_raw(letter.original_topic, letter.key, letter.value, headers)
        sent += 1
    return sent, skipped
