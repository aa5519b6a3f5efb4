"""The services' APIs as the UI reads them, always with the signed-in person's key."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")
SERVICES = ("ingest", "trainer", "validator", "registry", "serving", "drift")
# Requests one page sends at once to the services (a page over many models or windows fans out).
FAN_OUT = 8


class BackendError(Exception):
    """A service refused or could not answer; ``status`` is what the page answers with."""

    def __init__(self, service: str, status: int, message: str) -> None:
        super().__init__(f"{service}: {message}")
        self.service = service
        self.status = status
        self.message = message


def segment(value: str | int) -> str:
    """One path segment, escaped: a name with a slash or '..' in it stays one segment."""
    return quote(str(value), safe="")


def _message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return response.text[:300] or response.reason_phrase
    if isinstance(error, dict):
        return str(error.get("message", error))
    return str(error)


class Backend:
    """One HTTP client per service; each call names the key it acts with."""

    def __init__(
        self, urls: Mapping[str, str], *, timeout: float = 15.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._clients = {
            name: httpx.AsyncClient(base_url=url, timeout=timeout, follow_redirects=False, transport=transport)
            for name, url in urls.items()
        }

    async def aclose(self) -> None:
        await asyncio.gather(*(client.aclose() for client in self._clients.values()))

    async def call(
        self,
        service: str,
        method: str,
        path: str,
        key: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
        # A read is tried once more after a transport error: a service closes idle keep-alive connections, and
        # a request sent on one just as it closes fails without having reached the service.
        attempts = 2 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                response = await self._clients[service].request(method, path, params=params, json=json, headers=headers)
                break
            except httpx.TransportError as error:
                if attempt == attempts:
                    raise BackendError(service, 503, f"{service} is unreachable ({type(error).__name__})") from error
        if response.status_code >= 400:
            status = response.status_code if response.status_code < 500 else 502
            if response.status_code == 503:
                status = 503
            raise BackendError(service, status, _message(response))
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def get(self, service: str, path: str, key: str, **params: Any) -> Any:
        return await self.call(service, "GET", path, key, params={k: v for k, v in params.items() if v is not None})

    async def get_or_none(self, service: str, path: str, key: str, **params: Any) -> Any:
        """The answer, or None when the thing does not exist (404)."""
        try:
            return await self.get(service, path, key, **params)
        except BackendError as error:
            if error.status == 404:
                return None
            raise


async def gather_limited(calls: Iterable[Awaitable[T]], limit: int = FAN_OUT) -> list[T]:
    """Await ``calls`` with at most ``limit`` in flight, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[T]) -> T:
        async with gate:
            return await call

    return list(await asyncio.gather(*(one(c) for c in calls)))
