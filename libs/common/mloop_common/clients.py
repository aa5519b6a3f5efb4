"""HTTP clients for other services' APIs (services never read each other's tables)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from opentelemetry.propagate import inject

from mloop_common.errors import MloopError, NotFound, TransientError


class ServiceUnavailable(TransientError):
    """Another service did not answer; the caller's message is retried later."""


class RegistryClient:
    """The registry API as trainer, validator and serving use it."""

    def __init__(
        self, base_url: str, *, actor: str, timeout: float = 10.0, transport: httpx.AsyncBaseTransport | None = None
    ):
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers={"X-Mloop-Actor": actor}
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        headers: dict[str, str] = {}
        inject(headers)  # the registry's spans (and the events it emits) join the caller's trace
        for attempt in range(3):
            try:
                response = await self._client.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise ServiceUnavailable(f"registry unreachable: {exc!r}") from exc
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            if response.status_code == 404:
                raise NotFound(response.json().get("error", {}).get("message", f"{path} not found"))
            if response.status_code >= 500:
                if attempt == 2:
                    raise ServiceUnavailable(f"registry {method} {path}: HTTP {response.status_code}")
                await asyncio.sleep(0.5 * (attempt + 1))
                continue
            if response.status_code >= 400:
                error = response.json().get("error", {})
                raise MloopError(f"registry refused {method} {path}: {error.get('message', response.text)}")
            return response.json()
        raise AssertionError("unreachable")

    async def models_for_dataset(self, dataset: str) -> list[dict[str, Any]]:
        """Latest spec of every model trained from ``dataset``."""
        return (await self._request("GET", "/v1/models", params={"dataset": dataset}))["models"]

    async def list_models(self) -> list[dict[str, Any]]:
        return (await self._request("GET", "/v1/models"))["models"]

    async def model(self, name: str, spec_version: int | None = None) -> dict[str, Any]:
        params = {"spec_version": spec_version} if spec_version else None
        return await self._request("GET", f"/v1/models/{name}", params=params)

    async def alias(self, name: str, alias: str = "production") -> dict[str, Any] | None:
        """The version behind ``alias``, or None when the model has none yet."""
        try:
            return await self._request("GET", f"/v1/models/{name}/aliases/{alias}")
        except NotFound:
            return None

    async def register(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._request("POST", f"/v1/models/{name}/versions", json=body)
