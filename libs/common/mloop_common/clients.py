"""HTTP clients for other services' APIs (services never read each other's tables)."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import httpx
from opentelemetry.propagate import inject
from pydantic import BaseModel, ValidationError

from mloop_common.auth import Principal
from mloop_common.contracts import (
    AliasView,
    ModelDetail,
    ModelList,
    ModelSummary,
    RegisterVersion,
    VersionView,
)
from mloop_common.errors import (
    Conflict,
    InvalidInput,
    MloopError,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
)
from mloop_common.retry import Backoff, retry_call

M = TypeVar("M", bound=BaseModel)

# An answered request with one of these statuses is the caller's fault: retrying cannot help.
_REFUSALS: dict[int, type[MloopError]] = {404: NotFound, 409: Conflict, 413: PayloadTooLarge, 422: InvalidInput}


class Registry(Protocol):
    """The registry as other services use it (a port: the HTTP client below, or a fake in tests)."""

    async def models_for_dataset(self, dataset: str) -> list[ModelSummary]: ...

    async def list_models(self) -> list[ModelSummary]: ...

    async def model(self, name: str, spec_version: int | None = None) -> ModelDetail: ...

    async def alias(self, name: str, alias: str) -> AliasView | None: ...

    async def register(self, name: str, request: RegisterVersion) -> VersionView: ...


class _Retryable(Exception):
    """A 5xx answer or a transport failure: worth another attempt."""


class RegistryClient:
    """The registry API over HTTP, with retries (backoff and jitter) for outages and typed errors for refusals."""

    def __init__(
        self,
        base_url: str,
        *,
        key: str,
        timeout: float = 10.0,
        attempts: int = 3,
        backoff: Backoff = Backoff(initial=0.5, maximum=4.0),
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers={"Authorization": f"Bearer {key}"}
        )
        self._attempts = attempts
        self._backoff = backoff

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, answer: type[M], **kwargs: Any) -> M:
        headers: dict[str, str] = {}
        inject(headers)  # the registry's spans (and the events it emits) join the caller's trace

        async def attempt() -> httpx.Response:
            try:
                response = await self._client.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                raise _Retryable(f"registry unreachable: {exc!r}") from exc
            if response.status_code >= 500:
                raise _Retryable(f"registry {method} {path}: HTTP {response.status_code}")
            return response

        try:
            response = await retry_call(
                attempt,
                what=f"registry {method} {path}",
                backoff=self._backoff,
                attempts=self._attempts,
                retry_if=lambda exc: isinstance(exc, _Retryable),
            )
        except _Retryable as exc:
            raise ServiceUnavailable(str(exc)) from exc
        if response.status_code >= 400:
            error = _error_of(response)
            refusal = _REFUSALS.get(response.status_code, MloopError)
            raise refusal(f"registry refused {method} {path}: {error.get('message')}", field=error.get("field"))
        try:
            return answer.model_validate_json(response.content)
        except ValidationError as exc:
            raise ServiceUnavailable(f"registry {method} {path} answered an unexpected body: {exc}") from exc

    async def models_for_dataset(self, dataset: str) -> list[ModelSummary]:
        """Latest spec of every model trained from ``dataset``."""
        return (await self._request("GET", "/v1/models", ModelList, params={"dataset": dataset})).models

    async def list_models(self) -> list[ModelSummary]:
        return (await self._request("GET", "/v1/models", ModelList)).models

    async def model(self, name: str, spec_version: int | None = None) -> ModelDetail:
        params = {"spec_version": spec_version} if spec_version else None
        return await self._request("GET", f"/v1/models/{name}", ModelDetail, params=params)

    async def alias(self, name: str, alias: str) -> AliasView | None:
        """The version behind ``alias``, or None when the model has none yet."""
        try:
            return await self._request("GET", f"/v1/models/{name}/aliases/{alias}", AliasView)
        except NotFound:
            return None

    async def register(self, name: str, request: RegisterVersion) -> VersionView:
        body = request.model_dump(mode="json")
        return await self._request("POST", f"/v1/models/{name}/versions", VersionView, json=body)


class KeyIntrospection:
    """Asks the registry who a stored API key belongs to (``POST /v1/auth/introspect``), as this service."""

    def __init__(
        self, base_url: str, *, key: str, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers={"Authorization": f"Bearer {key}"}
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def resolve(self, presented: str) -> Principal | None:
        try:
            response = await self._client.post("/v1/auth/introspect", json={"key": presented})
        except httpx.TransportError as exc:
            raise ServiceUnavailable(f"cannot check the API key: the registry is unreachable ({exc!r})") from exc
        if response.status_code in (401, 403):
            # This service's own key was refused: its MLOOP_AUTH__SECRET differs from the registry's.
            raise ServiceUnavailable("cannot check the API key: the registry refused this service's own key")
        if response.status_code != 200:
            raise ServiceUnavailable(f"cannot check the API key: the registry answered HTTP {response.status_code}")
        answer = response.json()
        if not answer.get("active"):
            return None
        return Principal(name=answer["name"], role=answer["role"], key_id=answer.get("key_id"))


def _error_of(response: httpx.Response) -> dict[str, Any]:
    """The ``error`` object of an mloop error body, or the raw text when the body is something else."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        return error
    return {"message": response.text[:500] or f"HTTP {response.status_code}"}
