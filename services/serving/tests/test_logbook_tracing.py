"""The prediction log's events carry a trace linked to every request whose records they hold."""

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from prometheus_client import REGISTRY

from mloop_common.artifacts import ArtifactStore
from mloop_common.events import Envelope, FeedbackRecord, PredictionRecord, PredictionsLogged
from mloop_common.telemetry import tracer
from mloop_common.testing import recorded_spans
from mloop_serving.batching import MicroBatcher
from mloop_serving.logbook import Logbook

from .fakes import classifier_file, serving


@pytest.fixture(scope="module")
def spans() -> Iterator[InMemorySpanExporter]:
    with recorded_spans() as memory:
        yield memory


class Publisher:
    def __init__(self) -> None:
        self.events: list[Envelope] = []

    async def publish(self, event: Envelope) -> None:
        self.events.append(event)


def prediction() -> PredictionRecord:
    return PredictionRecord(request_id=uuid.uuid4().hex, timestamp=datetime.now(UTC), inputs={"x": 1.0}, prediction=1)


async def test_a_batch_of_many_requests_links_to_each_and_its_event_carries_the_batch_trace(
    spans: InMemorySpanExporter,
) -> None:
    spans.clear()
    publisher = Publisher()
    logbook = Logbook(publisher)
    requests = []
    for records in ([prediction(), prediction()], [prediction()]):
        with tracer().start_as_current_span("POST /v1/models/churn:predict") as request:
            logbook.log_predictions("churn", 1, records)
            requests.append(request.get_span_context())
    with tracer().start_as_current_span("POST /v1/feedback") as labelled:
        logbook.log_feedback("churn", [FeedbackRecord(request_id="r1", label=1, timestamp=datetime.now(UTC))])
    logbook.log_predictions("churn", 1, [prediction()])  # outside any request: nothing to link
    await logbook.flush()

    by_type = {event.type: event for event in publisher.events}
    created = {span.name: span for span in spans.get_finished_spans() if span.name.startswith("create ")}
    logged = created["create predictions.logged"]
    assert [link.context for link in logged.links] == requests  # once per request, not per record
    assert dict(logged.attributes or {})["mloop.records"] == 4
    traceparent = by_type["predictions.logged"].traceparent
    assert traceparent is not None and traceparent.startswith(
        f"00-{logged.context.trace_id:032x}-{logged.context.span_id:016x}-"
    )
    feedback = created["create feedback.received"]
    assert [link.context for link in feedback.links] == [labelled.get_span_context()]
    assert feedback.context.trace_id != logged.context.trace_id


async def test_a_request_whose_span_is_not_recorded_is_not_linked(spans: InMemorySpanExporter) -> None:
    spans.clear()
    publisher = Publisher()
    logbook = Logbook(publisher)
    unrecorded = SpanContext(trace_id=0x1F, span_id=0x2F, is_remote=True, trace_flags=TraceFlags(0))
    with trace.use_span(NonRecordingSpan(unrecorded)):
        logbook.log_predictions("churn", 1, [prediction()])
    with tracer().start_as_current_span("POST /v1/models/churn:predict") as request:
        logbook.log_predictions("churn", 1, [prediction()])
    await logbook.flush()

    [created] = [span for span in spans.get_finished_spans() if span.name == "create predictions.logged"]
    assert [link.context for link in created.links] == [request.get_span_context()]
    assert dict(created.attributes or {})["mloop.records"] == 2


async def test_requests_logged_by_one_micro_batch_are_each_linked_to_their_own_span(
    spans: InMemorySpanExporter, tmp_path
) -> None:
    spans.clear()
    svc = serving(ArtifactStore(tmp_path))
    await svc.register(classifier_file(seed=1))
    await svc.loader.sync_all()
    svc.scorer.batch_with(MicroBatcher(max_wait=0.01))
    unrecorded = SpanContext(trace_id=0x1F, span_id=0x2F, is_remote=True, trace_flags=TraceFlags(0))

    async def request(index: int) -> SpanContext | None:
        row = {"usage": float(index), "calls": 1.0}
        if index == 3:  # a caller's trace that is not recorded: nothing to link to
            with trace.use_span(NonRecordingSpan(unrecorded)):
                await svc.scorer.score("churn", [row])
            return None
        with tracer().start_as_current_span(f"request {index}") as span:
            await svc.scorer.score("churn", [row, row] if index % 2 else [row])
            return span.get_span_context()

    batches_before = REGISTRY.get_sample_value("mloop_serving_batch_requests_count", {"model": "churn"}) or 0
    contexts = await asyncio.gather(*(request(i) for i in range(8)))
    await svc.logbook.flush()

    batches = REGISTRY.get_sample_value("mloop_serving_batch_requests_count", {"model": "churn"}) - batches_before
    assert batches < 8  # some were logged together
    [logged] = svc.publisher.payloads(PredictionsLogged)
    assert len(logged.records) == 11
    [created] = [span for span in spans.get_finished_spans() if span.name == "create predictions.logged"]
    assert [link.context for link in created.links] == [c for c in contexts if c is not None]


async def test_a_record_dropped_for_its_size_shifts_no_link_onto_its_neighbour(spans: InMemorySpanExporter) -> None:
    spans.clear()
    publisher = Publisher()
    logbook = Logbook(publisher, max_event_bytes=2_000)
    fields = [record.__dict__ for record in (prediction(), prediction(), prediction())]
    fields[1] = {**fields[1], "prediction": "x" * 5_000}  # too large even with its inputs truncated: dropped
    with tracer().start_as_current_span("first") as first, tracer().start_as_current_span("third") as third:
        logbook.log_prediction_fields(
            "churn", 1, fields, [first.get_span_context(), first.get_span_context(), third.get_span_context()]
        )
    await logbook.flush()

    [created] = [span for span in spans.get_finished_spans() if span.name == "create predictions.logged"]
    assert [link.context for link in created.links] == [first.get_span_context(), third.get_span_context()]
    assert dict(created.attributes or {})["mloop.records"] == 2
