"""Crashes and outages while the loop runs: nothing is lost and nothing happens twice.

The SIGTERM during a fit is scenario 3 of issue 10 (row 3c of tests/faults/results/summary.md).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid

import httpx
import pytest
import yaml

from mloop_cli.demo import SPEC, TARGET, TIME_COLUMN, load_rainfall
from tests.conftest import eventually
from tests.faults import summary
from tests.faults.summary import Row
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def rows() -> list[Row]:
    """This module's rows of the fault suite's summary table."""
    return []


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
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], rows: list[Row]
) -> None:
    name = await declare(clients["registry"], slow=True)
    await publish(clients["ingest"], name, slice(0, 7300))
    await eventually(lambda: _training(clients["trainer"], name), timeout=60, interval=0.05)

    signalled = time.monotonic()
    code = await asyncio.to_thread(stack.terminate, "trainer")
    exited_after = time.monotonic() - signalled
    log = stack.log_tail("trainer", 20_000)
    worker_died = "failed (worker_died)" in log  # the signal reached the fit
    cancelled = "a training job was cancelled" in log  # stopped, not waited for

    await asyncio.to_thread(stack.start, "trainer")
    versions = await eventually(lambda: _versions(clients["registry"], name), timeout=180, interval=0.5)
    runs = await runs_of(clients["trainer"], name)
    statuses = [r["status"] for r in runs["runs"]]
    numbers = [v["version"] for v in versions]
    rows.append(
        Row(
            "3c trainer SIGTERM during a fit",
            "SIGTERM to the trainer while it fits a grid search (RandomForest, 6 candidates x 5 folds, 7300 rows)",
            "exits cleanly (0, or the SIGTERM uvicorn re-raises after its shutdown) without waiting for the fit, "
            "the fit cancelled (its worker not killed by the signal); the next trainer trains it once: version 1 "
            "only, one run, succeeded",
            f"exit code {code} after {exited_after:.1f} s; fit cancelled: {'yes' if cancelled else 'no'}, worker "
            f"died: {'yes' if worker_died else 'no'}; after restart versions: {', '.join(map(str, numbers))}; "
            f"runs: {', '.join(statuses)}",
            code in (0, -signal.SIGTERM)
            and not worker_died
            and cancelled
            and numbers == [1]
            and statuses == ["succeeded"],
        )
    )
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it has shut down cleanly
    assert not worker_died
    assert cancelled
    assert numbers == [1]
    assert statuses == ["succeeded"]


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


async def test_summary_rows(rows: list[Row], capsys: pytest.CaptureFixture[str]) -> None:
    """Merges this module's row into tests/faults/results/summary.md and .json and prints the table."""
    summary.record_and_print(rows, capsys)


async def _training(trainer: httpx.AsyncClient, name: str) -> bool:
    return bool((await runs_of(trainer, name))["training"])


async def _versions(registry: httpx.AsyncClient, name: str) -> list:  # type: ignore[type-arg]
    response = await registry.get(f"/v1/models/{name}/versions")
    return response.json()["versions"] if response.status_code == 200 else []
