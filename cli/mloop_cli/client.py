"""What every ``mloop`` command shares: the consoles, where the services are, and one HTTP call helper."""

from __future__ import annotations

import os
from typing import Any

import httpx
import typer
from rich.console import Console

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY
from mloop_common.settings import SERVICE_PORTS, UI_PORT

console = Console()
err = Console(stderr=True)


def url(service: str) -> str:
    """Base URL of a service: MLOOP_<SERVICE>_URL, else the local default port."""
    port = UI_PORT if service == "ui" else SERVICE_PORTS[service]
    return os.environ.get(f"MLOOP_{service.upper()}_URL", f"http://127.0.0.1:{port}")


def bootstrap() -> str:
    return os.environ.get("MLOOP_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")


def api_key() -> str:
    """MLOOP_API_KEY, else the development admin key (which a stack outside development refuses)."""
    return os.environ.get("MLOOP_API_KEY") or DEVELOPMENT_ADMIN_KEY


def auth_headers() -> dict[str, str]:
    """The key every call sends; the services record whoever it belongs to as the actor."""
    return {"Authorization": f"Bearer {api_key()}"}


def call(method: str, service: str, path: str, *, session: httpx.Client | None = None, **kwargs: Any) -> Any:
    """One HTTP call; errors become a one-line message and exit code 1. ``session`` reuses one client's
    connections and TLS context across many calls (a client per call loads the CA bundle each time)."""
    headers = {**auth_headers(), **kwargs.pop("headers", {})}
    try:
        response = (session or httpx).request(
            method, url(service) + path, timeout=kwargs.pop("timeout", 30), headers=headers, **kwargs
        )
    except httpx.TransportError as exc:
        err.print(f"[red]error:[/] {service} is not reachable at {url(service)} ({exc}). Is the stack up (`mloop up`)?")
        raise typer.Exit(1) from exc
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        field = f" (field: {error['field']})" if error.get("field") else ""
        err.print(f"[red]error {response.status_code}:[/] {error.get('message', response.text)}{field}")
        raise typer.Exit(1)
    return body
