"""All Kafka client code: topics, producer, consumer runner (retries, DLQ, commits), outbox relay.

Delivery is at least once. A consumer commits offset+1 for a partition only after its
handler returned (the handler commits its own database transaction, which records the
event id in the inbox), so a crash replays the message and the inbox makes it a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

import sqlalchemy.exc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from prometheus_client import Counter, Gauge, Histogram

from mloop_common.db import Database, lock_pending, mark_sent, purge_sent
from mloop_common.errors import PermanentError, TransientError
from mloop_common.events import ALL_TOPICS, Envelope, InvalidEvent, dlq_topic, from_record, to_record
from mloop_common.telemetry import consumer_span, current_trace_headers

log = logging.getLogger(__name__)

Handler = Callable[[Envelope], Awaitable[None]]

CONSUMED = Counter("mloop_events_consumed_total", "Events handled by a consumer", ["topic", "group", "outcome"])
HANDLER_SECONDS = Histogram("mloop_event_handler_seconds", "Time spent in an event handler", ["topic", "group"])
PUBLISHED = Counter("mloop_events_published_total", "Events published to Kafka", ["topic"])
CONSUMER_LAG = Gauge(
    "mloop_consumer_lag", "Records on a partition not yet handled by the group", ["group", "topic", "partition"]
)
DEAD_LETTERED = Counter("mloop_events_dead_lettered_total", "Events sent to a DLQ", ["topic", "group"])


@dataclass(frozen=True)
class BusConfig:
    bootstrap_servers: str = "127.0.0.1:9092"
    partitions: int = 3
    client_id: str = "mloop"


async def ensure_topics(config: BusConfig, topics: Iterable[str] = ALL_TOPICS, *, with_dlq: bool = True) -> None:
    """Create the topics (and their DLQs) that do not exist yet; auto-create is off on the broker."""
    wanted = set(topics)
    if with_dlq:
        wanted |= {dlq_topic(t) for t in wanted if not t.endswith(".dlq")}
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers, client_id=config.client_id)
    await admin.start()
    try:
        missing = wanted - set(await admin.list_topics())
        if missing:
            new = [NewTopic(name=t, num_partitions=config.partitions, replication_factor=1) for t in sorted(missing)]
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another service created them at the same moment
    finally:
        await admin.close()


class Producer:
    """Idempotent producer (acks=all) that publishes envelopes and raw outbox rows."""

    def __init__(self, config: BusConfig) -> None:
        self._config = config
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # aiokafka clients bind to the running loop, so they are built here, not in __init__.
        producer = AIOKafkaProducer(
            bootstrap_servers=self._config.bootstrap_servers,
            client_id=self._config.client_id,
            enable_idempotence=True,
            acks="all",
            linger_ms=2,
        )
        await producer.start()
        self._producer = producer

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
        """Publish one event now (outside any transaction); prefer the outbox for state changes."""
        if event.traceparent is None:
            event = event.with_trace(*current_trace_headers())
        key, value, headers = to_record(event)
        await self.send_raw(event.topic, key, value, headers)

    async def send_raw(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        await self._client.send_and_wait(topic, value=value, key=key, headers=headers)
        PUBLISHED.labels(topic).inc()

    async def send_many(self, rows: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
        """Send a batch and wait until the broker acknowledged every record."""
        futures = [await self._client.send(t, value=v, key=k, headers=h) for t, k, v, h in rows]
        await asyncio.gather(*futures)
        for topic, *_ in rows:
            PUBLISHED.labels(topic).inc()


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, group: str) -> None:
        self.group = group

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        if revoked:
            log.info("%s: partitions revoked %s", self.group, sorted(str(tp) for tp in revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            log.info("%s: partitions assigned %s", self.group, sorted(str(tp) for tp in assigned))


class Subscriber:
    """Runs one consumer group: handle each record, retry with backoff, DLQ, then commit."""

    def __init__(
        self,
        config: BusConfig,
        *,
        group_id: str,
        topics: Iterable[str],
        handler: Handler,
        dlq_producer: Producer,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 10.0,
        max_poll_interval_ms: int = 300_000,
        poll_while_busy_seconds: float = 5.0,
    ) -> None:
        self.group_id = group_id
        self._poll_while_busy = poll_while_busy_seconds
        self.topics = list(topics)
        self._handler = handler
        self._dlq = dlq_producer
        self._max_attempts = max_attempts
        self._backoff = backoff_seconds
        self._max_backoff = max_backoff_seconds
        self._consumer_options = {
            "bootstrap_servers": config.bootstrap_servers,
            "client_id": f"{config.client_id}-{group_id}",
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_interval_ms": max_poll_interval_ms,
            "session_timeout_ms": 10_000,
            "heartbeat_interval_ms": 3_000,
            "metadata_max_age_ms": 30_000,
        }
        self._consumer: AIOKafkaConsumer = None  # type: ignore[assignment]  # built in start()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.assigned = asyncio.Event()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(**self._consumer_options)
        self._consumer.subscribe(self.topics, listener=_Rebalance(self.group_id))
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"subscriber-{self.group_id}")

    async def stop(self, timeout: float = 30.0) -> None:
        """Finish the record in hand, commit it, leave the group."""
        self._stopping.set()
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                batch = await self._consumer.getmany(timeout_ms=200, max_records=100)
            except KafkaError as exc:
                log.warning("%s: poll failed (%s); retrying", self.group_id, exc)
                await asyncio.sleep(1)
                continue
            if self._consumer.assignment():
                self.assigned.set()
            for tp, records in batch.items():
                for record in records:
                    if self._stopping.is_set() or tp not in self._consumer.assignment():
                        break  # uncommitted records are redelivered to whoever owns the partition
                    if not await self._handle(record):
                        break  # shutting down mid-retry: leave it uncommitted for the next owner
                    if not await self._commit(tp, record.offset + 1):
                        break
            await self._report_lag()

    async def _report_lag(self) -> None:
        """Consumer lag per partition, from the broker's high watermark seen in the last fetch."""
        for tp in self._consumer.assignment():
            highwater = self._consumer.highwater(tp)
            if highwater is None:
                continue
            with contextlib.suppress(Exception):
                position = await self._consumer.position(tp)
                CONSUMER_LAG.labels(self.group_id, tp.topic, str(tp.partition)).set(max(highwater - position, 0))

    async def _run_while_polling(self, work: Awaitable[None]) -> None:
        """Await a handler; if it runs long, keep polling with every partition paused.

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
                stray = await self._consumer.getmany(timeout_ms=0)
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
        except InvalidEvent as exc:
            await self._dead_letter(record, exc, attempts=1)
            return True
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                with consumer_span(event, self.group_id):
                    await self._run_while_polling(self._handler(event))
            except PermanentError as exc:
                await self._dead_letter(record, exc, attempts=attempt)
                return True
            except Exception as exc:
                if attempt >= self._max_attempts and not _is_transient(exc):
                    await self._dead_letter(record, exc, attempts=attempt)
                    return True
                if self._stopping.is_set():
                    return False
                delay = min(self._backoff * 2 ** (attempt - 1), self._max_backoff)
                log.warning(
                    "%s: %s %s failed (attempt %d/%d): %r; retrying in %.1fs",
                    self.group_id,
                    topic,
                    event.id,
                    attempt,
                    self._max_attempts,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                continue
            finally:
                HANDLER_SECONDS.labels(topic, self.group_id).observe(time.perf_counter() - started)
            CONSUMED.labels(topic, self.group_id, "ok").inc()
            return True

    async def _dead_letter(self, record: ConsumerRecord, exc: BaseException, *, attempts: int) -> None:
        log.error(
            "%s: %s@%d offset %d goes to the DLQ after %d attempt(s): %r",
            self.group_id,
            record.topic,
            record.partition,
            record.offset,
            attempts,
            exc,
        )
        headers = list(record.headers or ()) + [
            ("x-mloop-error", f"{type(exc).__name__}: {exc}"[:4000].encode()),
            ("x-mloop-original-topic", record.topic.encode()),
            ("x-mloop-original-partition", str(record.partition).encode()),
            ("x-mloop-original-offset", str(record.offset).encode()),
            ("x-mloop-attempts", str(attempts).encode()),
            ("x-mloop-consumer-group", self.group_id.encode()),
        ]
        await self._dlq.send_raw(dlq_topic(record.topic), record.key or b"", record.value or b"", headers)
        DEAD_LETTERED.labels(record.topic, self.group_id).inc()
        CONSUMED.labels(record.topic, self.group_id, "dead_lettered").inc()


def _is_transient(exc: BaseException) -> bool:
    """An outage of a dependency, not a fault of the message: wait for it rather than dead-letter."""
    return isinstance(
        exc,
        TransientError
        | ConnectionError
        | TimeoutError
        | sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError,
    )


class OutboxRelay:
    """Publishes committed outbox rows in order and marks them sent; safe to run in several processes."""

    def __init__(
        self,
        db: Database,
        producer: Producer,
        *,
        batch_size: int = 200,
        idle_seconds: float = 0.1,
        retention_seconds: float = 86_400,
    ):
        self._retention = retention_seconds
        self._next_purge = 0.0
        self._db = db
        self._producer = producer
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Hint that new rows were committed, so they leave without waiting for the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._task:
            await self._task
        # Publish whatever a last handler committed before shutdown.
        with contextlib.suppress(Exception):
            while await self.publish_pending():
                pass

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many rows left the outbox."""
        async with self._db.transaction() as session:
            rows = await lock_pending(session, self._batch_size)
            if not rows:
                return 0
            # If the send fails the transaction rolls back and the rows are retried: at least once.
            await self._producer.send_many([(r.topic, r.key, r.value, r.headers) for r in rows])
            await mark_sent(session, [r.seq for r in rows])
        return len(rows)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                sent = await self.publish_pending()
            except Exception as exc:
                log.warning("outbox relay: publish failed (%r); retrying", exc)
                sent = 0
                await asyncio.sleep(1)
            if sent:
                continue
            if time.monotonic() >= self._next_purge:
                self._next_purge = time.monotonic() + 600
                with contextlib.suppress(Exception):
                    async with self._db.transaction() as session:
                        await purge_sent(session, self._retention)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._idle)
            self._wake.clear()


@contextlib.asynccontextmanager
async def tail(
    config: BusConfig, topics: Iterable[str], *, from_beginning: bool = False
) -> AsyncIterator[AsyncIterator[tuple[ConsumerRecord, Envelope | None]]]:
    """Read topics without a consumer group (no commits): for the CLI, demos and tests."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    # Resolve the starting offsets now, so nothing published after this returns is missed.
    for tp in consumer.assignment():
        await consumer.position(tp)

    async def records() -> AsyncIterator[tuple[ConsumerRecord, Envelope | None]]:
        async for record in consumer:
            try:
                yield record, from_record(record.value, record.headers)
            except InvalidEvent:
                yield record, None

    try:
        yield records()
    finally:
        await consumer.stop()
