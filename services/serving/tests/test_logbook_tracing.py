"""The prediction log's events carry a trace linked to every request whose records they hold."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mloop_common.events import Envelope, FeedbackRecord, PredictionRecord
from mloop_common.telemetry import tracer
from mloop_common.testing import recorded_spans
from mloop_serving.logbook import Logbook


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
