"""Every request a service answers gets one SERVER span (made by the Gate), current while its route runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mloop_common.http import create_app

PARENT_TRACE, PARENT_SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
PARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"


@asynccontextmanager
async def no_lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield


def app() -> FastAPI:
    made = create_app(service="things", lifespan=no_lifespan)

    @made.post("/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        current = trace.get_current_span().get_span_context()
        return {"trace": f"{current.trace_id:032x}", "span": f"{current.span_id:016x}"}

    @made.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    return made


async def call(method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        return await client.request(method, path, headers=headers)


def servers(spans: InMemorySpanExporter) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.kind == SpanKind.SERVER]


async def test_a_request_has_a_server_span_named_after_its_route_and_current_while_the_route_runs(spans):
    answered = await call("POST", "/things/churn", {"user-agent": "tests"})

    [span] = servers(spans)
    assert span.name == "POST /things/{name}"
    assert span.attributes is not None
    assert {k: span.attributes.get(k) for k in ("http.request.method", "http.route", "url.path")} == {
        "http.request.method": "POST",
        "http.route": "/things/{name}",
        "url.path": "/things/churn",
    }
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["user_agent.original"] == "tests"
    assert span.status.status_code != StatusCode.ERROR
    assert answered.json() == {"trace": f"{span.context.trace_id:032x}", "span": f"{span.context.span_id:016x}"}


async def test_a_traceparent_makes_the_server_span_a_child_of_the_callers_span(spans):
    await call("POST", "/things/churn", {"traceparent": PARENT})

    [span] = servers(spans)
    assert f"{span.context.trace_id:032x}" == PARENT_TRACE
    assert span.parent is not None and f"{span.parent.span_id:016x}" == PARENT_SPAN


async def test_a_malformed_traceparent_starts_a_new_trace_and_the_request_succeeds(spans):
    answered = await call("POST", "/things/churn", {"traceparent": "00-zz-yy-01"})

    assert answered.status_code == 200
    [span] = servers(spans)
    assert span.parent is None and span.context.is_valid


async def test_a_server_error_is_an_error_span_and_probes_have_none(spans):
    assert (await call("GET", "/broken")).status_code == 500
    assert (await call("GET", "/healthz")).status_code == 200

    [span] = servers(spans)
    assert span.name == "GET /broken" and span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "RuntimeError"
