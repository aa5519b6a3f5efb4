"""Off-request-path batching of prediction and feedback records into events that fit the broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import msgspec
from prometheus_client import Counter, Gauge

from mloop_common.events import (
    TOPIC_OF,
    Envelope,
    FeedbackReceived,
    FeedbackRecord,
    PredictionRecord,
    PredictionsLogged,
    event_of_data,
    record_size,
    to_record,
)
from mloop_common.jsoncodec import json_record, json_record_into
from mloop_common.retry import Backoff
from mloop_common.telemetry import TRACEPARENT_PLACEHOLDER, SpanContext, create_span_headers, current_span_context
from mloop_serving.spill import MemorySpill, Spill

SOURCE = "mloop/serving"
log = logging.getLogger(__name__)

PENDING = Gauge("mloop_serving_log_pending_records", "Prediction/feedback records waiting to be published")
DROPPED = Counter(
    "mloop_serving_log_dropped_records_total", "Records dropped because the log buffer or the spill was full"
)
PUBLISHED = Counter("mloop_serving_log_published_records_total", "Records Kafka took (replayed ones included)")
SPILLED = Counter(
    "mloop_serving_log_spilled_records_total", "Records set aside in the spill because Kafka did not take them"
)
REPLAYED = Counter("mloop_serving_log_replayed_records_total", "Records published from the spill once Kafka took them")
SPILL_BYTES = Gauge("mloop_serving_log_spill_bytes", "Bytes in the prediction log's spill (events waiting for Kafka)")
OVERSIZED = Counter(
    "mloop_serving_log_oversized_records_total",
    "Records that alone make an event over log_max_event_bytes (the broker would refuse it): inputs truncated",
)
TRUNCATED = "_truncated"  # the key replacing an oversized record's inputs; its value is the record's encoded size


class Publisher(Protocol):
    """Where serving's events go: the bus producer (serving has no database, hence no outbox)."""

    async def publish(self, event: Envelope) -> None: ...


def prediction_fields(
    request_id: str,
    timestamp: datetime,
    inputs: dict[str, Any],
    prediction: Any,
    probabilities: list[float] | None,
    route: str,
) -> dict[str, Any]:
    """The fields of the ``PredictionRecord`` of these values, as its JSON has them (the timestamp aside, which the
    log's encoder writes as pydantic does), without making the record: making and dumping one per prediction was
    most of what logging cost a request. The values come from this process (the request's checked inputs, the
    model's answer), so there is nothing to validate."""
    return {
        "request_id": request_id,
        "timestamp": timestamp,
        "inputs": inputs,
        "prediction": prediction,
        "probabilities": probabilities,
        "route": route,
        "truncated": False,
    }


def encoded_size(event: Envelope) -> int:
    """Bytes of ``event`` as a Kafka record: key, value and headers, as the CloudEvents codec writes them."""
    return record_size(*to_record(event))


def _bare_size(empty: PredictionsLogged | FeedbackReceived, subject: str) -> int:
    """Bytes of ``empty`` (an event without records) as a Kafka record, measured with a trace header as large as
    the one it gets, so what fits here fits on the wire."""
    topic = TOPIC_OF[type(empty)]
    data = empty.model_dump(mode="json")
    return encoded_size(event_of_data(topic, data, source=SOURCE, subject=subject).with_trace(TRACEPARENT_PLACEHOLDER))


class RequestIndex:
    """Which model and version answered a request id (bounded, oldest forgotten first)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def add(self, request_id: str, model: str, version: int) -> None:
        self._entries[request_id] = (model, version)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def get(self, request_id: str) -> tuple[str, int] | None:
        return self._entries.get(request_id)


@dataclass(frozen=True)
class _Batch:
    """One event ready to publish, and how many records it carries."""

    event: Envelope
    records: int


@dataclass(frozen=True)
class _Group:
    """Records encoded for one event: their JSON array, how many, and where in their buffer they were logged."""

    array: bytes
    records: int
    logged_at: range


@dataclass
class _Pending:
    """Records waiting for their event, as their JSON, and the recorded request spans the event will link to."""

    empty: PredictionsLogged | FeedbackReceived  # the event they will go in, without them
    subject: str
    bare: int  # bytes of that event without records, as the log sizes it (``_bare_size``)
    records: bytearray = field(default_factory=bytearray)  # the records' JSON, each followed by a comma
    ends: list[int] = field(default_factory=list)  # where each record ends in ``records`` (at its comma)
    links: list[tuple[int, SpanContext]] = field(default_factory=list)  # (index in records, the request's span)


COMMA = ord(",")


def _group(buffer: bytearray, start: int, end: int, logged_at: range) -> _Group:
    """The records in ``buffer[start:end]`` (comma-separated) as one JSON array."""
    with memoryview(buffer) as view:
        return _Group(b"".join((b"[", view[start:end], b"]")), len(logged_at), logged_at)


class Logbook:
    """Buffers records and publishes them in batches every ``interval`` seconds or ``batch_size`` records.

    A record is encoded when logged, into its model's one growing buffer: a request leaves no object behind,
    neither its parsed inputs (holding hundreds of requests' dicts until the flush cost more than encoding each
    at once) nor a bytes object of its own. A batch whose event would exceed ``max_event_bytes``
    is split until every event fits; a prediction record too large to fit even alone is kept with its inputs
    replaced by a marker (``truncated``), and one that does not fit even so is dropped and counted.

    Events Kafka does not take go to the ``spill`` (a local file in production) and are replayed from
    there, oldest first, before anything newer is published; while the spill holds events, new ones
    are appended behind them, so the order in which records were logged is the order Kafka gets them.
    """

    def __init__(
        self,
        publisher: Publisher,
        *,
        spill: Spill | None = None,
        batch_size: int = 500,
        interval: float = 0.5,
        capacity: int = 200_000,
        max_event_bytes: int = 900_000,
        retry_backoff: Backoff = Backoff(initial=1.0, maximum=10.0),
        publish_timeout: float = 5.0,
        stop_grace: float = 5.0,
    ) -> None:
        self._publisher = publisher
        self._spill: Spill = spill if spill is not None else MemorySpill()
        self._batch_size = batch_size
        self._interval = interval
        self._capacity = capacity
        self._max_event_bytes = max_event_bytes
        self._backoff = retry_backoff
        self._publish_timeout = publish_timeout
        self._stop_grace = stop_grace
        self._predictions: dict[tuple[str, int], _Pending] = {}
        self._feedback: dict[str, _Pending] = {}
        self._bare_sizes: dict[tuple[str, str, int | None], int] = {}
        self._size = 0
        PENDING.set_function(lambda: self._size)
        self._full = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        SPILL_BYTES.set(self._spill.size)

    def log_predictions(self, model: str, version: int, records: Sequence[PredictionRecord]) -> None:
        self.log_prediction_fields(model, version, [record.__dict__ for record in records])

    def log_prediction_fields(
        self,
        model: str,
        version: int,
        records: list[dict[str, Any]],
        contexts: Sequence[SpanContext] | None = None,
    ) -> None:
        """Log predictions given as their records' fields (``prediction_fields``): serving's way, every request.

        ``contexts``: the span of each record's request (their event links to those recorded); by default the
        current span, for all of them."""
        pending = self._predictions.get((model, version))
        if pending is None:
            empty = PredictionsLogged(model=model, version=version, records=[])
            pending = self._predictions[(model, version)] = self._pending(empty, model, version)
        self._add(pending, records, contexts)

    def log_feedback(self, model: str, records: Sequence[FeedbackRecord]) -> None:
        pending = self._feedback.get(model)
        if pending is None:
            pending = self._feedback[model] = self._pending(FeedbackReceived(model=model, records=[]), model, None)
        self._add(pending, [record.__dict__ for record in records])

    def _pending(self, empty: PredictionsLogged | FeedbackReceived, subject: str, version: int | None) -> _Pending:
        key = (TOPIC_OF[type(empty)], subject, version)
        bare = self._bare_sizes.get(key)
        if bare is None:
            bare = self._bare_sizes[key] = _bare_size(empty, subject)
        return _Pending(empty, subject, bare)

    def _add(
        self, pending: _Pending, records: list[dict[str, Any]], contexts: Sequence[SpanContext] | None = None
    ) -> None:
        """Encode records from their fields (their JSON as pydantic dumps it, the timestamp as pydantic writes one)
        and keep them until the next flush; one too large for an event of its own is truncated or dropped."""
        if contexts is None:
            contexts = [current_span_context()] * len(records)
        room = self._capacity - self._size
        if room < len(records):
            room = max(room, 0)
            DROPPED.inc(len(records) - room)
            log.error("log buffer full: dropping %d records (Kafka unreachable?)", len(records) - room)
            records, contexts = records[:room], contexts[:room]
        largest = self._max_event_bytes - pending.bare  # a record alone in its event ("[]" is in bare)
        buffer, ends, links = pending.records, pending.ends, pending.links
        first = len(ends)
        for fields, context in zip(records, contexts, strict=True):
            start = len(buffer)
            json_record_into(fields, buffer)
            size = len(buffer) - start
            if size > largest:
                del buffer[start:]
                cut = self._truncated(pending, fields, size, largest)
                if cut is None:
                    continue
                buffer += cut
            if context.trace_flags.sampled:  # a link to a span nobody recorded would lead nowhere
                links.append((len(ends), context))
            ends.append(len(buffer))
            buffer.append(COMMA)
        self._size += len(ends) - first
        if self._size >= self._batch_size:
            self._full.set()

    async def start(self) -> None:
        """Start publishing in the background (first what a previous run left in the spill)."""
        self._task = asyncio.create_task(self._run(), name="prediction-logbook")

    async def stop(self) -> None:
        """Publish what is buffered, then stop; what Kafka does not take within the grace period is spilled."""
        self._stopping.set()
        self._full.set()
        if self._task:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._stop_grace)
            except TimeoutError:
                # Stuck on an unreachable broker: cancelling spills the batch in flight (see flush).
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        try:
            await asyncio.wait_for(self.flush(), self._stop_grace)
        except Exception as exc:  # a timeout included: what was taken is in the spill by now
            log.warning("prediction log not fully published at stop (%r); the spill keeps the rest", exc)

    async def flush(self) -> None:
        """Publish the spill's backlog, then everything buffered; what Kafka does not take is spilled."""
        pendings = [*self._predictions.values(), *self._feedback.values()]
        self._predictions, self._feedback, self._size = {}, {}, 0
        batches = [batch for pending in pendings for batch in self._batches(pending)]
        if not self._spill.empty:
            self._to_spill(batches)  # behind the backlog, so the order holds
            await self._replay()
            return
        for index, batch in enumerate(batches):
            try:
                await self._publish(batch.event)
            except BaseException:  # cancellation too (a stop that could not wait): nothing taken is lost
                self._to_spill(batches[index:])
                raise
            PUBLISHED.inc(batch.records)

    async def _replay(self) -> None:
        """Publish the spill's events, oldest first; stops at the first failure (the rest stays spilled)."""
        while (head := self._spill.head()) is not None:
            event, records = head
            await self._publish(event)
            self._spill.pop()
            PUBLISHED.inc(records)
            REPLAYED.inc(records)
            SPILL_BYTES.set(self._spill.size)

    async def _publish(self, event: Envelope) -> None:
        # The producer itself waits for an unreachable broker for its whole request timeout (40 s): give up
        # sooner and spill. A send given up on may still reach Kafka later: a duplicate, which consumers absorb.
        await asyncio.wait_for(self._publisher.publish(event), self._publish_timeout)

    def _to_spill(self, batches: Sequence[_Batch]) -> None:
        if not batches:
            return
        kept = self._spill.append([(batch.event, batch.records) for batch in batches])
        SPILLED.inc(sum(batch.records for batch in batches[:kept]))
        SPILL_BYTES.set(self._spill.size)
        lost = sum(batch.records for batch in batches[kept:])
        if lost:
            DROPPED.inc(lost)
            log.error("prediction log spill full (%d bytes): dropping %d records", self._spill.size, lost)

    def _batches(self, pending: _Pending) -> list[_Batch]:
        """``pending``'s records as events of at most ``batch_size`` records and ``max_event_bytes`` bytes, in order:
        an event's size is its size without records (``bare``), plus theirs and a comma between two."""
        groups: list[_Group] = []
        buffer, ends = pending.records, pending.ends
        first, start, size = 0, 0, pending.bare  # the group's first record, where it starts, the event's size
        begin = 0  # where the record at hand starts
        for index, end in enumerate(ends):
            grown = size + (end - begin) + (1 if index > first else 0)
            if index > first and (grown > self._max_event_bytes or index - first == self._batch_size):
                groups.append(_group(buffer, start, begin - 1, range(first, index)))
                first, start, grown = index, begin, pending.bare + (end - begin)
            size, begin = grown, end + 1
        if ends:
            groups.append(_group(buffer, start, ends[-1], range(first, len(ends))))
        head = pending.empty.model_dump(mode="json")
        topic = TOPIC_OF[type(pending.empty)]
        return [self._event(topic, head, pending.subject, group, pending.links) for group in groups]

    @staticmethod
    def _event(
        topic: str, head: dict[str, Any], subject: str, group: _Group, links: list[tuple[int, SpanContext]]
    ) -> _Batch:
        """One event of ``group``'s records, its trace that of a ``create`` span linked to each of their requests."""
        data = {**head, "records": msgspec.Raw(group.array)}
        event = event_of_data(topic, data, source=SOURCE, subject=subject)
        linked = [context for index, context in links if index in group.logged_at]
        traced = event.with_trace(*create_span_headers(topic, linked, records=group.records))
        return _Batch(traced, group.records)

    def _truncated(self, pending: _Pending, fields: dict[str, Any], size: int, largest: int) -> bytes | None:
        """A record of ``size`` bytes, too large for one event on its own: its inputs give way to a marker.

        The prediction, its id and its route are kept, so the answer stays traceable and feedback still joins it;
        a record that does not fit even so (a label or prediction that large) is dropped and counted.
        """
        OVERSIZED.inc()
        topic = TOPIC_OF[type(pending.empty)]
        prediction = isinstance(pending.empty, PredictionsLogged)
        if prediction:
            log.warning(
                "truncating the inputs of a prediction record of %s (request %s): %d bytes encoded, over the "
                "%d an event of log_max_event_bytes=%d has room for",
                pending.subject,
                fields["request_id"],
                size,
                largest,
                self._max_event_bytes,
            )
            marker = json_record({**fields, "inputs": {TRUNCATED: size}, "truncated": True})
            if len(marker) <= largest:
                return marker
            size = len(marker)
        DROPPED.inc()
        log.error(
            "dropping a %s record of %s (request %s): %d bytes encoded%s, over the %d an event of "
            "log_max_event_bytes=%d has room for",
            topic,
            pending.subject,
            fields["request_id"],
            size,
            " even truncated" if prediction else "",
            largest,
            self._max_event_bytes,
        )
        return None

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            if not self._size and self._spill.empty:
                continue
            try:
                await self.flush()
                failures = 0
            except Exception as exc:
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("publishing the prediction log failed (%r); retrying in %.1fs", exc, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
