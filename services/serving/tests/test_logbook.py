import asyncio
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY

from mloop_common.events import FeedbackReceived, FeedbackRecord, PredictionRecord, PredictionsLogged, to_record
from mloop_common.jsoncodec import json_loads, json_record
from mloop_common.telemetry import TRACEPARENT_PLACEHOLDER
from mloop_common.testing import through_the_wire
from mloop_serving.logbook import Logbook, RequestIndex
from mloop_serving.spill import SpillFile


class FakePublisher:
    """Records what would go to Kafka (through the real codec); publish calls numbered in ``failing`` (from 1) raise."""

    def __init__(self, failing=()):
        self.events = []
        self.failing = set(failing)
        self.calls = 0

    async def publish(self, event):
        self.calls += 1
        if self.calls in self.failing:
            raise ConnectionError("broker unreachable")
        self.events.append(through_the_wire(event))

    @property
    def sent(self):
        """(payload, subject) of every event published, in order."""
        return [(event.payload(), event.subject) for event in self.events]

    def request_ids(self):
        return [record.request_id for payload, _ in self.sent for record in payload.records]


def predictions(count):
    now = datetime.now(UTC)
    return [
        PredictionRecord(request_id=uuid.uuid4().hex, timestamp=now, inputs={"usage": float(i)}, prediction="no")
        for i in range(count)
    ]


def feedback(count):
    now = datetime.now(UTC)
    return [FeedbackRecord(request_id=uuid.uuid4().hex, label="yes", timestamp=now) for _ in range(count)]


def ids(records):
    return [record.request_id for record in records]


def dropped_so_far():
    return REGISTRY.get_sample_value("mloop_serving_log_dropped_records_total") or 0.0


def oversized_so_far():
    return REGISTRY.get_sample_value("mloop_serving_log_oversized_records_total") or 0.0


def wide_predictions(count, features=100):
    """Records as wide as a real model's inputs; 500 of them encode to well over 1 MiB."""
    now = datetime.now(UTC)
    return [
        PredictionRecord(
            request_id=uuid.uuid4().hex,
            timestamp=now,
            inputs={f"feature_{j:03d}": 1000.0 + i + j / 7 for j in range(features)},
            prediction="no",
            probabilities=[0.25, 0.75],
        )
        for i in range(count)
    ]


def record_bytes(event):
    """Size of ``event`` as the broker receives it: key, value and headers from the real codec."""
    key, value, headers = to_record(event)
    return len(key) + len(value) + sum(len(name) + len(raw) for name, raw in headers)


async def until(condition, timeout=2.0):
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


async def test_predictions_are_published_per_model_and_version():
    publish = FakePublisher()
    logbook = Logbook(publish)
    v1, v2, fraud = predictions(3), predictions(2), predictions(1)
    logbook.log_predictions("churn", 1, v1[:2])
    logbook.log_predictions("churn", 2, v2)
    logbook.log_predictions("fraud", 7, fraud)
    logbook.log_predictions("churn", 1, v1[2:])

    await logbook.flush()

    published = {(p.model, p.version): (ids(p.records), subject) for p, subject in publish.sent}
    assert all(isinstance(p, PredictionsLogged) for p, _ in publish.sent)
    assert published == {
        ("churn", 1): (ids(v1), "churn"),
        ("churn", 2): (ids(v2), "churn"),
        ("fraud", 7): (ids(fraud), "fraud"),
    }


async def test_feedback_is_published_per_model():
    publish = FakePublisher()
    logbook = Logbook(publish)
    churn, fraud = feedback(2), feedback(1)
    logbook.log_feedback("churn", churn)
    logbook.log_feedback("fraud", fraud)

    await logbook.flush()

    assert all(isinstance(p, FeedbackReceived) for p, _ in publish.sent)
    assert {p.model: (ids(p.records), subject) for p, subject in publish.sent} == {
        "churn": (ids(churn), "churn"),
        "fraud": (ids(fraud), "fraud"),
    }


async def test_large_buffer_is_published_in_batches():
    publish = FakePublisher()
    logbook = Logbook(publish, batch_size=2)
    records = predictions(5)
    logbook.log_predictions("churn", 1, records)

    await logbook.flush()

    assert [len(p.records) for p, _ in publish.sent] == [2, 2, 1]
    assert publish.request_ids() == ids(records)


async def test_flush_of_an_empty_logbook_publishes_nothing():
    publish = FakePublisher()

    await Logbook(publish).flush()

    assert publish.sent == []


async def test_stop_publishes_everything_buffered():
    publish = FakePublisher()
    logbook = Logbook(publish, interval=60)
    await logbook.start()
    records, labels = predictions(3), feedback(2)
    logbook.log_predictions("churn", 1, records)
    logbook.log_feedback("churn", labels)

    await logbook.stop()

    assert sorted(publish.request_ids()) == sorted(ids(records) + ids(labels))


async def test_full_batch_is_published_without_waiting_for_the_interval():
    publish = FakePublisher()
    logbook = Logbook(publish, batch_size=3, interval=60)
    await logbook.start()
    records = predictions(3)
    try:
        logbook.log_predictions("churn", 1, records)

        await until(lambda: len(publish.request_ids()) == 3)
    finally:
        await logbook.stop()

    assert publish.request_ids() == ids(records)


async def test_background_loop_publishes_after_the_interval():
    publish = FakePublisher()
    logbook = Logbook(publish, batch_size=100, interval=0.01)
    await logbook.start()
    records = predictions(2)
    try:
        logbook.log_predictions("churn", 1, records)

        await until(lambda: len(publish.request_ids()) == 2)
    finally:
        await logbook.stop()

    assert publish.request_ids() == ids(records)


async def test_failed_publish_keeps_records_for_the_next_flush():
    publish = FakePublisher(failing={1})
    logbook = Logbook(publish)
    records, labels = predictions(3), feedback(2)
    logbook.log_predictions("churn", 1, records)
    logbook.log_feedback("churn", labels)

    with pytest.raises(ConnectionError):
        await logbook.flush()
    assert publish.sent == []
    await logbook.flush()

    assert sorted(publish.request_ids()) == sorted(ids(records) + ids(labels))


async def test_publish_failing_midway_loses_nothing():
    publish = FakePublisher(failing={3})
    logbook = Logbook(publish, batch_size=2)
    records, labels = predictions(4), feedback(3)
    logbook.log_predictions("churn", 1, records)
    logbook.log_feedback("churn", labels)

    with pytest.raises(ConnectionError):
        await logbook.flush()
    await logbook.flush()

    assert set(publish.request_ids()) == set(ids(records) + ids(labels))


async def test_records_logged_while_publishing_is_failing_are_kept_too():
    publish = FakePublisher(failing={1, 2})
    logbook = Logbook(publish)
    first, second = predictions(2), predictions(2)
    logbook.log_predictions("churn", 1, first)
    with pytest.raises(ConnectionError):
        await logbook.flush()
    logbook.log_predictions("churn", 1, second)
    with pytest.raises(ConnectionError):
        await logbook.flush()

    await logbook.flush()

    assert sorted(publish.request_ids()) == sorted(ids(first) + ids(second))


async def test_buffer_over_capacity_drops_the_excess_and_counts_it():
    publish = FakePublisher()
    logbook = Logbook(publish, capacity=3)
    kept, excess = predictions(2), feedback(3)
    dropped_before = dropped_so_far()
    logbook.log_predictions("churn", 1, kept)
    logbook.log_feedback("churn", excess)

    await logbook.flush()

    assert publish.request_ids() == ids(kept) + ids(excess[:1])
    assert dropped_so_far() - dropped_before == 2


async def test_buffer_has_room_again_after_a_flush():
    publish = FakePublisher()
    logbook = Logbook(publish, capacity=2)
    first, second = predictions(2), predictions(2)
    logbook.log_predictions("churn", 1, first)
    await logbook.flush()
    logbook.log_predictions("churn", 1, second)

    await logbook.flush()

    assert publish.request_ids() == ids(first) + ids(second)


async def test_a_full_batch_over_the_event_size_limit_is_split_into_events_that_fit():
    publish = FakePublisher()
    logbook = Logbook(publish, batch_size=500, max_event_bytes=900_000)
    records = wide_predictions(500)
    unsplit = PredictionsLogged(model="churn", version=1, records=records)
    assert len(unsplit.model_dump_json()) > 1024 * 1024  # one event would exceed the broker's default limit
    logbook.log_predictions("churn", 1, records)

    await logbook.flush()

    assert len(publish.events) > 1
    assert all(record_bytes(event) <= 900_000 for event in publish.events)
    assert publish.request_ids() == ids(records)


async def test_events_are_filled_up_to_the_size_limit_and_never_past_it():
    """The log adds up an event's size from its records' own before it makes it: the sum must be exact."""
    now = datetime.now(UTC)
    # records of one size: an event of k of them is an event of one, and k - 1 more with a comma each
    records = [
        PredictionRecord(request_id=uuid.uuid4().hex, timestamp=now, inputs={"usage": 1.5}, prediction="no")
        for _ in range(50)
    ]
    alone = FakePublisher()
    single = Logbook(alone)
    single.log_predictions("churn", 1, records[:1])
    await single.flush()
    [event] = alone.events
    one = record_bytes(event.with_trace(TRACEPARENT_PLACEHOLDER))  # tracing is off here: sized as the log sizes it
    record = len(event.payload().records[0].model_dump_json())
    publish = FakePublisher()
    logbook = Logbook(publish, max_event_bytes=one + 9 * (record + 1) - 1)  # one byte short of 10 records
    logbook.log_predictions("churn", 1, records)

    await logbook.flush()

    assert [len(payload.records) for payload, _ in publish.sent] == [9, 9, 9, 9, 9, 5]
    assert publish.request_ids() == ids(records)


async def test_feedback_batches_are_split_by_size_too():
    publish = FakePublisher()
    logbook = Logbook(publish, max_event_bytes=8_000)
    now = datetime.now(UTC)
    labels = [FeedbackRecord(request_id=uuid.uuid4().hex, label="x" * 500, timestamp=now) for _ in range(40)]
    logbook.log_feedback("churn", labels)

    await logbook.flush()

    assert len(publish.events) > 1
    assert all(record_bytes(event) <= 8_000 for event in publish.events)
    assert publish.request_ids() == ids(labels)


async def test_a_record_too_large_to_publish_alone_is_sent_truncated_with_a_flag_once(caplog):
    publish = FakePublisher()
    logbook = Logbook(publish, max_event_bytes=900_000)
    before, huge, after = predictions(3), predictions(1), predictions(3)
    huge = [huge[0].model_copy(update={"inputs": {"usage": 1.0, "notes": "x" * 1_000_000}})]
    oversized_before = oversized_so_far()
    logbook.log_predictions("churn", 1, before + huge + after)

    await logbook.flush()
    await logbook.flush()

    assert publish.request_ids() == ids(before + huge + after)
    records = {r.request_id: r for payload, _ in publish.sent for r in payload.records}
    cut = records[huge[0].request_id]
    assert cut.truncated and set(cut.inputs) == {"_truncated"} and cut.inputs["_truncated"] > 1_000_000
    assert (cut.prediction, cut.route) == (huge[0].prediction, huge[0].route)
    assert not any(records[rid].truncated for rid in ids(before + after))
    assert all(record_bytes(event) <= 900_000 for event in publish.events)
    assert oversized_so_far() - oversized_before == 1
    assert any(r.levelname == "WARNING" and huge[0].request_id in r.getMessage() for r in caplog.records)


async def test_a_record_exactly_as_large_as_an_event_allows_is_kept_whole_and_one_byte_more_is_truncated():
    [record] = predictions(1)
    record = record.model_copy(update={"inputs": {"usage": 1.0, "notes": "x" * 5_000}})
    alone = FakePublisher()
    single = Logbook(alone)
    single.log_predictions("churn", 1, [record])
    await single.flush()
    [event] = alone.events
    exact = record_bytes(event.with_trace(TRACEPARENT_PLACEHOLDER))  # tracing is off here: sized as the log sizes it

    for limit, truncated in ((exact, False), (exact - 1, True)):
        publish = FakePublisher()
        logbook = Logbook(publish, max_event_bytes=limit)
        logbook.log_predictions("churn", 1, [record])
        await logbook.flush()
        [(payload, _)] = publish.sent
        assert payload.records[0].truncated is truncated, limit
        assert ("notes" in payload.records[0].inputs) is not truncated


async def test_a_record_too_large_even_truncated_is_dropped_and_counted_not_retried(caplog):
    publish = FakePublisher()
    logbook = Logbook(publish, max_event_bytes=900_000)
    kept, huge = predictions(2), predictions(1)
    huge = [huge[0].model_copy(update={"prediction": "x" * 1_000_000})]
    dropped_before = dropped_so_far()
    logbook.log_predictions("churn", 1, kept + huge)

    await logbook.flush()
    await logbook.flush()

    assert publish.request_ids() == ids(kept)
    assert dropped_so_far() - dropped_before == 1
    assert any(r.levelname == "ERROR" and huge[0].request_id in r.getMessage() for r in caplog.records)


async def test_a_failed_publish_of_a_split_batch_requeues_only_what_did_not_leave():
    publish = FakePublisher(failing={2})
    logbook = Logbook(publish, max_event_bytes=900_000)
    records = wide_predictions(500)
    logbook.log_predictions("churn", 1, records)

    with pytest.raises(ConnectionError):
        await logbook.flush()
    await logbook.flush()

    assert sorted(publish.request_ids()) == sorted(ids(records))


def test_request_index_remembers_who_answered():
    index = RequestIndex()
    index.add("r1", "churn", 3)

    assert index.get("r1") == ("churn", 3)
    assert index.get("r2") is None


def test_request_index_forgets_the_oldest_past_capacity():
    index = RequestIndex(capacity=2)
    for request_id in ("r1", "r2", "r3"):
        index.add(request_id, "churn", 1)

    assert [index.get(r) for r in ("r1", "r2", "r3")] == [None, ("churn", 1), ("churn", 1)]


class SwitchablePublisher(FakePublisher):
    """A broker that can be taken away (publish raises) or left hanging (publish never returns)."""

    def __init__(self):
        super().__init__()
        self.down = False
        self.hanging = False
        self.attempts = 0

    async def publish(self, event):
        self.attempts += 1
        if self.hanging:
            await asyncio.Event().wait()
        if self.down:
            raise ConnectionError("broker unreachable")
        await super().publish(event)


def counter(name):
    return REGISTRY.get_sample_value(name) or 0.0


async def test_while_kafka_is_away_records_go_to_the_spill_file_and_come_back_in_order(tmp_path):
    publish = SwitchablePublisher()
    spill = SpillFile(tmp_path / "serving.spill", max_bytes=10_000_000)
    logbook = Logbook(publish, spill=spill, batch_size=2)
    before, during, after = predictions(3), predictions(4), predictions(2)
    spilled, replayed = (
        counter("mloop_serving_log_spilled_records_total"),
        counter("mloop_serving_log_replayed_records_total"),
    )
    logbook.log_predictions("churn", 1, before)
    await logbook.flush()
    publish.down = True
    logbook.log_predictions("churn", 1, during[:2])
    with pytest.raises(ConnectionError):
        await logbook.flush()
    logbook.log_predictions("churn", 1, during[2:])
    with pytest.raises(ConnectionError):
        await logbook.flush()
    on_disk = spill.size

    publish.down = False
    logbook.log_predictions("churn", 1, after)
    await logbook.flush()

    assert on_disk > 0 and publish.request_ids() == ids(before + during + after)
    assert counter("mloop_serving_log_spilled_records_total") - spilled == len(during) + len(after)
    assert counter("mloop_serving_log_replayed_records_total") - replayed == len(during) + len(after)
    assert spill.empty and (tmp_path / "serving.spill").stat().st_size == 0


async def test_a_restarted_logbook_replays_what_the_previous_one_spilled(tmp_path):
    down = SwitchablePublisher()
    down.down = True
    first = Logbook(down, spill=SpillFile(tmp_path / "serving.spill", max_bytes=10_000_000), stop_grace=0.5)
    records = predictions(5)
    await first.start()
    first.log_predictions("churn", 1, records)
    await first.stop()

    up = FakePublisher()
    second = Logbook(up, spill=SpillFile(tmp_path / "serving.spill", max_bytes=10_000_000), interval=0.01)
    await second.start()
    await until(lambda: len(up.request_ids()) == 5)
    await second.stop()

    assert down.events == [] and up.request_ids() == ids(records)


async def test_stop_with_a_broker_that_never_answers_spills_within_the_grace_period(tmp_path):
    publish = SwitchablePublisher()
    publish.hanging = True
    spill = SpillFile(tmp_path / "serving.spill", max_bytes=10_000_000)
    logbook = Logbook(publish, spill=spill, interval=0.01, stop_grace=0.2)
    first, last = predictions(3), predictions(2)
    await logbook.start()
    logbook.log_predictions("churn", 1, first)
    await until(lambda: publish.attempts == 1)  # the loop is now stuck publishing ``first``
    logbook.log_predictions("churn", 1, last)

    await asyncio.wait_for(logbook.stop(), timeout=2)

    reopened = SpillFile(tmp_path / "serving.spill", max_bytes=10_000_000)
    kept = []
    while (head := reopened.head()) is not None:
        kept += [r["request_id"] for r in head[0].data["records"]]
        reopened.pop()
    assert kept == ids(first + last)


async def test_records_beyond_a_full_spill_are_dropped_and_counted(tmp_path):
    publish = SwitchablePublisher()
    publish.down = True
    logbook = Logbook(publish, spill=SpillFile(tmp_path / "serving.spill", max_bytes=3_000), batch_size=5)
    dropped = dropped_so_far()
    logbook.log_predictions("churn", 1, predictions(50))

    with pytest.raises(ConnectionError):
        await logbook.flush()

    assert 0 < dropped_so_far() - dropped < 50


async def test_a_publish_the_broker_never_answers_is_given_up_after_the_timeout_and_spilled(tmp_path):
    publish = SwitchablePublisher()
    publish.hanging = True
    spill = SpillFile(tmp_path / "serving.spill", max_bytes=10_000_000)
    logbook = Logbook(publish, spill=spill, publish_timeout=0.05)
    records = predictions(3)
    logbook.log_predictions("churn", 1, records)

    with pytest.raises(TimeoutError):
        await logbook.flush()
    publish.hanging = False
    await logbook.flush()

    assert publish.request_ids() == ids(records) and spill.empty


@pytest.mark.parametrize(
    "record",
    [
        PredictionRecord(
            request_id="r1",
            timestamp=datetime(2026, 12, 1, 19, 29, 1, 123456, tzinfo=UTC),
            inputs={"usage": 1.5, "plan": "gold", "missing": None, "nan": float("nan"), "huge": 2**70},
            prediction="yes",
            probabilities=[0.25, 0.75],
            route="canary",
        ),
        PredictionRecord(
            request_id="r2",
            timestamp=datetime(2026, 12, 1, 19, 29, 1, tzinfo=UTC),  # no microseconds
            inputs={"nested": {"a": [1, "é", True]}, "tiny": 1e-300},
            prediction=3.5,
            truncated=True,
        ),
        PredictionRecord(
            request_id="r3",
            timestamp=datetime(2026, 12, 1, 19, 29, 1, 5, tzinfo=timezone(timedelta(hours=2))),
            inputs={},
            prediction=None,
            route="shadow",
        ),
        FeedbackRecord(request_id="r4", label="churned", timestamp=datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_records_encoded_from_their_fields_are_what_pydantic_would_dump(record):
    """The log encodes its records' fields itself (pydantic's dump cost most of a request's logging): the bytes
    must be those of pydantic's JSON dump of the same record."""
    ours = json_record(record.__dict__)
    pydantics = json_record(record.model_dump(mode="json"))

    assert ours == pydantics and json_loads(ours) == json_loads(pydantics)
