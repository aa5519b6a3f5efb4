"""Tracing and logs: one trace across every hop, carried in Kafka headers as W3C traceparent.

The shape of a trace (docs/operations.md, "Traces and logs"): an HTTP server span (or a consumer's
``process`` span) stages an event; the producer's ``send`` span (PRODUCER) is a child of the context the
event carries and replaces it on the wire; each consumer's ``process`` span (CONSUMER) is a child of that
``send`` span. A message that carries many requests' records (serving's prediction log) gets a ``create``
span linked to each request's span. A malformed ``traceparent`` (HTTP or Kafka) starts a new trace.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace import SpanContext as SpanContext  # re-exported: serving keeps contexts to link later

from mloop_common.events import Envelope

_TRACER_NAME = "mloop"
Header = tuple[str, bytes]
# What a traceparent header weighs, for sizing a message before its span exists (version-traceid-spanid-flags).
TRACEPARENT_PLACEHOLDER = "00-" + "0" * 32 + "-" + "0" * 16 + "-01"


def setup_tracing(service: str) -> TracerProvider:
    """Install the process-wide tracer provider (``tracer_provider``) once, and instrument httpx."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = tracer_provider(service)
    trace.set_tracer_provider(provider)
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    instrumentor = HTTPXClientInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()  # every client, those made before too: calls to other services carry the trace
    return provider


def tracer_provider(service: str) -> TracerProvider:
    """A tracer provider for ``service`` with the exporters the environment asks for (not installed globally).

    The SDK honours ``OTEL_SDK_DISABLED``, ``OTEL_TRACES_SAMPLER(_ARG)``, ``OTEL_BSP_*`` and span limits;
    spans are exported over OTLP when ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` is set (or
    ``OTEL_TRACES_EXPORTER`` names ``otlp``), over HTTP or gRPC as ``otlp_protocol`` says, to stdout with
    ``console``, nowhere with ``none``. A protocol it cannot speak is a ValueError, so the service does not start.
    """
    protocol = otlp_protocol(os.environ)  # checked even when not exporting: a typo should not wait for the endpoint
    exporters = trace_exporters(os.environ)
    provider = TracerProvider(resource=service_resource(service), sampler=default_sampler(exporters, os.environ))
    for name in exporters:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(otlp_span_exporter(protocol)))
        elif name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    return provider


# The OTLP transports the services can use; the specification's third, http/json, has no Python exporter.
OTLP_PROTOCOLS = ("http/protobuf", "grpc")


def otlp_protocol(environ: Mapping[str, str]) -> str:
    """``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, else ``OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``."""
    chosen = "http/protobuf"
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"):  # the later one wins
        value = environ.get(name, "").strip()
        if not value:
            continue
        if value.lower() not in OTLP_PROTOCOLS:
            raise ValueError(f"{name}={value!r}: traces are exported over OTLP with one of {', '.join(OTLP_PROTOCOLS)}")
        chosen = value.lower()
    return chosen


def otlp_span_exporter(protocol: str) -> SpanExporter:
    """The OTLP exporter for ``protocol``; it reads its endpoint, headers, timeout and TLS from the environment."""
    if protocol == "grpc":
        # Imported only when chosen: grpcio is a heavy import most deployments (OTLP/HTTP) never need.
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

        return GrpcSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter

    return HttpSpanExporter()


def default_sampler(exporters: Sequence[str], environ: Mapping[str, str]) -> Sampler | None:
    """With no exporter, spans are not recorded (``parentbased_always_off``): nobody would see them, and recording
    one cost serving some 30 µs a request. Their ids still exist, so logs and the events' trace headers carry them,
    and a caller's sampled trace is still recorded. None: the SDK's own choice (``OTEL_TRACES_SAMPLER``, else
    ``parentbased_always_on``)."""
    if exporters or environ.get("OTEL_TRACES_SAMPLER"):
        return None
    return ParentBased(ALWAYS_OFF)


def trace_exporters(environ: Mapping[str, str]) -> list[str]:
    """Exporters to install: ``OTEL_TRACES_EXPORTER`` if set, else ``otlp`` only when an endpoint is configured."""
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if named:
        return [n.strip() for n in named.split(",") if n.strip() in ("otlp", "console")]
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return ["otlp"] if endpoint else []


def service_resource(service: str) -> Resource:
    """Named by ``OTEL_SERVICE_NAME`` (or service.name in ``OTEL_RESOURCE_ATTRIBUTES``), else ``mloop-<service>``."""
    from_environment = Resource.create()
    if not str(from_environment.attributes.get("service.name", "")).startswith("unknown_service"):
        return from_environment
    return from_environment.merge(Resource({"service.name": f"mloop-{service}"}))


# A proxy until setup_tracing installs the provider, then that provider's tracer (looked up once).
_TRACER = trace.get_tracer(_TRACER_NAME)


def tracer() -> trace.Tracer:
    return _TRACER


def current_trace_headers() -> tuple[str | None, str | None]:
    """The active span's ``traceparent`` and ``tracestate``, for an outgoing message."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get("traceparent"), carrier.get("tracestate")


def _context_of(traceparent: str | None, tracestate: str | None) -> Context:
    """The remote parent a message carries; an empty context (a new trace) when it carries none or a malformed one."""
    carrier = {k: v for k, v in (("traceparent", traceparent), ("tracestate", tracestate)) if v}
    return extract(carrier)


@contextmanager
def continued_trace(traceparent: str | None, tracestate: str | None = None) -> Iterator[None]:
    """Make the span a ``traceparent`` names the current one while the block runs, so log lines carry its trace
    id: for work handed to another process (the trainer's workers) that starts no spans of its own."""
    token = otel_context.attach(_context_of(traceparent, tracestate))
    try:
        yield
    finally:
        otel_context.detach(token)


def _headers_of(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    inject(carrier, context=trace.set_span_in_context(span))
    return carrier


# --- producer side ---------------------------------------------------------------------------


def start_send_span(topic: str, key: bytes, headers: Sequence[Header], *, client_id: str) -> tuple[Span, list[Header]]:
    """A PRODUCER ``send`` span for one record, child of the trace its headers carry (an outbox row keeps the
    context it was staged in), and the headers with its ``traceparent`` instead, so consumers become its children.

    End it with ``end_send_span`` once the broker answered.
    """
    found = dict(headers)
    traceparent, tracestate = (_decoded(found.get(name)) for name in ("traceparent", "tracestate"))
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.operation.name": "send",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.client.id": client_id,
        "messaging.kafka.message.key": key.decode(errors="replace"),
    }
    event_id = _decoded(found.get("ce_id"))
    if event_id:
        attributes["messaging.message.id"] = event_id
        attributes["cloudevents.event_id"] = event_id
    span = tracer().start_span(
        f"send {topic}",
        context=_context_of(traceparent, tracestate),
        kind=SpanKind.PRODUCER,
        attributes=attributes,
    )
    carried = _headers_of(span)
    if "traceparent" not in carried:  # tracing disabled: the record keeps the context it came with
        return span, list(headers)
    rest = [(name, raw) for name, raw in headers if name not in ("traceparent", "tracestate")]
    return span, rest + [(name, value.encode()) for name, value in carried.items()]


def end_send_span(
    span: Span, *, partition: int | None = None, offset: int | None = None, error: BaseException | None = None
) -> None:
    if partition is not None:
        span.set_attribute("messaging.destination.partition.id", str(partition))
    if offset is not None:
        span.set_attribute("messaging.kafka.offset", offset)
    if error is not None:
        span.set_attribute("error.type", type(error).__name__)
        span.set_status(Status(StatusCode.ERROR, str(error)[:500]))
    span.end()


def create_span_headers(topic: str, links: Iterable[SpanContext], *, records: int) -> tuple[str | None, str | None]:
    """Trace headers for one message that carries many requests' records: a PRODUCER ``create`` span (its
    creation context, a new trace) linked to each request's span; (None, None) when tracing is off."""
    unique = {(c.trace_id, c.span_id): c for c in links if c.is_valid}
    span = tracer().start_span(
        f"create {topic}",
        context=Context(),  # a batch belongs to no one request: its own trace, linked to all of them
        kind=SpanKind.PRODUCER,
        links=[Link(c) for c in unique.values()],
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.name": "create",
            "messaging.operation.type": "create",
            "messaging.destination.name": topic,
            "mloop.records": records,
        },
    )
    span.end()
    carried = _headers_of(span)
    return carried.get("traceparent"), carried.get("tracestate")


def current_span_context() -> SpanContext:
    """The active span's context (invalid outside any span), for a later link to this request."""
    return trace.get_current_span().get_span_context()


def _decoded(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.decode(errors="replace")


# --- consumer side ---------------------------------------------------------------------------


@contextmanager
def consumer_span(
    event: Envelope,
    consumer: str,
    *,
    partition: int | None = None,
    offset: int | None = None,
    key: bytes | None = None,
) -> Iterator[Span]:
    """A CONSUMER ``process`` span around one handler, child of the ``send`` span whose context the event carries."""
    attributes: dict[str, str | int] = {
        "messaging.system": "kafka",
        "messaging.destination.name": event.type,
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.consumer.group.name": consumer,
        "messaging.message.id": event.id,
        "cloudevents.event_id": event.id,
        "cloudevents.event_type": event.type,
        "cloudevents.event_subject": event.subject,
        "mloop.correlation_id": event.correlationid,
    }
    if partition is not None:
        attributes["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    if key is not None:
        attributes["messaging.kafka.message.key"] = key.decode(errors="replace")
    with tracer().start_as_current_span(
        f"process {event.type}",
        context=_context_of(event.traceparent, event.tracestate),
        kind=SpanKind.CONSUMER,
        attributes=attributes,
    ) as span:
        yield span


# --- logs ------------------------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the active trace_id and span_id (if any)."""

    def __init__(self, service: str | None = None) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            document["service"] = self.service
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            document["trace_id"] = format(context.trace_id, "032x")
            document["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, default=str)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_service_name(service: str) -> str:
    """The ``service`` field of a service's JSON log lines: its resource's ``service.name``."""
    return str(service_resource(service).attributes["service.name"])


def configure_logging(
    service: str | None = None,
    environ: dict[str, str] | os._Environ[str] = os.environ,
    *,
    service_name: str | None = None,
) -> None:
    """Root logging to stderr: JSON lines by default, ``MLOOP_LOG_FORMAT=text`` for plain lines; ``MLOOP_LOG_LEVEL``.

    ``service_name``: the ``service`` field already resolved (``log_service_name``), for a child process that
    must not pay for reading the resource again (its detection holds on to some 16 MB of heap).
    """
    log_format = environ.get("MLOOP_LOG_FORMAT", "json").strip().lower()
    if log_format not in ("json", "text"):
        raise ValueError(f"MLOOP_LOG_FORMAT must be json or text, not {log_format!r}")
    handler = logging.StreamHandler()
    name = service_name or (log_service_name(service) if service else None)
    handler.setFormatter(JsonFormatter(name) if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(environ.get("MLOOP_LOG_LEVEL", "INFO").upper())
