"""Crashes and outages while the loop runs: nothing is lost and nothing happens twice."""

from __future__ import annotations

import asyncio
import signal
import uuid

import httpx
import pytest
import yaml

from mloop_cli.demo import SPEC, TARGET, TIME_COLUMN, load_rainfall
from tests.conftest import eventually
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def declare(registry: httpx.AsyncClient, *, slow: bool = False) -> str:
    """A rainfall model under a fresh name; ``slow`` widens the search so a fit takes seconds."""
    name = f"fault-{uuid.uuid4().hex[:6]}"
    spec = yaml.safe_load(SPEC.read_text())
    spec["name"] = spec["dataset"] = name
    if slow:
        spec["estimators"] = [
            {"class": "RandomForestClassifier", "params": {"n_estimators": [150, 200], "max_depth": [8, 12, None]}}
        ]
        spec["search"] = {"strategy": "grid", "cv": 5}
    response = await registry.post(
        "/v1/models", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"}
    )
    response.raise_for_status()
    return name


async def publish(ingest: httpx.AsyncClient, name: str, rows: slice) -> None:
    csv = load_rainfall().iloc[rows].to_csv(index=False).encode()
    response = await ingest.post(
        f"/v1/datasets/{name}/versions",
        data={"target": TARGET, "time_column": TIME_COLUMN},
        files={"file": ("data.csv", csv, "text/csv")},
    )
    response.raise_for_status()


async def runs_of(trainer: httpx.AsyncClient, name: str) -> dict:  # type: ignore[type-arg]
    return (await trainer.get("/v1/runs", params={"model": name})).json()


async def test_trainer_killed_mid_training_trains_once_after_restart(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    name = await declare(clients["registry"], slow=True)
    await publish(clients["ingest"], name, slice(0, 7300))
    await eventually(lambda: _training(clients["trainer"], name), timeout=60, interval=0.05)
    stack.kill("trainer")  # mid-fit: the event was never committed, the run never recorded
    await asyncio.to_thread(stack.start, "trainer")
    versions = await eventually(lambda: _versions(clients["registry"], name), timeout=180, interval=0.5)
    assert [v["version"] for v in versions] == [1]
    runs = await runs_of(clients["trainer"], name)
    assert [r["status"] for r in runs["runs"]] == ["succeeded"] and runs["training"] == []


async def test_trainer_stopped_mid_fit_stops_the_fit_exits_cleanly_and_the_next_trainer_trains_once(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    name = await declare(clients["registry"], slow=True)
    await publish(clients["ingest"], name, slice(0, 7300))
    await eventually(lambda: _training(clients["trainer"], name), timeout=60, interval=0.05)

    code = await asyncio.to_thread(stack.terminate, "trainer")

    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert "failed (worker_died)" not in stack.log_tail("trainer", 20_000)  # the signal did not reach the fit
    assert "a training job was cancelled" in stack.log_tail("trainer", 20_000)  # stopped, not waited for
    await asyncio.to_thread(stack.start, "trainer")
    versions = await eventually(lambda: _versions(clients["registry"], name), timeout=180, interval=0.5)
    assert [v["version"] for v in versions] == [1]
    runs = await runs_of(clients["trainer"], name)
    assert [r["status"] for r in runs["runs"]] == ["succeeded"]


async def test_registry_outage_delays_the_loop_but_loses_nothing(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    name = await declare(clients["registry"])
    stack.kill("registry")
    await publish(clients["ingest"], name, slice(0, 7300))  # ingest needs no registry
    await asyncio.sleep(5)  # trainer keeps retrying while the registry is away
    await asyncio.to_thread(stack.start, "registry")
    versions = await eventually(lambda: _versions(clients["registry"], name), timeout=180, interval=0.5)
    assert [v["version"] for v in versions] == [1]
    assert len((await runs_of(clients["trainer"], name))["runs"]) == 1


async def _training(trainer: httpx.AsyncClient, name: str) -> bool:
    return bool((await runs_of(trainer, name))["training"])


async def _versions(registry: httpx.AsyncClient, name: str) -> list:  # type: ignore[type-arg]
    response = await registry.get(f"/v1/models/{name}/versions")
    return response.json()["versions"] if response.status_code == 200 else []
