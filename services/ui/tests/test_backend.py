"""Calls to the services: a read survives one dropped connection, a write is never sent twice."""

from __future__ import annotations

import httpx
import pytest

from mloop_ui.backend import Backend, BackendError


def flaky(failures: int) -> tuple[httpx.MockTransport, list[str]]:
    """A service whose first ``failures`` requests are cut off before any answer (a closed keep-alive)."""
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response", request=request)
        return httpx.Response(200, json={"ok": True})

    return httpx.MockTransport(handle), seen


async def test_a_read_is_sent_again_once_after_a_dropped_connection() -> None:
    transport, seen = flaky(failures=1)
    backend = Backend({"registry": "http://registry"}, transport=transport)

    assert await backend.get("registry", "/v1/models", "key") == {"ok": True}
    assert seen == ["GET", "GET"]


async def test_a_service_that_keeps_dropping_reads_is_unavailable_and_a_write_is_not_repeated() -> None:
    transport, seen = flaky(failures=5)
    backend = Backend({"registry": "http://registry"}, transport=transport)

    with pytest.raises(BackendError) as read:
        await backend.get("registry", "/v1/models", "key")
    with pytest.raises(BackendError) as write:
        await backend.call("registry", "POST", "/v1/models/m/versions/1/approve", "key", json={})

    assert read.value.status == 503 and "RemoteProtocolError" in read.value.message
    assert write.value.status == 503
    assert seen == ["GET", "GET", "POST"]
