"""The bus cannot wedge: outages are waited out, bad records dead-lettered, refused rows set aside,
broken DLQs and loop errors survived, and an idle relay wakes on commits instead of polling.

All on the real broker and database: the database restart a handler sees is a real
``pg_terminate_backend`` of its connection. Poison messages of issue 10's scenario 7 (a data error, JSON
nested too deep, a newer schema, an empty value, records near the size limits) are row 7b of
tests/faults/results/summary.md, written by the last test.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError
from fastapi import FastAPI
from prometheus_client import REGISTRY

from mloop_common.bus import BusConfig, OutboxRelay, Producer, Subscriber, classify, ensure_topics, route
from mloop_common.db import MAX_MESSAGE_BYTES_INFO, Database, claim_event, enqueue, messaging_metadata, outbox_table
from mloop_common.errors import PayloadTooLarge
from mloop_common.events import MAX_MESSAGE_BYTES, Envelope, dlq_topic, record_size, to_record
from mloop_common.http import create_app
from mloop_common.retry import Backoff
from mloop_common.runtime import Runtime
from mloop_common.settings import CommonSettings, KafkaSettings, ServiceSettings
from tests.conftest import ADMIN_DSN, eventually
from tests.faults import summary
from tests.faults.summary import Row
from tests.integration.test_bus import Value, event, gist, read_all

effects = sa.Table(
    "effects",
    sa.MetaData(),
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.String(100)),
    sa.Column("value", sa.Integer),  # int4: a value over 2**31 is a data error
)


POISON = "7b poison messages the handler or the decoder cannot take: dead-lettered at once, the consumer goes on"


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's rows of the fault suite's summary table."""
    return []


@pytest.fixture
async def db(postgres: str, schema: str) -> AsyncIterator[Database]:
    database = Database(postgres, schema=schema)
    async with database.engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        await conn.run_sync(messaging_metadata.create_all)
        await conn.run_sync(effects.metadata.create_all)
    yield database
    await database.dispose()


@pytest.fixture
async def admin() -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(ADMIN_DSN)
    yield connection
    await connection.close()


@asynccontextmanager
async def started(producer: Producer) -> AsyncIterator[Producer]:
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


@pytest.fixture
async def bus(kafka_bootstrap: str) -> AsyncIterator[tuple[BusConfig, str, Producer]]:
    """A config, a fresh topic (with its DLQ) and a started producer."""
    config = BusConfig(kafka_bootstrap, 3, "faults")
    topic = f"faults.{uuid.uuid4().hex[:10]}"
    await ensure_topics(config, [topic])
    async with started(Producer(config)) as producer:
        yield config, topic, producer


def record_effect(db: Database, consumer: str = "svc"):  # type: ignore[no-untyped-def]
    async def handle(_: Value, envelope: Envelope) -> None:
        async with db.transaction() as session:
            if await claim_event(session, consumer, envelope):
                await session.execute(sa.insert(effects).values(event_id=envelope.id, value=envelope.data["value"]))

    return handle


async def effect_values(db: Database) -> list[int]:
    async with db.transaction() as session:
        return list((await session.execute(sa.select(effects.c.value).order_by(effects.c.id))).scalars())


async def subscribe(config: BusConfig, topic: str, handler, producer: Producer, **options: Any) -> Subscriber:  # type: ignore[no-untyped-def]
    subscriber = Subscriber(
        config,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        routes=[route(Value, handler, topic=topic)],
        dlq_producer=producer,
        **options,
    )
    await subscriber.start()
    return subscriber


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- 1. transient vs permanent -------------------------------------------------------------------


async def test_a_database_restart_under_a_handler_is_waited_out_and_not_counted_as_an_attempt(  # type: ignore[no-untyped-def]
    db: Database, bus, admin: asyncpg.Connection
) -> None:
    config, topic, producer = bus
    errors: list[Exception] = []
    outages = 6  # three times max_attempts

    async def handler(payload: Value, envelope: Envelope) -> None:
        try:
            if not errors:
                raise RuntimeError("a bug that a retry gets past")  # the one attempt that counts
            async with db.transaction() as session:
                pid = (await session.execute(sa.text("SELECT pg_backend_pid()"))).scalar_one()
                if len(errors) <= outages // 2:  # the server kills the connection while it is idle in the transaction
                    await admin.execute("SELECT pg_terminate_backend($1)", pid)
                elif len(errors) <= outages:  # ... or while a statement runs
                    killer = asyncio.create_task(_terminate_soon(admin, pid))
                    try:
                        await session.execute(sa.text("SELECT pg_sleep(5)"))
                    finally:
                        await killer
                if await claim_event(session, "svc", envelope):
                    await session.execute(sa.insert(effects).values(event_id=envelope.id, value=payload.value))
        except Exception as exc:
            errors.append(exc)
            raise

    await producer.publish(event(topic, 5))
    await producer.publish(event(topic, 6))
    subscriber = await subscribe(
        config, topic, handler, producer, max_attempts=2, backoff_seconds=0.01, max_backoff_seconds=0.05
    )
    try:
        await eventually(lambda: _values_are(db, [5, 6]), timeout=60)
    finally:
        await subscriber.stop()
    assert len(errors) == 1 + outages
    assert [classify(e) for e in errors] == ["retry"] + ["transient"] * outages
    assert await read_all(config, dlq_topic(topic), expected=0, timeout=2) == []


async def _terminate_soon(admin: asyncpg.Connection, pid: int) -> None:
    await asyncio.sleep(0.3)
    await admin.execute("SELECT pg_terminate_backend($1)", pid)


async def _values_are(db: Database, expected: list[int]) -> bool:
    return sorted(await effect_values(db)) == sorted(expected)


async def test_a_data_error_is_dead_lettered_at_once_and_the_next_event_is_handled(
    db: Database, bus, rows: list[Row]
) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    calls: list[int] = []

    async def handler(payload: Value, envelope: Envelope) -> None:
        calls.append(payload.value)
        async with db.transaction() as session:
            await claim_event(session, "svc", envelope)
            # Sent as a bigint, so the server (not the driver) finds it out of range for the int4 column.
            await session.execute(
                sa.text("INSERT INTO effects (event_id, value) VALUES (:id, CAST(:value AS bigint))"),
                {"id": envelope.id, "value": payload.value},
            )

    too_big = event(topic, 2**40)  # SQLSTATE 22003, integer out of range
    await producer.publish(too_big)
    await producer.publish(event(topic, 1))
    subscriber = await subscribe(config, topic, handler, producer, max_attempts=4, backoff_seconds=0.01)
    try:
        await eventually(lambda: _values_are(db, [1]), timeout=30)
    finally:
        await subscriber.stop()
    dead = await read_all(config, dlq_topic(topic), expected=1)
    headers = dict(dead[0].headers) if dead else {}
    reason = headers.get("x-mloop-error", b"").decode(errors="replace")
    # From the driver's class, which names the SQLSTATE: SQLAlchemy's wrapping before it would fill the cell.
    shown = reason[max(reason.find("NumericValueOutOfRangeError"), 0) :].replace("'>", "", 1)
    rows.append(
        Row(
            POISON,
            "an event whose value PostgreSQL refuses (2**40 into an int4 column, SQLSTATE 22003), then a good one",
            "no retry of a data error: one attempt, the DLQ with the reason; the next event handled",
            f"data error: {calls.count(2**40)} attempt, {len(dead)} dead letter, reason {gist(shown)!r}; next "
            f"event handled (stored values: {', '.join(map(str, await effect_values(db)))})",
            calls.count(2**40) == 1
            and len(dead) == 1
            and headers["ce_id"].decode() == too_big.id
            and headers["x-mloop-attempts"] == b"1"
            and "NumericValueOutOfRangeError" in reason,
        )
    )
    assert calls.count(2**40) == 1
    assert len(dead) == 1
    assert headers["ce_id"].decode() == too_big.id
    assert headers["x-mloop-attempts"] == b"1"
    assert b"NumericValueOutOfRangeError" in headers["x-mloop-error"]


# --- 2. consumers never die silently -------------------------------------------------------------


async def test_json_nested_100000_levels_deep_is_dead_lettered_and_the_next_record_is_handled(  # type: ignore[no-untyped-def]
    db: Database, bus, rows: list[Row]
) -> None:
    config, topic, producer = bus
    nested = b'{"value": 1, "deep": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    key, _, headers = to_record(event(topic, 1))
    await producer.send_raw(topic, key, nested, headers)
    await producer.publish(event(topic, 2))
    subscriber = await subscribe(config, topic, record_effect(db), producer)
    try:
        await eventually(lambda: _values_are(db, [2]), timeout=30)
        went_on = subscriber.running
    finally:
        await subscriber.stop()
    dead = await read_all(config, dlq_topic(topic), expected=1)
    reason = dict(dead[0].headers)["x-mloop-error"].decode(errors="replace") if dead else ""
    as_sent = bool(dead) and dead[0].value == nested
    rows.append(
        Row(
            POISON,
            "a record of JSON nested 100,000 levels deep, then a good event",
            "no retry of a data error: one attempt, the DLQ with the reason; the next event handled",
            f"nested JSON: {len(dead)} dead letter, the record as it came: {'yes' if as_sent else 'no'}, "
            f"reason {gist(reason)!r}; consumer {'running' if went_on else 'stopped'}, next record handled",
            went_on and len(dead) == 1 and as_sent and reason.startswith("RecursionError"),
        )
    )
    assert went_on
    [dead_letter] = dead
    assert dead_letter.value == nested
    assert dict(dead_letter.headers)["x-mloop-error"].startswith(b"RecursionError")


def raw_event(topic: str, value: bytes, **headers: str) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """A record with the CloudEvent headers of a good event, ``value`` as its value and ``headers`` replacing
    (or adding) some of them."""
    key, _, original = to_record(event(topic, 1))
    replaced = dict(original) | {name: text.encode() for name, text in headers.items()}
    return key, value, list(replaced.items())


async def _dead_by_id(config: BusConfig, topic: str, expected: int) -> dict[str, Any]:
    return {dict(r.headers)["ce_id"].decode(): r for r in await read_all(config, dlq_topic(topic), expected=expected)}


def _reason(record: Any) -> str:
    return dict(record.headers).get("x-mloop-error", b"").decode(errors="replace") if record else ""


async def test_events_of_a_newer_schema_are_read_if_compatible_and_dead_lettered_if_not(  # type: ignore[no-untyped-def]
    db: Database, bus, rows: list[Row]
) -> None:
    config, topic, producer = bus
    newer = f"urn:mloop:schema:{topic}:v2"  # what a producer of the next contract version stamps (events.dataschema)
    # The CloudEvents spec moved on: a version of the envelope this code does not know.
    next_spec = raw_event(topic, b'{"value": 5}', ce_specversion="2.0")
    # A breaking v2 payload: ``value`` became an object.
    breaking = raw_event(topic, b'{"schema_version": 2, "value": {"amount": 6, "unit": "kg"}}', ce_dataschema=newer)
    # A compatible v2 payload: one field added, which the tolerant reader ignores.
    compatible = raw_event(topic, b'{"schema_version": 2, "value": 7, "unit": "kg"}', ce_dataschema=newer)
    for key, value, headers in (next_spec, breaking, compatible):
        await producer.send_raw(topic, key, value, headers)
    await producer.publish(event(topic, 8))
    subscriber = await subscribe(config, topic, record_effect(db), producer)
    try:
        await eventually(lambda: _values_are(db, [7, 8]), timeout=30)
        went_on = subscriber.running
    finally:
        await subscriber.stop()
    dead = await _dead_by_id(config, topic, expected=2)
    ids = {
        name: dict(headers)["ce_id"].decode() for name, (_, _, headers) in (("spec", next_spec), ("breaking", breaking))
    }
    spec_reason, breaking_reason = _reason(dead.get(ids["spec"])), _reason(dead.get(ids["breaking"]))
    values = await effect_values(db)
    passed = (
        went_on
        and set(dead) == set(ids.values())
        and spec_reason == "InvalidEvent: unsupported ce_specversion '2.0'"
        and "valid integer" in breaking_reason
        and values == [7, 8]
    )
    rows.append(
        Row(
            POISON,
            "events of a newer contract: ce_specversion 2.0; a v2 payload (ce_dataschema ...:v2) whose field "
            "changed type; a v2 payload with an added field; then a good event",
            "what this code cannot read dead-lettered with the reason; a compatible newer payload handled "
            "(tolerant reader); the next event handled",
            f"newer schema: {len(dead)} dead letters, reasons {gist(spec_reason)!r} and {gist(breaking_reason)!r}; "
            f"the compatible v2 event and the next handled (stored values: {', '.join(map(str, values))}); "
            f"consumer {'running' if went_on else 'stopped'}",
            passed,
        )
    )
    assert went_on
    assert set(dead) == set(ids.values())
    assert spec_reason == "InvalidEvent: unsupported ce_specversion '2.0'"
    assert breaking_reason.startswith(f"InvalidEvent: invalid {topic} payload") and "valid integer" in breaking_reason
    assert values == [7, 8]


async def test_an_empty_value_is_dead_lettered_and_the_next_event_is_handled(  # type: ignore[no-untyped-def]
    db: Database, bus, rows: list[Row]
) -> None:
    config, topic, producer = bus
    key, _, headers = empty = raw_event(topic, b"")
    await producer.send_raw(topic, key, b"", headers)
    await producer.publish(event(topic, 9))
    subscriber = await subscribe(config, topic, record_effect(db), producer)
    try:
        await eventually(lambda: _values_are(db, [9]), timeout=30)
        went_on = subscriber.running
    finally:
        await subscriber.stop()
    dead = await read_all(config, dlq_topic(topic), expected=1)
    reason = _reason(dead[0]) if dead else ""
    same_id = bool(dead) and dict(dead[0].headers)["ce_id"] == dict(empty[2])["ce_id"]
    rows.append(
        Row(
            POISON,
            "a record with an empty value (b'') and valid CloudEvent headers, then a good event",
            "what this code cannot read dead-lettered with the reason; the next event handled",
            f"empty value: {len(dead)} dead letter, its value {dead[0].value if dead else None!r}, reason "
            f"{gist(reason)!r}; consumer {'running' if went_on else 'stopped'}, next event handled",
            went_on
            and len(dead) == 1
            and same_id
            and dead[0].value == b""
            and reason.startswith("InvalidEvent: record value is not JSON"),
        )
    )
    assert went_on
    [dead_letter] = dead
    assert same_id
    assert dead_letter.value == b""
    assert reason.startswith("InvalidEvent: record value is not JSON")


async def test_near_limit_records_are_dead_lettered_within_the_brokers_limit_and_the_consumer_goes_on(  # type: ignore[no-untyped-def]
    db: Database, bus, rows: list[Row]
) -> None:
    config, topic, producer = bus

    def sized(total: int) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """An event of ``total`` bytes (record_size) that the handler cannot take: its value is a string."""
        key, _, headers = raw_event(topic, b"")
        padding = total - record_size(key, b'{"value": ""}', headers)
        return key, b'{"value": "' + b"x" * padding + b'"}', headers

    # At mloop's own limit, minus a little: the largest event a service of ours can have sent.
    ours = sized(MAX_MESSAGE_BYTES - 1_000)
    # Just under the 1 MiB a producer sends and the broker takes by default, from another producer: with the
    # dead-letter headers (the reason, the origin) its copy cannot fit.
    foreign = sized(1_048_576 - 300)
    for key, value, headers in (ours, foreign):
        await producer.send_raw(topic, key, value, headers)
    await producer.publish(event(topic, 10))
    subscriber = await subscribe(config, topic, record_effect(db), producer)
    try:
        await eventually(lambda: _values_are(db, [10]), timeout=60)
        went_on = subscriber.running
    finally:
        await subscriber.stop()
    dead = await _dead_by_id(config, topic, expected=2)
    ours_dead, foreign_dead = (dead.get(dict(r[2])["ce_id"].decode()) for r in (ours, foreign))
    ours_kept = ours_dead is not None and ours_dead.value == ours[1]
    omitted = dict(foreign_dead.headers).get("x-mloop-value-omitted") if foreign_dead else None
    foreign_sane = foreign_dead is not None and foreign_dead.value == b"" and omitted == str(len(foreign[1])).encode()
    reasons = {_reason(ours_dead), _reason(foreign_dead)}
    foreign_copy = (
        f"without its value (x-mloop-value-omitted: {omitted.decode()})"
        if foreign_sane and omitted
        else "NOT marked as without its value"
    )
    rows.append(
        Row(
            POISON,
            f"records the handler cannot take, near the size limits: {record_size(*ours):,} bytes (mloop's "
            f"{MAX_MESSAGE_BYTES:,}-byte limit minus 1,000) and {record_size(*foreign):,} bytes (the 1 MiB "
            "request and broker limit minus 300, from another producer); then a good event",
            "the DLQ with the reason, the record as it came while the copy fits; a copy that cannot fit dead-"
            "lettered without its value, saying so; the next event handled",
            f"near-limit: {len(dead)} dead letters; the {len(ours[1]):,}-byte value copied as it came: "
            f"{'yes' if ours_kept else 'no'}; the {len(foreign[1]):,}-byte one "
            f"{foreign_copy}; "
            f"reasons {sorted(gist(r) for r in reasons)!r}; consumer {'running' if went_on else 'stopped'}, next "
            "event handled",
            went_on and ours_kept and foreign_sane and all("valid integer" in r for r in reasons),
        )
    )
    assert went_on
    assert ours_kept
    assert foreign_sane
    assert all("valid integer" in r for r in reasons), reasons


async def test_a_missing_dlq_topic_is_created_and_the_consumer_goes_on(db: Database, kafka_bootstrap: str) -> None:
    config = BusConfig(kafka_bootstrap, 3, "faults")
    topic = f"faults.{uuid.uuid4().hex[:10]}"
    await ensure_topics(config, [topic], with_dlq=False)
    async with started(Producer(config)) as producer:
        await producer.send_raw(topic, b"model-a", b"not json", [("ce_specversion", b"1.0")])
        await producer.publish(event(topic, 3))
        subscriber = await subscribe(config, topic, record_effect(db), producer)
        try:
            await eventually(lambda: _values_are(db, [3]), timeout=30)
            assert subscriber.running
        finally:
            await subscriber.stop()
    [dead] = await read_all(config, dlq_topic(topic), expected=1)
    assert dead.value == b"not json"


class BrokenDlq(Producer):
    """A producer whose DLQ writes fail until ``heal()``: the broker refusing connections, say."""

    def __init__(self, config: BusConfig) -> None:
        super().__init__(config)
        self.healed = asyncio.Event()
        self.failures = 0

    async def send_raw(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        if topic.endswith(".dlq") and not self.healed.is_set():
            self.failures += 1
            raise KafkaConnectionError("connection refused")
        await super().send_raw(topic, key, value, headers)


async def test_a_failing_dlq_write_keeps_the_record_uncommitted_and_is_retried(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    await producer.send_raw(topic, b"model-a", b"not json", [("ce_specversion", b"1.0")])
    await producer.publish(event(topic, 4))  # same key, same partition: behind the poison record
    async with started(BrokenDlq(config)) as dlq:
        subscriber = await subscribe(config, topic, record_effect(db), dlq, backoff_seconds=0.05)
        try:
            await eventually(lambda: dlq.failures >= 3, timeout=30)
            assert subscriber.running
            assert await effect_values(db) == []  # nothing behind the poison record overtook it
            assert await _committed(subscriber) == {}
            assert metric("mloop_consumer_errors_total", group=subscriber.group_id, stage="dlq") >= 3
            dlq.healed.set()
            await eventually(lambda: _values_are(db, [4]), timeout=30)
        finally:
            await subscriber.stop()
    [dead] = await read_all(config, dlq_topic(topic), expected=1)
    assert dead.value == b"not json"


async def _committed(subscriber: Subscriber) -> dict[TopicPartition, int]:
    consumer = subscriber._consumer
    offsets = {tp: await consumer.committed(tp) for tp in consumer.assignment()}
    return {tp: offset for tp, offset in offsets.items() if offset}


async def test_an_unexpected_error_in_the_loop_is_counted_and_no_record_is_lost(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    for value in range(5):
        await producer.publish(event(topic, value))  # one key: one partition, one batch
    subscriber = Subscriber(
        config,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        routes=[route(Value, record_effect(db), topic=topic)],
        dlq_producer=producer,
    )
    commit = subscriber._commit
    calls: list[int] = []

    async def commit_failing_once(tp: TopicPartition, offset: int) -> bool:
        calls.append(offset)
        if len(calls) == 2:
            raise RuntimeError("a bug between handling and committing")
        return await commit(tp, offset)

    subscriber._commit = commit_failing_once  # type: ignore[method-assign]
    await subscriber.start()
    try:
        await eventually(lambda: _values_are(db, [0, 1, 2, 3, 4]), timeout=30)
        assert subscriber.running
    finally:
        await subscriber.stop()
    assert metric("mloop_consumer_errors_total", group=subscriber.group_id, stage="loop") == 1
    assert sorted(await effect_values(db)) == [0, 1, 2, 3, 4]  # the inbox absorbed the replayed record


class _LoopKilled(BaseException):
    """Something the consume loop cannot catch (it catches Exception)."""


class RuntimeTestSettings(ServiceSettings):
    service: ClassVar[str] = "serving"
    uses_database: ClassVar[bool] = False


@asynccontextmanager
async def runtime_with_consumer(kafka_bootstrap: str, topic: str, handler) -> AsyncIterator[tuple[Runtime, FastAPI]]:  # type: ignore[no-untyped-def]
    settings = RuntimeTestSettings(common=CommonSettings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap)))
    runtime = Runtime(settings)
    runtime.restart_backoff = Backoff(0.01, 0.02)
    runtime.consume(route(Value, handler, topic=topic), group_suffix=f"-{uuid.uuid4().hex[:8]}")

    @asynccontextmanager
    async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    app = create_app(service="serving", lifespan=no_lifespan)
    fatal: list[str] = []
    app.state.on_fatal = fatal.append
    app.state.fatal = fatal
    await runtime.start(app)
    try:
        yield runtime, app
    finally:
        await runtime.stop()


async def readyz(app: FastAPI) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service") as client:
        return await client.get("/readyz")


def kill_loop(subscriber: Subscriber) -> None:
    async def getmany(*args: object, **kwargs: object) -> dict[TopicPartition, list[Any]]:
        raise _LoopKilled("the consume loop is gone")

    subscriber._consumer.getmany = getmany  # type: ignore[method-assign]


async def test_a_dead_consumer_loop_is_restarted_and_handles_what_comes_next(bus, kafka_bootstrap: str) -> None:  # type: ignore[no-untyped-def]
    _, topic, producer = bus
    seen: list[int] = []

    async def handler(payload: Value, _: Envelope) -> None:
        seen.append(payload.value)

    async with runtime_with_consumer(kafka_bootstrap, topic, handler) as (runtime, app):
        [subscriber] = runtime.subscribers
        await asyncio.wait_for(subscriber.assigned.wait(), 30)
        kill_loop(subscriber)
        await eventually(lambda: metric("mloop_consumer_errors_total", group=subscriber.group_id, stage="died"), 30)
        await eventually(lambda: subscriber.running, timeout=30)
        await producer.publish(event(topic, 7))
        await eventually(lambda: seen == [7], timeout=30)
        assert (await readyz(app)).status_code == 200
        assert app.state.fatal == []
    assert metric("mloop_consumer_errors_total", group=subscriber.group_id, stage="died") == 1


async def test_a_consumer_that_cannot_be_restarted_shows_in_readiness_and_ends_the_process(  # type: ignore[no-untyped-def]
    bus, kafka_bootstrap: str
) -> None:
    _, topic, _ = bus

    async def handler(payload: Value, _: Envelope) -> None:
        pass

    async with runtime_with_consumer(kafka_bootstrap, topic, handler) as (runtime, app):
        [subscriber] = runtime.subscribers

        async def broker_gone() -> None:
            raise KafkaConnectionError("Unable to bootstrap from 127.0.0.1")

        subscriber.restart = broker_gone  # type: ignore[method-assign]
        await asyncio.wait_for(subscriber.assigned.wait(), 30)
        kill_loop(subscriber)
        await eventually(lambda: app.state.fatal, timeout=30)
        response = await readyz(app)
    assert response.status_code == 503
    assert "_LoopKilled('the consume loop is gone')" in response.json()["checks"]["broker"]
    assert "cannot be restarted" in app.state.fatal[0]


def test_a_fatal_runtime_failure_makes_the_process_exit_non_zero(tmp_path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "service.py"
    script.write_text(
        "import asyncio, contextlib, typing\n"
        "from mloop_common.http import create_app\n"
        "from mloop_common.runtime import serve\n"
        "from mloop_common.settings import ServiceSettings\n"
        "class Settings(ServiceSettings):\n"
        "    service: typing.ClassVar[str] = 'serving'\n"
        "@contextlib.asynccontextmanager\n"
        "async def lifespan(app):\n"
        "    asyncio.get_running_loop().call_later(0.5, app.state.on_fatal, 'consumer mloop-serving is gone')\n"
        "    yield\n"
        "serve(create_app(service='serving', lifespan=lifespan), Settings(port=0))\n"
    )
    finished = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 1
    assert "exits: consumer mloop-serving is gone" in finished.stderr


# --- 3. message size ------------------------------------------------------------------------------


async def test_an_event_too_large_for_the_broker_is_refused_where_it_is_created(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    huge = Envelope(type=topic, source="tests", subject="model-a", data={"value": 1, "blob": "x" * 1_000_000})
    async with db.transaction() as session:
        with pytest.raises(PayloadTooLarge, match=rf"topic '{topic}' is \d+ bytes encoded, over the 900000-byte limit"):
            await enqueue(session, huge)
        assert await _outbox_rows(session) == 0
    with pytest.raises(PayloadTooLarge, match=topic):
        await producer.publish(huge)
    # The limit is a setting: a session can carry a smaller one (the Runtime sets it from MLOOP_KAFKA__...).
    db.sessions.configure(info={MAX_MESSAGE_BYTES_INFO: 1000})
    async with db.transaction() as session:
        with pytest.raises(PayloadTooLarge, match="over the 1000-byte limit"):
            await enqueue(session, Envelope(type=topic, source="tests", subject="m", data={"blob": "x" * 2000}))
    assert await read_all(config, topic, expected=0, timeout=2) == []


async def _outbox_rows(session: Any) -> int:
    return int((await session.execute(sa.select(sa.func.count()).select_from(outbox_table))).scalar_one())


async def test_the_relay_sets_aside_rows_the_broker_refuses_and_the_rest_go_out_in_order(  # type: ignore[no-untyped-def]
    db: Database, kafka_bootstrap: str
) -> None:
    config = BusConfig(kafka_bootstrap, 1, "faults")
    topic = f"faults.small.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:  # a broker (topic) with a smaller limit than the services were configured for
        await admin.create_topics([NewTopic(topic, 1, 1, topic_configs={"max.message.bytes": "2000"})])
    finally:
        await admin.close()
    await ensure_topics(config, [dlq_topic(topic)], with_dlq=False)
    rows = [
        ("small-1", 10),
        ("refused-by-the-broker", 5_000),
        ("small-2", 10),
        ("over-the-configured-limit", 950_000),
        ("small-3", 10),
    ]
    async with db.transaction() as session:  # legacy rows, staged before enqueue() checked sizes
        for name, size in rows:
            key, value, headers = to_record(event(topic, 1))
            value = json.dumps({"value": 1, "name": name, "pad": "x" * size}).encode()
            await session.execute(
                sa.insert(outbox_table).values(
                    event_id=str(uuid.uuid4()),
                    topic=topic,
                    key=key,
                    value=value,
                    headers=json.dumps([[k, v.decode()] for k, v in headers]),
                )
            )
    before = metric("mloop_outbox_set_aside_total", topic=topic)
    async with started(Producer(config)) as producer:
        relay = OutboxRelay(db, producer, batch_size=10)
        await relay.start()
        try:
            await eventually(lambda: _pending(db, 0), timeout=60)
            assert relay.running
        finally:
            await relay.stop()
    published = [json.loads(r.value)["name"] for r in await read_all(config, topic, expected=3)]
    assert published == ["small-1", "small-2", "small-3"]
    dead = await read_all(config, dlq_topic(topic), expected=2)
    assert [json.loads(r.value)["name"] for r in dead] == ["refused-by-the-broker", "over-the-configured-limit"]
    errors = [dict(r.headers)["x-mloop-error"] for r in dead]
    assert errors[0].startswith(b"MessageSizeTooLargeError") and errors[1].startswith(b"PayloadTooLarge")
    assert metric("mloop_outbox_set_aside_total", topic=topic) - before == 2


async def _pending(db: Database, n: int) -> bool:
    async with db.transaction() as session:
        count = (
            await session.execute(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
            )
        ).scalar_one()
    return int(count) == n


# --- 4. idle cost: woken, not polling ------------------------------------------------------------


async def test_an_idle_relay_is_woken_by_a_commit_in_another_process_even_after_its_listener_dropped(  # type: ignore[no-untyped-def]
    db: Database, bus, admin: asyncpg.Connection, postgres: str, schema: str
) -> None:
    config, topic, producer = bus
    other_process = Database(postgres, schema=schema)  # its commits cannot call this relay's wake()
    relay = OutboxRelay(db, producer, idle_seconds=60, max_idle_seconds=60)  # polling alone would take a minute
    await relay.start()
    try:
        await eventually(lambda: relay.listening, timeout=10)
        first = event(topic, 1)
        async with other_process.transaction() as session:
            await enqueue(session, first)
        await eventually(lambda: _pending(db, 0), timeout=5)

        listener = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN %' AND query LIKE $1", f"%{schema}%"
        )
        await admin.execute("SELECT pg_terminate_backend($1)", listener)
        await eventually(lambda: not relay.listening, timeout=10)
        await eventually(lambda: relay.listening, timeout=30)
        second = event(topic, 2)
        async with other_process.transaction() as session:
            await enqueue(session, second)
        await eventually(lambda: _pending(db, 0), timeout=5)
    finally:
        await relay.stop()
        await other_process.dispose()
    received = [dict(r.headers)["ce_id"].decode() for r in await read_all(config, topic, expected=2)]
    assert sorted(received) == sorted([first.id, second.id])


async def test_an_idle_relay_backs_off_its_safety_polls(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    _, _, producer = bus
    relay = OutboxRelay(db, producer, listen=False, idle_seconds=0.1, max_idle_seconds=2.0)
    polls: list[float] = []
    publish = relay.publish_pending

    async def counted() -> int:
        polls.append(asyncio.get_running_loop().time())
        return await publish()

    relay.publish_pending = counted  # type: ignore[method-assign]
    await relay.start()
    await asyncio.sleep(8)
    idle_polls = list(polls)  # not the final flush of stop()
    await relay.stop()
    # 0.1 s doubling to 2 s: about 8 polls in 8 s where a fixed 100 ms poll made 80.
    assert 4 <= len(idle_polls) <= 12
    assert idle_polls[-1] - idle_polls[-2] >= 1.5


async def test_summary_rows(rows: list[Row]) -> None:
    """Merges this module's row (scenario 7b of issue 10) into tests/faults/results/summary.md and .json."""
    assert rows, "no scenario ran"
    summary.write(rows)
    assert all(r.passed for r in rows)
