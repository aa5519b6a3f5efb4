import contextlib
import gzip
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import grpc  # type: ignore[import-untyped]
import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mloop_common.auth import Permission
from mloop_common.events import Envelope, to_record
from mloop_common.http import service_app
from mloop_common.settings import ServiceSettings
from mloop_common.telemetry import (
    JsonFormatter,
    configure_logging,
    consumer_span,
    create_span_headers,
    end_send_span,
    service_resource,
    start_send_span,
    trace_exporters,
    tracer,
    tracer_provider,
)


def test_the_service_is_named_after_mloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert service_resource("drift").attributes["service.name"] == "mloop-drift"


def test_otel_service_name_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "drift-eu-1")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod")
    resource = service_resource("drift")
    assert resource.attributes["service.name"] == "drift-eu-1"
    assert resource.attributes["deployment.environment"] == "prod"


def test_resource_attributes_may_name_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=scoring,team=ml")
    assert service_resource("serving").attributes["service.name"] == "scoring"


# --- spans: producer, consumer, batches, malformed context ------------------------------------

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MALFORMED = ["nonsense", "00-xyz-b7ad6b7169203331-01", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "ff-" + "1" * 32]


def event(traceparent: str | None = None) -> Envelope:
    return Envelope(type="data.published", source="test", subject="churn", data={}, traceparent=traceparent)


def header(headers: list[tuple[str, bytes]], name: str) -> str | None:
    found = dict(headers).get(name)
    return found.decode() if found is not None else None


def wire(span: ReadableSpan) -> str:
    """The traceparent of ``span`` without its flags (the SDK may set the random-trace-id flag)."""
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-"


def only(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == name]
    return span


def test_a_send_span_is_a_child_of_the_context_the_record_carries_and_replaces_it_on_the_wire(
    spans: InMemorySpanExporter,
) -> None:
    key, _, headers = to_record(event(PARENT).with_trace(PARENT, "vendor=1"))
    span, sent = start_send_span("data.published", key, headers, client_id="mloop-ingest")
    end_send_span(span, partition=2, offset=41)

    send = only(spans, "send data.published")
    assert send.kind == SpanKind.PRODUCER
    assert send.parent is not None and format(send.parent.span_id, "016x") == "b7ad6b7169203331"
    assert format(send.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert header(sent, "traceparent")[:-2] == wire(send)
    assert header(sent, "tracestate") == "vendor=1"
    assert header(sent, "ce_id") == header(headers, "ce_id")  # the rest of the record is untouched
    assert (
        dict(send.attributes or {}).items()
        >= {
            "messaging.system": "kafka",
            "messaging.operation.name": "send",
            "messaging.operation.type": "send",
            "messaging.destination.name": "data.published",
            "messaging.destination.partition.id": "2",
            "messaging.kafka.offset": 41,
            "messaging.kafka.message.key": "churn",
            "messaging.client.id": "mloop-ingest",
        }.items()
    )


def test_a_failed_send_is_an_error_span(spans: InMemorySpanExporter) -> None:
    span, _ = start_send_span("data.published", b"k", [], client_id="c")
    end_send_span(span, error=ConnectionError("broker down"))
    failed = only(spans, "send data.published")
    assert not failed.status.is_ok and (failed.attributes or {})["error.type"] == "ConnectionError"


@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_malformed_traceparent_on_a_record_starts_a_new_trace(spans: InMemorySpanExporter, malformed: str) -> None:
    span, sent = start_send_span("data.published", b"k", [("traceparent", malformed.encode())], client_id="c")
    end_send_span(span)
    send = only(spans, "send data.published")
    assert send.parent is None
    assert header(sent, "traceparent")[:-2] == wire(send)


def test_a_process_span_is_a_child_of_the_send_span(spans: InMemorySpanExporter) -> None:
    key, _, headers = to_record(event(PARENT))
    span, sent = start_send_span("data.published", key, headers, client_id="c")
    end_send_span(span, partition=0, offset=7)
    received = event().with_trace(header(sent, "traceparent"))
    with consumer_span(received, "mloop-trainer", partition=0, offset=7, key=b"churn"):
        logging.getLogger("t").info("inside")

    send, process = only(spans, "send data.published"), only(spans, "process data.published")
    assert process.kind == SpanKind.CONSUMER
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert (
        dict(process.attributes or {}).items()
        >= {
            "messaging.system": "kafka",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": "data.published",
            "messaging.consumer.group.name": "mloop-trainer",
            "messaging.destination.partition.id": "0",
            "messaging.kafka.offset": 7,
            "messaging.kafka.message.key": "churn",
            "messaging.message.id": received.id,
        }.items()
    )


@pytest.mark.parametrize("malformed", MALFORMED)
def test_a_malformed_traceparent_on_an_event_is_handled_in_a_new_trace(
    spans: InMemorySpanExporter, malformed: str
) -> None:
    handled = []
    with consumer_span(event(malformed), "mloop-trainer") as span:
        handled.append(span.get_span_context())
    process = only(spans, "process data.published")
    assert process.parent is None and handled[0].is_valid


def test_a_batch_message_links_to_every_request_once(spans: InMemorySpanExporter) -> None:
    contexts = []
    for _ in range(3):
        with tracer().start_as_current_span("request") as request:
            contexts.append(request.get_span_context())
    traceparent, _ = create_span_headers("predictions.logged", [*contexts, contexts[0]], records=4)

    create = only(spans, "create predictions.logged")
    assert create.kind == SpanKind.PRODUCER and create.parent is None
    assert [link.context for link in create.links] == contexts
    assert traceparent is not None and traceparent[:-2] == wire(create)
    assert (create.attributes or {})["messaging.operation.type"] == "create"


# --- HTTP: a malformed traceparent never fails a request --------------------------------------

router = APIRouter()


@router.post("/predict")
async def predict() -> dict[str, str]:
    return {"trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x")}


class Settings(ServiceSettings):
    service: ClassVar[str] = "serving"
    uses_database: ClassVar[bool] = False


@contextlib.asynccontextmanager
async def nothing(settings: Settings, app: FastAPI) -> AsyncIterator[None]:
    yield None


async def test_a_request_with_a_malformed_traceparent_is_answered_in_a_new_trace(
    spans: InMemorySpanExporter,
) -> None:
    app = service_app(
        Settings(common={"auth": {"open_predict": True}}),
        bootstrap=nothing,
        router=router,
        rules={("POST", "/predict"): Permission.PREDICT},
        description="t",
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        joined = await client.post("/predict", headers={"traceparent": PARENT})
        fresh = [(await client.post("/predict", headers={"traceparent": bad})) for bad in MALFORMED]
    assert joined.status_code == 200 and joined.json()["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert [r.status_code for r in fresh] == [200] * len(MALFORMED)
    ids = {r.json()["trace_id"] for r in fresh}
    assert len(ids) == len(MALFORMED) and "0" * 32 not in ids and "0af7651916cd43dd8448eb211c80319c" not in ids


# --- logs ------------------------------------------------------------------------------------


def formatted(formatter: logging.Formatter, message: str, exc: BaseException | None = None) -> str:
    record = logging.LogRecord("mloop.x", logging.WARNING, __file__, 1, message, (), None)
    if exc is not None:
        record.exc_info = (type(exc), exc, exc.__traceback__)
    return formatter.format(record)


def test_a_log_line_is_json_with_the_active_trace_and_span(spans: InMemorySpanExporter) -> None:
    formatter = JsonFormatter("mloop-drift")
    with tracer().start_as_current_span("work") as span:
        line = json.loads(formatted(formatter, "a training job was cancelled: «ok»"))
    context = span.get_span_context()
    assert line["message"] == "a training job was cancelled: «ok»"
    assert line["level"] == "WARNING" and line["logger"] == "mloop.x" and line["service"] == "mloop-drift"
    assert line["trace_id"] == f"{context.trace_id:032x}" and line["span_id"] == f"{context.span_id:016x}"
    assert line["time"].endswith("Z")


def test_a_log_line_outside_a_span_has_no_ids_and_keeps_the_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError as exc:
        line = json.loads(formatted(JsonFormatter(), "failed", exc))
    assert "trace_id" not in line and "span_id" not in line
    assert "ValueError: boom" in line["exception"] and "\n" not in formatted(JsonFormatter(), "a\nb")


def test_log_format_is_json_by_default_text_on_request_and_nothing_else() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("drift", {})
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        configure_logging("drift", {"MLOOP_LOG_FORMAT": "text", "MLOOP_LOG_LEVEL": "debug"})
        assert not isinstance(root.handlers[0].formatter, JsonFormatter) and root.level == logging.DEBUG
        with pytest.raises(ValueError, match="MLOOP_LOG_FORMAT"):
            configure_logging("drift", {"MLOOP_LOG_FORMAT": "xml"})
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
    ],
)
def test_exporters_follow_the_otel_variables(environ: dict[str, str], expected: list[str]) -> None:
    assert trace_exporters(environ) == expected


@pytest.mark.parametrize(
    ("environ", "records_a_new_trace"),
    [
        ({}, False),  # nobody would see a span: none recorded
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_TRACES_SAMPLER": "parentbased_always_on"}, True),  # asked for: honoured
    ],
)
def test_spans_are_recorded_only_where_an_exporter_can_send_them(
    monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], records_a_new_trace: bool
) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    provider = tracer_provider("serving")
    tracer = provider.get_tracer("test")
    sampled_parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED))
        )
    )

    root = tracer.start_span("request")
    child = tracer.start_span("traced request", context=sampled_parent)

    assert root.is_recording() == records_a_new_trace
    assert root.get_span_context().is_valid  # its ids still reach logs and trace headers
    assert child.is_recording()  # a caller that traces gets its spans whatever the default
    provider.shutdown()  # the spans are left open: nothing is sent to the (absent) collector


# --- OTLP export over HTTP or gRPC --------------------------------------------------------------

Received = list[trace_service_pb2.ExportTraceServiceRequest]


@contextlib.contextmanager
def grpc_receiver() -> Iterator[tuple[int, Received]]:
    """An OTLP/gRPC trace receiver (a collector's port 4317) in this process: its port and what it received."""
    received: Received = []

    class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the service's method name
            received.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Receiver(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port, received
    finally:
        server.stop(grace=None)


@contextlib.contextmanager
def http_receiver() -> Iterator[tuple[int, Received]]:
    """An OTLP/HTTP (protobuf) trace receiver (a collector's port 4318) in this process."""
    received: Received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                received.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200 if self.path == "/v1/traces" else 404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(
    ("environ", "transport"),
    [
        ({}, "http"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, "http"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, "http"),
    ],
)
def test_spans_reach_a_collector_over_the_protocol_the_environment_names(
    no_otel_environment: pytest.MonkeyPatch, environ: dict[str, str], transport: str
) -> None:
    receiver = grpc_receiver if transport == "grpc" else http_receiver
    with receiver() as (port, received):
        no_otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        for name, value in environ.items():
            no_otel_environment.setenv(name, value)
        provider = tracer_provider("drift")
        with provider.get_tracer("test").start_as_current_span("train churn"):
            pass
        assert provider.force_flush(30_000)
        provider.shutdown()
    exported = [
        ({a.key: a.value.string_value for a in spans.resource.attributes}, span.name)
        for request in received
        for spans in request.resource_spans
        for scope in spans.scope_spans
        for span in scope.spans
    ]
    assert [(resource["service.name"], name) for resource, name in exported] == [("mloop-drift", "train churn")]


@pytest.mark.parametrize("variable", ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"])
def test_a_protocol_the_services_cannot_speak_stops_the_start_and_names_the_variable(
    no_otel_environment: pytest.MonkeyPatch, variable: str
) -> None:
    no_otel_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    no_otel_environment.setenv(variable, "http/json")
    with pytest.raises(ValueError, match=f"{variable}='http/json'"):
        tracer_provider("drift")


def test_grpc_is_imported_only_when_chosen() -> None:
    script = (
        "import sys; from mloop_common.telemetry import tracer_provider; tracer_provider('drift'); "
        "print(any(m == 'grpc' or m.startswith('grpc.') for m in sys.modules))"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    found = {}
    for protocol in ("http/protobuf", "grpc"):
        environ |= {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
        done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        found[protocol] = done.stdout.strip()
    assert found == {"http/protobuf": "False", "grpc": "True"}
