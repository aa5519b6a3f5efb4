"""The bus on the real broker and database: idempotency, DLQ (and replaying it), outbox, trace propagation.

Scenarios 6 (a rebalance mid-batch) and 7 (poison messages, ``mloop dlq list|replay``) of issue 10: rows 6
and 7a of tests/faults/results/summary.md, written by the last test.
"""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from mloop_common.bus import (
    BusConfig,
    OutboxRelay,
    Producer,
    Subscriber,
    dead_letters,
    ensure_topics,
    replay_dead_letters,
    route,
    tail,
)
from mloop_common.db import (
    Database,
    claim_event,
    enqueue,
    inbox_table,
    messaging_metadata,
    outbox_table,
    purge_handled,
)
from mloop_common.errors import TransientError
from mloop_common.events import Envelope, Payload, dlq_topic, to_record
from mloop_common.telemetry import setup_tracing, tracer
from tests.conftest import eventually
from tests.faults import summary
from tests.faults.summary import Row

effects = sa.Table(
    "effects",
    sa.MetaData(),
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.String(100)),
    sa.Column("value", sa.Integer),
)


POISON = "7a poison messages: dead-lettered with the reason, the consumer goes on; mloop dlq list|replay"


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's rows of the fault suite's summary table (several tests observe parts of scenario 7)."""
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
async def bus(kafka_bootstrap: str) -> AsyncIterator[tuple[BusConfig, str, Producer]]:
    """A config, a fresh topic (with its DLQ) and a started producer."""
    config = BusConfig(kafka_bootstrap, 3, "it")
    topic = f"it.{uuid.uuid4().hex[:10]}"
    await ensure_topics(config, [topic])
    producer = Producer(config)
    await producer.start()
    yield config, topic, producer
    await producer.stop()


class Value(Payload):
    value: int


def event(topic: str, value: int, subject: str = "model-a") -> Envelope:
    return Envelope(type=topic, source="tests", subject=subject, data={"value": value}, correlationid=str(uuid.uuid4()))


def recording_handler(db: Database, consumer: str) -> Callable[[Envelope], Awaitable[None]]:
    async def handle(envelope: Envelope) -> None:
        async with db.transaction() as session:
            if await claim_event(session, consumer, envelope):
                await session.execute(sa.insert(effects).values(event_id=envelope.id, value=envelope.data["value"]))

    return handle


def gist(text: str) -> str:
    """A dead letter's reason short enough for the summary table."""
    return textwrap.shorten(text, 60, placeholder=" ...")


async def effect_count(db: Database) -> int:
    async with db.transaction() as session:
        return int((await session.execute(sa.select(sa.func.count()).select_from(effects))).scalar_one())


async def start_subscriber(config: BusConfig, topic: str, handler, producer: Producer, **options) -> Subscriber:  # type: ignore[no-untyped-def]
    async def envelope_only(_: Value, envelope: Envelope) -> None:
        await handler(envelope)

    subscriber = Subscriber(
        config,
        group_id=f"g-{uuid.uuid4().hex[:8]}",
        routes=[route(Value, envelope_only, topic=topic)],
        dlq_producer=producer,
        **options,
    )
    await subscriber.start()
    return subscriber


async def read_all(config: BusConfig, topic: str, expected: int, timeout: float = 20.0) -> list:  # type: ignore[type-arg]
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=config.bootstrap_servers,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list = []  # type: ignore[type-arg]
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expected and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for partition_records in batch.values():
                records.extend(partition_records)
        await asyncio.sleep(0.5)  # anything beyond the expected count would show up now
        for partition_records in (await consumer.getmany(timeout_ms=500)).values():
            records.extend(partition_records)
    finally:
        await consumer.stop()
    return records


async def test_redelivered_event_changes_state_once(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    first = event(topic, 7)
    await producer.publish(first)
    await producer.publish(first)  # a duplicate delivery of the same event id
    await producer.publish(event(topic, 8))
    subscriber = await start_subscriber(config, topic, recording_handler(db, "svc"), producer)
    try:
        await eventually(lambda: effect_count(db), timeout=30)
        await eventually(lambda: _count_is(db, 2), timeout=30)
        await eventually(lambda: _lag(subscriber.group_id, topic) == 0, timeout=10)
    finally:
        await subscriber.stop()
    # A replay of the whole topic by a fresh consumer group (same service inbox) changes nothing.
    replay = await start_subscriber(config, topic, recording_handler(db, "svc"), producer)
    try:
        await eventually(lambda: _committed_all(replay), timeout=30)
    finally:
        await replay.stop()
    assert await effect_count(db) == 2


def _lag(group: str, topic: str) -> float | None:
    samples = [
        REGISTRY.get_sample_value("mloop_consumer_lag", {"group": group, "topic": topic, "partition": str(p)})
        for p in range(3)
    ]
    known = [s for s in samples if s is not None]
    return sum(known) if known else None


async def dead_letters_after_one_effect(  # type: ignore[no-untyped-def]
    db: Database, config: BusConfig, topic: str, handler, producer: Producer, **options
) -> tuple[list, dict[str, bytes], str]:  # type: ignore[type-arg]
    """Consume ``topic`` until the handler has had one effect; then the DLQ's records (one expected), the first
    one's headers and the reason it gives."""
    subscriber = await start_subscriber(config, topic, handler, producer, **options)
    try:
        await eventually(lambda: _count_is(db, 1), timeout=30)
    finally:
        await subscriber.stop()
    dead = await read_all(config, dlq_topic(topic), expected=1)
    headers = dict(dead[0].headers) if dead else {}
    return dead, headers, headers.get("x-mloop-error", b"").decode(errors="replace")


async def _count_is(db: Database, n: int) -> bool:
    return await effect_count(db) == n


async def _committed_all(subscriber: Subscriber) -> bool:
    consumer = subscriber._consumer
    assignment = consumer.assignment()
    if not assignment:
        return False
    ends = await consumer.end_offsets(list(assignment))
    for tp in assignment:
        if (await consumer.committed(tp) or 0) < ends[tp]:
            return False
    return True


async def test_poison_message_goes_to_dlq_and_consumer_moves_on(db: Database, bus, rows: list[Row]) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    await producer.send_raw(topic, b"model-a", b"not json at all", [("ce_specversion", b"1.0")])
    good = event(topic, 1)
    await producer.publish(good)
    dead, headers, reason = await dead_letters_after_one_effect(
        db, config, topic, recording_handler(db, "svc"), producer
    )
    rows.append(
        Row(
            POISON,
            "a record that is not JSON (no CloudEvent headers), then a good event",
            "the record in the DLQ as it came, with its origin and the reason; the next event handled",
            f"not JSON: {len(dead)} dead letter, reason {gist(reason)!r}, next event handled "
            f"({await effect_count(db)} effect)",
            len(dead) == 1
            and dead[0].value == b"not json at all"
            and headers["x-mloop-original-topic"].decode() == topic
            and headers["x-mloop-original-offset"] == b"0"
            and "missing header" in reason,
        )
    )
    assert len(dead) == 1
    assert dead[0].value == b"not json at all"
    assert headers["x-mloop-original-topic"].decode() == topic
    assert headers["x-mloop-original-offset"] == b"0"
    assert b"missing header" in headers["x-mloop-error"]


async def test_handler_that_keeps_failing_is_retried_then_dead_lettered(db: Database, bus, rows: list[Row]) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    attempts: list[str] = []

    async def flaky(envelope: Envelope) -> None:
        if envelope.data["value"] == 13:
            attempts.append(envelope.id)
            raise RuntimeError("the downstream API is down")
        await recording_handler(db, "svc")(envelope)

    await producer.publish(event(topic, 13))
    await producer.publish(event(topic, 14))
    dead, headers, reason = await dead_letters_after_one_effect(
        db, config, topic, flaky, producer, max_attempts=3, backoff_seconds=0.05
    )
    rows.append(
        Row(
            POISON,
            "a handler failing on one event every time (3 attempts allowed), then a good event",
            "the record in the DLQ as it came, with its origin and the reason; the next event handled",
            f"failing handler: {len(attempts)} attempts, {len(dead)} dead letter, reason {gist(reason)!r}, "
            f"next event handled ({await effect_count(db)} effect)",
            len(attempts) == 3
            and len(dead) == 1
            and headers["x-mloop-attempts"] == b"3"
            and "the downstream API is down" in reason
            and headers["ce_id"].decode() == attempts[0],
        )
    )
    assert len(attempts) == 3
    assert len(dead) == 1
    assert headers["x-mloop-attempts"] == b"3"
    assert b"the downstream API is down" in headers["x-mloop-error"]
    assert headers["ce_id"].decode() == attempts[0]  # the original CloudEvent headers travel along


async def test_outbox_publishes_committed_events_after_a_crash(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    committed = event(topic, 1)
    async with db.transaction() as session:
        await enqueue(session, committed)
    # The process "crashes" here: committed, never published. A rolled-back event must never leave.
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await enqueue(session, event(topic, 2))
            raise RuntimeError("crash before commit")
    relay = OutboxRelay(db, producer)  # a new process's relay
    assert await relay.publish_pending() == 1
    assert await relay.publish_pending() == 0
    records = await read_all(config, topic, expected=1)
    assert [dict(r.headers)["ce_id"].decode() for r in records] == [committed.id]
    async with db.transaction() as session:
        pending = (
            await session.execute(
                sa.select(sa.func.count()).select_from(outbox_table).where(outbox_table.c.sent_at.is_(None))
            )
        ).scalar_one()
    assert pending == 0


async def test_concurrent_relays_publish_each_event_once(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    events = [event(topic, i, subject=f"m{i % 5}") for i in range(60)]
    async with db.transaction() as session:
        for e in events:
            await enqueue(session, e)
    relays = [OutboxRelay(db, producer, batch_size=7) for _ in range(3)]

    async def drain(relay: OutboxRelay) -> None:
        while await relay.publish_pending():
            pass

    await asyncio.gather(*(drain(r) for r in relays))
    records = await read_all(config, topic, expected=60)
    ids = [dict(r.headers)["ce_id"].decode() for r in records]
    assert sorted(ids) == sorted(e.id for e in events)
    # Per key, events keep the order they were committed in.
    for subject in {e.subject for e in events}:
        sent = [e.id for e in events if e.subject == subject]
        received = [dict(r.headers)["ce_id"].decode() for r in records if r.key == subject.encode()]
        assert received == sent


async def test_trace_context_survives_a_hop(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    provider = setup_tracing("tests")
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen: list[trace.SpanContext] = []

    async def handler(envelope: Envelope) -> None:
        seen.append(trace.get_current_span().get_span_context())

    with tracer().start_as_current_span("publish side") as parent:
        async with db.transaction() as session:
            await enqueue(session, event(topic, 1))
    await OutboxRelay(db, producer).publish_pending()
    subscriber = await start_subscriber(config, topic, handler, producer)
    try:
        await eventually(lambda: seen, timeout=30)
    finally:
        await subscriber.stop()
    assert seen[0].trace_id == parent.get_span_context().trace_id
    # publish side -> the relay's PRODUCER send span (the outbox kept the context) -> the CONSUMER process span
    finished = exporter.get_finished_spans()
    send_span = next(s for s in finished if s.name == f"send {topic}")
    process_span = next(s for s in finished if s.name == f"process {topic}")
    assert send_span.parent is not None and send_span.parent.span_id == parent.get_span_context().span_id
    assert process_span.parent is not None and process_span.parent.span_id == send_span.context.span_id
    assert process_span.attributes is not None and send_span.attributes is not None
    assert process_span.attributes["messaging.destination.name"] == topic
    assert process_span.attributes["messaging.kafka.offset"] == send_span.attributes["messaging.kafka.offset"]


async def test_outage_of_a_dependency_is_waited_out_not_dead_lettered(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    failures: list[int] = []

    async def registry_down_for_a_while(envelope: Envelope) -> None:
        if len(failures) < 6:  # more than max_attempts
            failures.append(1)
            raise TransientError("registry unreachable")
        await recording_handler(db, "svc")(envelope)

    await producer.publish(event(topic, 5))
    subscriber = await start_subscriber(
        config,
        topic,
        registry_down_for_a_while,
        producer,
        max_attempts=2,
        backoff_seconds=0.01,
        max_backoff_seconds=0.05,
    )
    try:
        await eventually(lambda: _count_is(db, 1), timeout=30)
    finally:
        await subscriber.stop()
    assert len(failures) == 6
    assert await read_all(config, dlq_topic(topic), expected=0, timeout=2) == []


async def test_handler_longer_than_the_poll_interval_keeps_its_group_membership(db: Database, bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    calls: list[str] = []
    members_while_busy: list[int] = []
    subscriber: Subscriber | None = None

    async def slow(envelope: Envelope) -> None:
        calls.append(envelope.id)
        await asyncio.sleep(8)  # past max_poll_interval_ms below, like a long training fit
        assert subscriber is not None
        members_while_busy.append(await _group_members(config, subscriber.group_id))
        await recording_handler(db, "svc")(envelope)

    await producer.publish(event(topic, 1))
    subscriber = await start_subscriber(
        config, topic, slow, producer, max_poll_interval_ms=4000, poll_while_busy_seconds=0.5
    )
    try:
        await eventually(lambda: _count_is(db, 1), timeout=60)
    finally:
        await subscriber.stop()
    assert members_while_busy == [1]  # an idle consumer would have left the group after 4 s
    assert len(calls) == 1


async def _group_members(config: BusConfig, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    await admin.start()
    try:
        description = (await admin.describe_consumer_groups([group]))[0]
        return len(description.groups[0][5])  # (error, group, state, protocol type, protocol, members, ...)
    finally:
        await admin.close()


async def test_a_dead_letter_is_listed_with_its_cause_and_handled_once_when_replayed_after_the_fix(
    db: Database,
    bus,  # type: ignore[no-untyped-def]
    rows: list[Row],
) -> None:
    config, topic, producer = bus
    fixed = False
    # In the table as failed until the end is reached (the checks below are interleaved with the steps).
    part = Row(
        POISON,
        "a handler failing on one event (2 attempts allowed) until a fix; its dead letter listed, then replayed twice",
        "listed with its cause; handled once after the fix however often replayed; the DLQ kept",
        "replay after a fix: did not finish",
        False,
    )
    rows.append(part)

    async def handler(envelope: Envelope) -> None:
        if envelope.data["value"] == 13 and not fixed:
            raise ValueError("value 13 is not supported yet")
        await recording_handler(db, "svc")(envelope)

    poisoned, fine = event(topic, 13), event(topic, 14)
    await producer.publish(poisoned)
    await producer.publish(fine)
    subscriber = await start_subscriber(config, topic, handler, producer, max_attempts=2, backoff_seconds=0.05)
    try:
        await eventually(lambda: _count_is(db, 1), timeout=30)
        letters = await eventually(lambda: dead_letters(config, topic), timeout=30, interval=0.5)
        [letter] = letters
        assert letter.original_topic == topic and letter.attempts == 2 and letter.group == subscriber.group_id
        assert "value 13 is not supported yet" in letter.error
        assert letter.event is not None and letter.event.id == poisoned.id

        fixed = True
        assert await replay_dead_letters(producer, letters) == (1, [])
        await eventually(lambda: _count_is(db, 2), timeout=30)
        assert await replay_dead_letters(producer, letters) == (1, [])  # twice: the inbox absorbs it
        await producer.publish(event(topic, 15))
        await eventually(lambda: _count_is(db, 3), timeout=30)  # the second replay came before this one
    finally:
        await subscriber.stop()
    kept = len(await dead_letters(config, topic))
    part.observed = (
        f"replay after a fix: listed with {letter.attempts} attempts and cause {gist(letter.error)!r}; replayed "
        f"twice, handled once ({await effect_count(db)} effects for 3 events); {kept} dead letter still in the DLQ"
    )
    part.passed = kept == 1
    assert kept == 1  # replaying does not consume the DLQ


async def test_the_cli_lists_dead_letters_naming_the_cause(bus, monkeypatch, rows: list[Row]) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from mloop_cli.main import app
    from mloop_cli.main import console as cli_console

    config, topic, producer = bus
    await producer.send_raw(f"{topic}.dlq", b"k", b"not json", [("x-mloop-error", b"InvalidEvent: missing header")])
    await producer.send_raw(
        f"{topic}.dlq", b"k", b"", [("x-mloop-error", b"too big"), ("x-mloop-value-omitted", b"2000000")]
    )
    monkeypatch.setenv("MLOOP_KAFKA__BOOTSTRAP_SERVERS", config.bootstrap_servers)
    monkeypatch.setattr(cli_console, "width", 250)
    runner = CliRunner()

    # The CLI runs its own event loop: in a thread, beside this test's.
    listed = await asyncio.to_thread(runner.invoke, app, ["dlq", "list", topic])
    replayed = await asyncio.to_thread(runner.invoke, app, ["dlq", "replay", topic, "--yes"])

    listed_ok = (
        "InvalidEvent: missing header" in listed.output
        and "2 dead letter(s)" in listed.output
        and "(not a CloudEvent)" in listed.output
        and "value omitted" in listed.output
    )
    replayed_ok = "replayed 1 record(s)" in replayed.output and "skipped" in replayed.output
    rows.append(
        Row(
            POISON,
            "two dead letters (not JSON; a value too big, omitted), then `mloop dlq list TOPIC` and "
            "`mloop dlq replay TOPIC --yes`",
            "the list names each cause; replay re-publishes what it can and says what it skipped",
            f"mloop dlq list: exit {listed.exit_code}, causes named: {'yes' if listed_ok else 'no'}; mloop dlq "
            f"replay: exit {replayed.exit_code}, {'replayed 1, skipped 1' if replayed_ok else replayed.output[-80:]}",
            listed.exit_code == 0 and listed_ok and replayed.exit_code == 0 and replayed_ok,
        )
    )
    assert listed.exit_code == 0, listed.output
    assert "InvalidEvent: missing header" in listed.output and "2 dead letter(s)" in listed.output
    assert "(not a CloudEvent)" in listed.output and "value omitted" in listed.output
    assert replayed.exit_code == 0 and "replayed 1 record(s)" in replayed.output
    assert "skipped" in replayed.output


async def test_the_inbox_forgets_only_events_handled_before_its_retention(db: Database) -> None:
    old, recent = event("t", 1), event("t", 2)
    async with db.transaction() as session:
        assert await claim_event(session, "svc", old) and await claim_event(session, "svc", recent)
        await session.execute(
            sa.update(inbox_table)
            .where(inbox_table.c.event_id == old.id)
            .values(handled_at=sa.func.now() - sa.text("interval '31 days'"))
        )
    async with db.transaction() as session:
        purged = await purge_handled(session, 30 * 86_400)

    assert purged == 1
    async with db.transaction() as session:
        assert await claim_event(session, "svc", old)  # forgotten: it would be handled again
        assert not await claim_event(session, "svc", recent)  # still remembered: a redelivery does nothing


async def test_broadcast_subscribers_each_see_every_record_from_their_start_and_leave_no_group(bus) -> None:  # type: ignore[no-untyped-def]
    config, topic, producer = bus
    await producer.publish(event(topic, 0))  # before both start: the caller's to catch up on, not theirs
    seen: dict[str, list[int]] = {"a": [], "b": []}

    def recorder(replica: str) -> Callable[[Envelope], Awaitable[None]]:
        async def handle(envelope: Envelope) -> None:
            seen[replica].append(envelope.data["value"])

        return handle

    replicas = []
    for replica in seen:
        subscriber = Subscriber(
            config,
            group_id="mloop-serving-broadcast-test",  # the same name on both: a group would share the records
            routes=[route(Value, lambda _, envelope, r=replica: recorder(r)(envelope), topic=topic)],
            dlq_producer=producer,
            broadcast=True,
        )
        await subscriber.start()
        replicas.append(subscriber)
    try:
        for value in range(1, 7):
            await producer.publish(event(topic, value, subject=f"model-{value}"))  # keys over several partitions
        await eventually(lambda: all(len(values) == 6 for values in seen.values()), timeout=30, interval=0.1)
    finally:
        for subscriber in replicas:
            await subscriber.stop()

    assert {replica: sorted(values) for replica, values in seen.items()} == {
        "a": [1, 2, 3, 4, 5, 6],
        "b": [1, 2, 3, 4, 5, 6],
    }
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap_servers)
    await admin.start()
    try:
        groups = {group for group, _ in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    assert "mloop-serving-broadcast-test" not in groups


async def test_a_member_joining_and_leaving_mid_batch_loses_nothing_and_applies_nothing_twice(  # type: ignore[no-untyped-def]
    db: Database, bus, rows: list[Row]
) -> None:
    config, topic, producer = bus
    group = f"g-{uuid.uuid4().hex[:8]}"
    record = recording_handler(db, "svc")
    handled: dict[str, int] = {}

    async def slow(_: Value, envelope: Envelope) -> None:
        handled[envelope.id] = handled.get(envelope.id, 0) + 1
        await asyncio.sleep(0.05)  # a batch is in progress when the group rebalances
        await record(envelope)

    def member() -> Subscriber:
        return Subscriber(config, group_id=group, routes=[route(Value, slow, topic=topic)], dlq_producer=producer)

    events = [event(topic, value, subject=f"model-{value % 7}") for value in range(120)]
    for published in events:
        await producer.publish(published)
    first, second = member(), member()
    await first.start()
    try:
        await eventually(lambda: _count_is_at_least(db, 20), timeout=60, interval=0.05)
        await second.start()  # joins mid-batch: partitions move while records are being handled
        await eventually(lambda: _count_is_at_least(db, 60), timeout=60, interval=0.05)
        await second.stop()  # and leaves mid-batch: they move back
        await eventually(lambda: _count_is(db, 120), timeout=60, interval=0.1)
        survived = first.running and first.error is None
    finally:
        await first.stop()
        with contextlib.suppress(Exception):
            await second.stop()

    async with db.transaction() as session:
        applied = [r for (r,) in await session.execute(sa.select(effects.c.event_id))]
    ids = sorted(e.id for e in events)
    rows.append(
        Row(
            "6 a rebalance mid-batch",
            f"{len(events)} events (50 ms each to handle); a second consumer joins the group after 20 are applied "
            "and leaves after 60",
            "no crash, no loss, no effect applied twice (a record handled again is absorbed by the inbox)",
            f"first consumer {'running, no error' if survived else f'stopped ({first.error!r})'}; effects of "
            f"{len(set(applied))}/{len(events)} events, "
            f"{len(applied) - len(set(applied))} applied twice; {sum(handled.values()) - len(handled)} records "
            f"handled again after the rebalances; {len(ids) - len(set(handled) & set(ids))} never handled",
            survived and sorted(applied) == ids and set(handled) == set(ids),
        )
    )
    assert survived
    assert sorted(applied) == ids  # every event's effect, each exactly once
    assert set(handled) == set(ids)  # some may be handled twice (redelivery); the inbox absorbs it


async def _count_is_at_least(db: Database, n: int) -> bool:
    return await effect_count(db) >= n


async def test_a_tail_with_a_backlog_starts_that_many_records_back_per_partition_then_follows(bus) -> None:  # type: ignore[no-untyped-def]
    """What the web UI's pipeline page shows at start: the recent past of each topic, then what comes."""
    config, topic, producer = bus
    for value in range(10):
        await producer.publish(event(topic, value, subject="one-key"))  # one key: one partition, in order
    seen: list[int] = []
    async with tail(config, [topic], backlog={topic: 3, "another.topic": 50}) as records:

        async def read(count: int) -> None:
            async for _, envelope in records:
                assert envelope is not None
                seen.append(envelope.data["value"])
                if len(seen) == count:
                    return

        await asyncio.wait_for(read(3), timeout=30)
        await producer.publish(event(topic, 10, subject="one-key"))
        await asyncio.wait_for(read(4), timeout=30)

    assert seen == [7, 8, 9, 10]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
async def test_events_from_a_producer_that_compresses_its_batches_are_handled(bus, codec: str) -> None:  # type: ignore[no-untyped-def]
    """Any Kafka client may compress (a data engineer's, Kafka Connect's): a consumer without the codec once
    stopped at the first such batch for good, its lag growing and nothing dead-lettered."""
    config, topic, producer = bus
    compressing = AIOKafkaProducer(bootstrap_servers=config.bootstrap_servers, compression_type=codec, linger_ms=50)
    await compressing.start()
    try:
        delivered = []
        for value in range(20):  # queued before any is sent, so batches hold several records
            key, payload, headers = to_record(event(topic, value, subject=f"model-{value % 3}"))
            delivered.append(await compressing.send(topic, payload, key=key, headers=headers))
        await asyncio.gather(*delivered)
    finally:
        await compressing.stop()
    seen: list[int] = []

    async def record(envelope: Envelope) -> None:
        seen.append(envelope.data["value"])

    subscriber = await start_subscriber(config, topic, record, producer)
    try:
        await eventually(lambda: len(seen) >= 20, timeout=30, interval=0.1)
    finally:
        await subscriber.stop()
    assert sorted(seen) == list(range(20))


async def test_summary_rows(rows: list[Row]) -> None:
    """Merges this module's rows (scenarios 6 and 7a of issue 10) into tests/faults/results/summary.md and .json."""
    assert rows, "no scenario ran"
    summary.write(rows)
    assert all(r.passed for r in rows)
