"""The SRE's commands on the real stack: ``mloop trace`` follows one chain across the services, ``mloop status``
shows the stack ready, the model and the version serving answers with."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from typer.testing import CliRunner

from mloop_cli.client import console, err
from mloop_cli.main import app
from tests.conftest import eventually, topic_events
from tests.e2e.test_release_gate import TIMEOUT, declare, publish, served_version, spec
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")


def cli_env(stack: ServiceStack) -> dict[str, str]:
    """What a person's shell would hold to point the CLI at this stack."""
    urls = {f"MLOOP_{name.upper()}_URL": address for name, address in stack.urls.items()}
    return {**urls, "MLOOP_KAFKA__BOOTSTRAP_SERVERS": stack.bootstrap, "MLOOP_API_KEY": stack.admin_key}


async def test_trace_follows_a_publication_to_the_promotion_and_status_shows_the_served_version(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    for output in (console, err):
        monkeypatch.setattr(output, "width", 300)  # whole lines, whatever the terminal
    name = f"cli-ops-{uuid.uuid4().hex[:6]}"
    await declare(clients["registry"], spec(name))
    await publish(clients["ingest"], name, seed=1)
    assert await eventually(lambda: served_version(clients["serving"], name), timeout=TIMEOUT, interval=0.5) == 1
    [published] = await topic_events(stack.bootstrap, "data.published", name)
    runner = CliRunner()

    traced = await asyncio.to_thread(runner.invoke, app, ["trace", published.correlationid], env=cli_env(stack))
    shown = await asyncio.to_thread(runner.invoke, app, ["status", "--remote"], env=cli_env(stack))

    assert traced.exit_code == 0, traced.output
    positions = [
        traced.output.find(kind) for kind in ("data.published", "model.trained", "model.registered", "model.promoted")
    ]
    assert -1 not in positions and positions == sorted(positions), traced.output  # the chain, in time order
    assert f"{name} v1, 600 rows" in traced.output and "v1 is production" in traced.output
    assert shown.exit_code == 0, shown.output  # every service ready
    assert name in shown.output and "production v1" in shown.output
