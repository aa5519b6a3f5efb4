"""The UI's pages over fakes of the services' APIs: signing in, what each role may do, escaping, errors."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, DEVELOPMENT_SECRET, Authenticator, Principal, StaticKeys, new_key
from mloop_common.errors import ServiceUnavailable
from mloop_common.http import PUBLIC_ROUTES, Access, create_app
from mloop_ui import access, pages
from mloop_ui.app import install
from mloop_ui.backend import Backend
from mloop_ui.bootstrap import UiService
from mloop_ui.config import UiSettings
from mloop_ui.feed import Feed
from mloop_ui.sessions import COOKIE, Sessions

VIEWER, APPROVER, APP, UNCHECKABLE = (new_key().key for _ in range(4))
NASTY = "<script>alert(1)</script>"
PENDING = {
    "model": "rain",
    "version": 2,
    "run_id": "r2",
    "evaluation_id": "e2",
    "spec_version": 1,
    "status": "pending_approval",
    "created_at": "2026-12-01T07:00:00Z",
    "aliases": [],
    "tags": {},
    "artifact": {"sha256": "ab" * 32},
    "lineage": {"dataset": "rain", "dataset_version": 1, "dataset_sha256": "cd" * 32},
}


class FakeServices:
    """Answers like the six services; records every call with the key it came with."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []  # (host, method, path, key)
        self.fail: dict[str, int] = {}  # path -> status to answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        path = request.url.path
        self.calls.append((request.url.host, request.method, path, key))
        if path in self.fail:
            return httpx.Response(self.fail[path], json={"error": {"code": "x", "message": f"refused {path}"}})
        answers: dict[str, Any] = {
            "/v1/models": {
                "models": [
                    {"name": "rain", "dataset": "rain", "spec": {"metric": "accuracy"}, "aliases": {"production": 1}},
                    {"name": NASTY, "spec": {}, "aliases": {}},
                ]
            },
            "/v1/audit": {"entries": []},
            "/v1/models/rain/versions": {"versions": [PENDING]},
            f"/v1/models/{NASTY}/versions": {"versions": []},
            "/v1/search/versions": {"versions": [PENDING], "next_offset": None},
            "/v1/evaluations/e2": {
                "id": "e2",
                "decision": "registered",
                "reasons": [f"fine {NASTY}"],
                "candidate_metrics": {"accuracy": 0.8},
                "champion_metrics": {"accuracy": 0.7},
                "champion_version": 1,
            },
            "/v1/models/rain/versions/2/approve": {**PENDING, "status": "approved", "aliases": ["production"]},
        }
        if path.startswith("/v1/drift/"):
            return httpx.Response(200, json={"reports": []})
        if path not in answers:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": f"{path} does not exist"}})
        return httpx.Response(200, json=answers[path])


class Keys(StaticKeys):
    """Known keys; UNCHECKABLE stands for a key asked about while the registry is away."""

    async def resolve(self, presented: str) -> Principal | None:
        if presented == UNCHECKABLE:
            raise ServiceUnavailable("cannot check the API key: the registry is unreachable")
        return await super().resolve(presented)


@asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


@pytest.fixture
def services() -> FakeServices:
    return FakeServices()


@pytest.fixture
async def client(services: FakeServices) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service="ui", lifespan=no_lifespan)
    app.include_router(pages.router)
    install(app)
    keys = Keys(
        {
            VIEWER: Principal("vera", "viewer", key_id="1"),
            APPROVER: Principal("carol", "approver", key_id="2"),
            APP: Principal("shop", "app", key_id="3"),
        }
    )
    authenticator = Authenticator(secret=DEVELOPMENT_SECRET, admin_key=DEVELOPMENT_ADMIN_KEY, resolver=keys)
    app.state.access = Access({**PUBLIC_ROUTES, **access.RULES}, authenticator)
    urls = {name: f"http://{name}" for name in ("ingest", "trainer", "validator", "registry", "serving", "drift")}
    app.state.service = UiService(
        settings=UiSettings(),
        backend=Backend(urls, transport=httpx.MockTransport(services)),
        sessions=Sessions(lifetime_seconds=3600, max_sessions=10),
        feed=Feed(100),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as http:
        yield http


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    return await client.post("/login", data={"key": key, "next": "/approvals"})


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found[1]


async def test_a_signed_out_visitor_is_sent_to_sign_in_and_back_to_the_page_asked_for(
    client: httpx.AsyncClient,
) -> None:
    asked = await client.get("/drift/rain?window=w1")
    assert asked.status_code == 303 and asked.headers["location"] == "/login?next=%2Fdrift%2Frain%3Fwindow%3Dw1"
    assert (await client.get("/pipeline/events")).status_code == 401  # the page's script, not a navigation

    signed = await sign_in(client, VIEWER)
    assert signed.status_code == 303 and signed.headers["location"] == "/approvals"
    cookie = signed.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and VIEWER not in cookie


async def test_a_bad_key_or_a_role_that_cannot_read_is_refused_at_sign_in(client: httpx.AsyncClient) -> None:
    unknown = await sign_in(client, new_key().key)
    app = await sign_in(client, APP)

    assert (
        unknown.status_code == 401
        and "not valid" in unknown.text
        and COOKIE not in unknown.headers.get("set-cookie", "")
    )
    assert app.status_code == 403 and "cannot read" in app.text


async def test_a_key_that_cannot_be_checked_now_gets_a_page_saying_so(client: httpx.AsyncClient) -> None:
    refused = await sign_in(client, UNCHECKABLE)

    assert refused.status_code == 503 and "Cannot check the key now" in refused.text
    assert "registry is unreachable" in refused.text and COOKIE not in refused.headers.get("set-cookie", "")


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example", "/\\evil.example", "evil"])
async def test_after_sign_in_only_a_path_of_this_site_is_followed(client: httpx.AsyncClient, target: str) -> None:
    signed = await client.post("/login", data={"key": VIEWER, "next": target})
    assert signed.headers["location"] == "/"


async def test_pages_call_the_services_with_the_signed_in_key(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await sign_in(client, VIEWER)
    page = await client.get("/")

    assert page.status_code == 200 and "rain" in page.text
    assert services.calls and {key for *_, key in services.calls} == {VIEWER}


async def test_names_and_reasons_from_the_services_are_escaped(client: httpx.AsyncClient) -> None:
    await sign_in(client, APPROVER)
    models = await client.get("/")
    approvals = await client.get("/approvals")

    assert NASTY not in models.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in models.text
    assert NASTY not in approvals.text
    assert "script-src 'self'" in models.headers["content-security-policy"]


async def test_figures_embedded_in_a_page_cannot_close_their_script_element() -> None:
    embedded = str(pages._figure({"title": "</script><script>alert(1)</script>"}))
    assert "</" not in embedded and json.loads(embedded)["title"].startswith("</script>")


async def test_a_viewer_sees_no_decision_buttons_and_cannot_approve(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await sign_in(client, VIEWER)
    page = await client.get("/approvals")
    assert page.status_code == 200 and "rain v2" in page.text and "Approve v2" not in page.text

    forged = await client.post("/models/rain/versions/2/approve", data={"csrf": csrf_of(page.text)})

    assert forged.status_code == 403 and "cannot approve" in forged.text
    assert not [c for c in services.calls if c[1] == "POST"]


async def test_an_approver_approves_with_a_comment_through_the_registry(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await sign_in(client, APPROVER)
    page = await client.get("/approvals")
    assert "Approve v2" in page.text and "Reject v2" in page.text

    without_token = await client.post("/models/rain/versions/2/approve", data={"comment": "ok"})
    approved = await client.post("/models/rain/versions/2/approve", data={"csrf": csrf_of(page.text), "comment": "ok"})

    assert without_token.status_code == 403 and "stale" in without_token.text
    assert approved.status_code == 303 and approved.headers["location"] == "/models/rain/versions/2?done=approved"
    assert [c for c in services.calls if c[1] == "POST"] == [
        ("registry", "POST", "/v1/models/rain/versions/2/approve", APPROVER)
    ]


async def test_a_services_refusal_becomes_a_page_with_its_status_and_message(
    client: httpx.AsyncClient, services: FakeServices
) -> None:
    await sign_in(client, VIEWER)
    missing = await client.get("/models/ghost")
    services.fail["/v1/models"] = 503
    away = await client.get("/")

    assert missing.status_code == 404 and "/v1/models/ghost does not exist" in missing.text
    assert away.status_code == 503 and "registry answered" in away.text


async def test_a_request_id_no_prediction_has_is_a_clear_404(client: httpx.AsyncClient) -> None:
    await sign_in(client, VIEWER)
    found = await client.get("/lineage", params={"request_id": "nope"})
    empty = await client.get("/lineage", params={"request_id": " "})

    assert found.status_code == 404 and "No logged prediction has request id" in found.text
    assert empty.status_code == 400


async def test_signing_out_needs_the_sessions_token_and_ends_the_session(client: httpx.AsyncClient) -> None:
    await sign_in(client, VIEWER)
    page = await client.get("/approvals")
    forged = await client.post("/logout", data={"csrf": "forged"})
    assert forged.status_code == 403
    assert (await client.get("/approvals")).status_code == 200  # a forged sign-out does nothing

    await client.post("/logout", data={"csrf": csrf_of(page.text)})
    assert (await client.get("/approvals")).status_code == 303
