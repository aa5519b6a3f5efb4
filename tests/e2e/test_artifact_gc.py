"""Artifact retention on the real stack: after a whole loop (publish, train, validate, register, serve), every
artifact is made three days old and an orphan is planted; ``mloop artifacts gc`` deletes the orphan and nothing
else, the model still serves after serving restarts, a dry run deletes nothing, and with one service down
nothing is deleted and the command says which."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio
from typer.testing import CliRunner

from mloop_cli.client import console, err
from mloop_cli.main import app
from mloop_common.artifacts import ArtifactStore
from tests.conftest import REPO, eventually, running
from tests.e2e.test_cli_ops import cli_env
from tests.e2e.test_release_gate import TIMEOUT, declare, publish, served_version, spec
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def gc_stack(kafka_bootstrap: str, postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    """The six services, the registry told where this stack's ingest and trainer answer."""
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("gc"), repo=REPO
    )
    services.env["MLOOP_REGISTRY_RETENTION__SOURCES"] = json.dumps(
        {"ingest": services.urls["ingest"], "trainer": services.urls["trainer"]}
    )
    with running(services):
        yield services


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def http(gc_stack: ServiceStack) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    by_service = {
        name: httpx.AsyncClient(base_url=url, timeout=30, headers=gc_stack.headers)
        for name, url in gc_stack.urls.items()
    }
    yield by_service
    for client in by_service.values():
        await client.aclose()


def age_everything(store: ArtifactStore, days: float) -> None:
    then = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    for artifact in store.stored():
        os.utime(store.path_of(artifact.uri), (then, then))


def plant_orphan(store: ArtifactStore, days: float) -> str:
    ref = store.put(f"a model nobody registered {uuid.uuid4()}".encode(), kind="models", suffix=".skops")
    then = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(store.path_of(ref.uri), (then, then))
    return ref.uri


async def gc(stack: ServiceStack, *args: str) -> tuple[int, str]:
    result = await asyncio.to_thread(CliRunner().invoke, app, ["artifacts", "gc", *args], env=cli_env(stack))
    return result.exit_code, result.output


async def test_gc_deletes_only_the_orphan_the_model_still_serves_and_a_service_down_stops_it(
    gc_stack: ServiceStack, http: dict[str, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    for output in (console, err):
        monkeypatch.setattr(output, "width", 400)  # whole lines, whatever the terminal
    name = f"gc-{uuid.uuid4().hex[:6]}"
    await declare(http["registry"], spec(name))
    await publish(http["ingest"], name, seed=1)
    assert await eventually(lambda: served_version(http["serving"], name), timeout=TIMEOUT, interval=0.5) == 1
    store = gc_stack.artifact_store()
    assert isinstance(store, ArtifactStore)
    age_everything(store, days=3)  # every artifact of the loop is past the grace period: only references keep it
    needed = {artifact.uri for artifact in store.stored()}
    assert {u.split(":")[1].split("/")[0] for u in needed} >= {"datasets", "contracts", "models", "profiles"}
    orphan = plant_orphan(store, days=3)

    dry_code, dry_output = await gc(gc_stack, "--dry-run")
    after_dry_run = {artifact.uri for artifact in store.stored()}
    code, output = await gc(gc_stack)

    assert dry_code == 0, dry_output
    assert orphan in dry_output and f"would delete 1 of {len(needed) + 1} artifacts" in dry_output
    assert after_dry_run == needed | {orphan}  # a dry run deletes nothing
    assert code == 0, output
    assert orphan in output and f"deleted 1 of {len(needed) + 1} artifacts" in output
    assert {artifact.uri for artifact in store.stored()} == needed

    # Serving loads the model anew from the store after a restart: its artifact and profile are intact.
    assert gc_stack.terminate("serving") in (0, -15)
    gc_stack.start("serving")
    assert await eventually(lambda: served_version(http["serving"], name), timeout=TIMEOUT, interval=0.5) == 1

    # With the trainer down, the registry cannot learn what the trainer needs: nothing is deleted.
    second = plant_orphan(store, days=3)
    assert gc_stack.terminate("trainer") in (0, -15)
    refused_code, refused_output = await gc(gc_stack)

    assert refused_code == 1, refused_output
    assert "deleted nothing" in refused_output and "trainer" in refused_output, refused_output
    assert {artifact.uri for artifact in store.stored()} == needed | {second}
