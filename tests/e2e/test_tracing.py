"""One trace per chain, assembled from the spans the six service processes export over OTLP/HTTP.

The test runs the receiver (a small HTTP server decoding ``ExportTraceServiceRequest``), starts a stack
whose ``OTEL_EXPORTER_OTLP_ENDPOINT`` points at it, publishes a dataset under a trace of its own and lets
the loop reach production; then a prediction under another trace reaches drift through the prediction log.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import pytest_asyncio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.conftest import REPO, eventually, running
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT = 150
PRODUCER, CONSUMER, SERVER = 4, 5, 2  # opentelemetry.proto.trace.v1.Span.SpanKind


@dataclass(frozen=True)
class Received:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]] = field(default_factory=list)


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP traces endpoint (protobuf), keeping every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Received] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                receiver.add(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def add(self, request: ExportTraceServiceRequest) -> None:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        Received(
                            service=str(resource.get("service.name")),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        )
                    )
        with self.lock:
            self.spans.extend(found)

    def trace(self, trace_id: str) -> list[Received]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def named(self, name: str) -> list[Received]:
        with self.lock:
            return [s for s in self.spans if s.name == name]


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, postgres: str, receiver: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("traced"), repo=REPO
    )
    services.env.pop("MLOOP_LOG_FORMAT", None)  # the default: JSON lines
    services.env.update({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "200"})
    with running(services):
        yield services


def dataset(rows: int = 400) -> bytes:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 2))
    label = np.where(x[:, 0] + 0.5 * x[:, 1] > 0, "yes", "no")
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": label}).to_csv(index=False).encode()


def new_traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def hop(spans: list[Received], topic: str, consumer: str) -> tuple[Received, Received] | None:
    """The ``send`` span of ``topic`` and the ``process`` span of ``consumer`` that is its child, if exported yet."""
    sends = {s.span_id: s for s in spans if s.name == f"send {topic}" and s.kind == PRODUCER}
    for process in spans:
        if process.name == f"process {topic}" and process.service == consumer and process.parent_span_id in sends:
            return sends[process.parent_span_id], process
    return None


@dataclass
class Chain:
    model: str
    trace_id: str
    spans: list[Received]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def chain(stack: ServiceStack, clients: dict[str, httpx.AsyncClient], receiver: Receiver) -> Chain:
    name = f"traced-{uuid.uuid4().hex[:6]}"
    spec = {
        "name": name,
        "dataset": name,
        "task": "classification",
        "target": "label",
        "features": ["x1", "x2"],
        "estimators": [{"class": "LogisticRegression", "params": {"C": [1.0]}}],
        "search": {"strategy": "grid", "cv": 2},
        "metric": "accuracy",
    }
    assert (await clients["registry"].post("/v1/models", json=spec)).status_code == 201
    trace_id, traceparent = new_traceparent()
    published = await clients["ingest"].post(
        f"/v1/datasets/{name}/versions",
        data={"target": "label"},
        files={"file": (f"{name}.csv", dataset(), "text/csv")},
        headers={"traceparent": traceparent},
    )
    assert published.status_code == 201, published.text

    def served() -> list[Received] | None:
        spans = receiver.trace(trace_id)
        return spans if hop(spans, "model.promoted", "mloop-serving") else None

    await eventually(served, timeout=TIMEOUT, interval=0.5)
    await asyncio.sleep(1.0)  # the rest of the chain's spans (ended just before) leave with the next batch
    return Chain(name, trace_id, receiver.trace(trace_id))


async def test_one_trace_runs_from_the_upload_through_every_service_to_serving(chain: Chain) -> None:
    services = {span.service for span in chain.spans}
    assert services >= {"mloop-ingest", "mloop-trainer", "mloop-validator", "mloop-registry", "mloop-serving"}
    upload = [s for s in chain.spans if s.service == "mloop-ingest" and s.kind == SERVER]
    assert upload, "no server span of the upload in the trace"
    for topic, consumer in (
        ("data.published", "mloop-trainer"),
        ("model.trained", "mloop-validator"),
        ("model.promoted", "mloop-serving"),
    ):
        found = hop(chain.spans, topic, consumer)
        assert found is not None, f"no send → process hop for {topic} in the trace"
        send, process = found
        assert process.trace_id == send.trace_id == chain.trace_id
        assert (
            send.attributes.items()
            >= {
                "messaging.system": "kafka",
                "messaging.operation.name": "send",
                "messaging.destination.name": topic,
                "messaging.kafka.message.key": chain.model,
            }.items()
        )
        assert (
            process.attributes.items()
            >= {
                "messaging.system": "kafka",
                "messaging.operation.name": "process",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.destination.partition.id": send.attributes["messaging.destination.partition.id"],
                "messaging.kafka.offset": send.attributes["messaging.kafka.offset"],
                "messaging.kafka.message.key": chain.model,
            }.items()
        )
        assert str(process.attributes["messaging.consumer.group.name"]).startswith(consumer)


async def test_the_validator_calls_the_registry_within_the_trace(chain: Chain) -> None:
    registry_calls = [s for s in chain.spans if s.service == "mloop-registry" and s.kind == SERVER]
    by_id = {s.span_id: s for s in chain.spans}
    parents = {by_id[s.parent_span_id].service for s in registry_calls if s.parent_span_id in by_id}
    assert "mloop-validator" in parents  # through the instrumented httpx client


async def test_service_logs_are_json_lines_that_name_the_trace(chain: Chain, stack: ServiceStack) -> None:
    lines = [line for line in stack.log_tail("trainer", 1_000_000).splitlines() if line.strip()]
    documents = [json.loads(line) for line in lines]  # every line is JSON
    assert all({"time", "level", "logger", "message"} <= d.keys() for d in documents)
    assert any(d.get("trace_id") == chain.trace_id and d.get("span_id") for d in documents)


async def test_a_prediction_reaches_drift_through_a_batch_linked_to_its_request(
    chain: Chain, clients: dict[str, httpx.AsyncClient], receiver: Receiver
) -> None:
    trace_id, traceparent = new_traceparent()
    answered = await clients["serving"].post(
        f"/v1/models/{chain.model}:predict",
        json={"instances": [{"x1": 0.3, "x2": -0.1}]},
        headers={"traceparent": traceparent},
    )
    assert answered.status_code == 200, answered.text

    def batch_processed_by_drift() -> tuple[Received, Received] | None:
        linked = [s for s in receiver.named("create predictions.logged") if any(t == trace_id for t, _ in s.links)]
        for create in linked:
            found = hop(receiver.trace(create.trace_id), "predictions.logged", "mloop-drift")
            if found and found[0].parent_span_id == create.span_id:
                return create, found[1]
        return None

    create, process = await eventually(batch_processed_by_drift, timeout=60, interval=0.5)
    assert create.kind == PRODUCER and process.kind == CONSUMER
    request = [s for s in receiver.trace(trace_id) if s.service == "mloop-serving" and s.kind == SERVER]
    assert {span_id for t, span_id in create.links if t == trace_id} <= {s.span_id for s in request}


async def test_a_malformed_traceparent_starts_a_new_trace_and_the_request_succeeds(
    chain: Chain, clients: dict[str, httpx.AsyncClient]
) -> None:
    for malformed in ("garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-zz-yy-01"):
        answered = await clients["serving"].post(
            f"/v1/models/{chain.model}:predict",
            json={"instances": [{"x1": 0.3, "x2": -0.1}]},
            headers={"traceparent": malformed},
        )
        assert answered.status_code == 200, answered.text
