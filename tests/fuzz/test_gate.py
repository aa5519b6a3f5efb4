"""The refusals the fuzz suite relies on, in-process: a NUL character in a URL or a JSON body is a 422 before
any query sees it, and every keyed route documents mloop's error bodies instead of FastAPI's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from mloop_common.http import create_app, document_errors


@asynccontextmanager
async def nothing(_: FastAPI) -> AsyncIterator[None]:
    yield


def app() -> FastAPI:
    application = create_app(service="probe", lifespan=nothing)

    @application.post("/v1/echo")
    async def echo(body: dict[str, Any]) -> dict[str, Any]:
        return body

    @application.get("/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    @application.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    return application


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app())
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        yield client


async def test_a_nul_in_the_url_is_refused_as_invalid_input(client: httpx.AsyncClient) -> None:
    in_path = await client.get("/v1/things/a%00b")
    in_query = await client.get("/v1/things/a", params={"q": "x\x00y"})

    for response in (in_path, in_query):
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "invalid_input"
        assert "NUL" in response.json()["error"]["message"]


async def test_a_nul_in_a_json_body_is_refused_even_split_across_chunks(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "a\\u00'
        yield b'00b"}'

    whole = await client.post("/v1/echo", json={"name": "a\x00b"})
    split = await client.post("/v1/echo", content=chunks(), headers={"content-type": "application/json"})

    for response in (whole, split):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "invalid_input"


async def test_text_that_only_looks_like_a_nul_escape_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/echo", json={"name": "C:\\u0000"})  # a backslash, then "u0000"

    assert response.status_code == 200 and response.json() == {"name": "C:\\u0000"}


async def test_protocol_paths_are_left_to_the_protocol(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/m/infer", content=b'{"data": ["\\u0000"]}')

    assert response.status_code == 200


def test_every_keyed_operation_documents_mloop_errors_and_not_fastapis() -> None:
    document = app().openapi()

    echo = document["paths"]["/v1/echo"]["post"]["responses"]
    assert {"401", "403", "404", "409", "413", "422"} <= set(echo)
    assert echo["422"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert "401" not in document["paths"]["/healthz"]["get"]["responses"]  # public: no key, no key errors


def test_a_protocol_path_documents_its_plain_errors_and_a_route_keeps_its_own_body() -> None:
    own = {"$ref": "#/components/schemas/Rejected"}
    document = {
        "paths": {
            "/v2/models/{name}/infer": {"post": {"responses": {"200": {"description": "ok"}}}},
            "/v1/things": {"post": {"responses": {"422": {"content": {"application/json": {"schema": own}}}}}},
        }
    }

    document_errors(document, plain_prefixes=("/v2",))

    infer = document["paths"]["/v2/models/{name}/infer"]["post"]["responses"]
    assert infer["404"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/PlainError"}
    things = document["paths"]["/v1/things"]["post"]["responses"]["422"]["content"]["application/json"]
    assert things["schema"] == {"anyOf": [own, {"$ref": "#/components/schemas/Error"}]}
