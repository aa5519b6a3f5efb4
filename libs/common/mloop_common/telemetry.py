"""Tracing: one trace across every hop, carried in Kafka headers as W3C traceparent."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind

from mloop_common.events import Envelope

_TRACER_NAME = "mloop"


def setup_tracing(service: str) -> TracerProvider:
    """Install the process-wide tracer provider once; export over OTLP when configured."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=service_resource(service))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def service_resource(service: str) -> Resource:
    """Named by ``OTEL_SERVICE_NAME`` (or service.name in ``OTEL_RESOURCE_ATTRIBUTES``), else ``mloop-<service>``."""
    from_environment = Resource.create()
    if not str(from_environment.attributes.get("service.name", "")).startswith("unknown_service"):
        return from_environment
    return from_environment.merge(Resource({"service.name": f"mloop-{service}"}))


def tracer() -> trace.Tracer:
    return trace.get_tracer(_TRACER_NAME)


def current_trace_headers() -> tuple[str | None, str | None]:
    """The active span's ``traceparent`` and ``tracestate``, for an outgoing message."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


@contextmanager
def consumer_span(event: Envelope, consumer: str) -> Iterator[Span]:
    """A process span around one handler, parented by the trace the event carried."""
    carrier = {k: v for k, v in (("traceparent", event.traceparent), ("tracestate", event.tracestate)) if v}
    with tracer().start_as_current_span(
        f"{event.type} process",
        context=extract(carrier),
        kind=SpanKind.CONSUMER,
        attributes={
            "messaging.system": "kafka",
            "messaging.destination.name": event.type,
            "messaging.operation.type": "process",
            "messaging.consumer.group.name": consumer,
            "messaging.message.id": event.id,
            "cloudevents.event_id": event.id,
            "cloudevents.event_subject": event.subject,
            "mloop.correlation_id": event.correlationid,
        },
    ) as span:
        yield span
