"""The trainer's HTTP routes in-process, over the fake store: status codes and the JSON shapes clients rely on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from mloop_common.http import service_app
from mloop_common.spec import ModelSpec
from mloop_common.testing import ADMIN_HEADERS, FakeRegistry
from mloop_trainer import access, api
from mloop_trainer.bootstrap import TrainerService
from mloop_trainer.config import TrainerSettings
from mloop_trainer.handlers import Trainer

from .fakes import GatedWorkers, PausingWorkers, memory_store
from .test_handlers import frame, published, spec, trainer

RUN_FIELDS = {
    "run_id",
    "model",
    "status",
    "trigger",
    "trigger_event_id",
    "spec_version",
    "spec_digest",
    "dataset",
    "dataset_version",
    "dataset_sha256",
    "recent_data_sha256",
    "dataset_uri",
    "recent_data_uri",
    "error",
    "code_version",
    "started_at",
    "finished_at",
}
LISTED_FIELDS = RUN_FIELDS | {"estimator_class", "cv_score", "holdout_metrics"}
DETAIL_FIELDS = {
    "seed",
    "features",
    "estimator_class",
    "params",
    "cv_score",
    "candidates",
    "holdout_metrics",
    "train_rows",
    "holdout_rows",
    "recent_rows",
    "timings",
    "library_versions",
    "artifact",
    "profile",
    "holdout",
}


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.add_spec(spec("churn"))
    wide = spec("churn_wide").model_dump(by_alias=True) | {"features": ["x1", "x2", "x3"]}
    registry.add_spec(ModelSpec.model_validate(wide))  # x3 is not in the data: this one fails
    return registry


@asynccontextmanager
async def serving(handler: Trainer) -> AsyncIterator[httpx.AsyncClient]:
    store = handler.store

    @asynccontextmanager
    async def fake_bootstrap(settings: TrainerSettings, app: FastAPI) -> AsyncIterator[TrainerService]:
        yield TrainerService(store=store, trainer=handler)

    app = service_app(
        TrainerSettings(), bootstrap=fake_bootstrap, router=api.router, rules=access.RULES, description="tests"
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS
        ) as http,
    ):
        yield http


async def test_the_run_list_shows_each_finished_run_with_its_scores_instead_of_its_details(artifacts, registry):
    handler = trainer(memory_store(), registry, artifacts)
    await handler.on_data_published(*published(artifacts, frame()))

    async with serving(handler) as client:
        listed = await client.get("/v1/runs")
        one_model = await client.get("/v1/runs", params={"model": "churn", "limit": 1})

    assert listed.status_code == 200 and listed.json()["training"] == []
    runs = {run["model"]: run for run in listed.json()["runs"]}
    assert all(set(run) == LISTED_FIELDS for run in runs.values())
    assert runs["churn"]["status"] == "succeeded" and runs["churn"]["estimator_class"] == "LogisticRegression"
    assert 0.0 <= runs["churn"]["cv_score"] <= 1.0 and "accuracy" in runs["churn"]["holdout_metrics"]
    assert runs["churn_wide"]["status"] == "failed" and "x3" in runs["churn_wide"]["error"]
    assert runs["churn_wide"]["estimator_class"] is None and runs["churn_wide"]["holdout_metrics"] is None
    assert [run["model"] for run in one_model.json()["runs"]] == ["churn"]


async def test_a_run_shows_its_details_and_an_unknown_run_is_404(artifacts, registry):
    handler = trainer(memory_store(), registry, artifacts)
    await handler.on_data_published(*published(artifacts, frame()))

    async with serving(handler) as client:
        runs = {run["model"]: run["run_id"] for run in (await client.get("/v1/runs")).json()["runs"]}
        succeeded = await client.get(f"/v1/runs/{runs['churn']}")
        failed = await client.get(f"/v1/runs/{runs['churn_wide']}")
        unknown = await client.get("/v1/runs/no-such-run")

    assert succeeded.status_code == 200 and set(succeeded.json()) == RUN_FIELDS | {"details"}
    details = succeeded.json()["details"]
    assert set(details) == DETAIL_FIELDS and details["artifact"]["uri"].startswith("artifact:models/")
    assert details["candidates"][0]["class"] == "LogisticRegression"
    assert failed.json()["details"] == {"seed": 42, "failure": "data"}
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"


async def test_a_run_being_fitted_is_listed_as_training(artifacts, registry):
    workers = GatedWorkers()
    handler = trainer(memory_store(), registry, artifacts, workers=workers)
    payload, event = published(artifacts, frame())

    async with serving(handler) as client:
        handling = asyncio.create_task(handler.on_data_published(payload, event))
        async with asyncio.timeout(30):
            while not handler.training():  # the job waits at the gate
                await asyncio.sleep(0.01)
        during = (await client.get("/v1/runs")).json()
        workers.gate.set()
        await handling
        after = (await client.get("/v1/runs")).json()
    workers.close()

    [active] = during["training"]
    assert during["runs"] == [] and active["model"] == "churn" and active["trigger"] == "data.published"
    assert set(active) == {
        "run_id",
        "model",
        "status",
        "trigger",
        "spec_version",
        "dataset",
        "dataset_version",
        "started_at",
        "trials_done",
        "trials_total",
        "stage",
    }
    assert after["training"] == [] and active["run_id"] in {run["run_id"] for run in after["runs"]}


async def test_a_run_in_progress_shows_how_many_trials_are_done_in_the_api_and_the_metrics(artifacts, registry):
    workers = PausingWorkers()
    handler = trainer(memory_store(), registry, artifacts, workers=workers)
    payload, event = published(artifacts, frame())

    async with serving(handler) as client:
        handling = asyncio.create_task(handler.on_data_published(payload, event))
        async with asyncio.timeout(60):
            while not workers.paused.is_set():  # the job holds after its first trial
                await asyncio.sleep(0.01)
        [active] = handler.training()
        during = (await client.get(f"/v1/runs/{active.run_id}")).json()
        gauges = (
            REGISTRY.get_sample_value("mloop_trainer_active_trials_done", {"model": "churn"}),
            REGISTRY.get_sample_value("mloop_trainer_active_trials_total", {"model": "churn"}),
        )
        workers.resume.set()
        await handling
        after = (await client.get(f"/v1/runs/{active.run_id}")).json()
    workers.close()

    assert during["status"] == "training" and during["trials_done"] == 1 and during["trials_total"] == 1
    assert during["stage"].startswith("LogisticRegression")
    assert gauges == (1.0, 1.0)
    assert after["status"] == "succeeded"
    assert REGISTRY.get_sample_value("mloop_trainer_active_trials_done", {"model": "churn"}) is None


async def test_reproducing_a_run_over_http_answers_with_the_comparison(artifacts, registry):
    handler = trainer(memory_store(), registry, artifacts)
    await handler.on_data_published(*published(artifacts, frame()))

    async with serving(handler) as client:
        runs = {run["model"]: run for run in (await client.get("/v1/runs")).json()["runs"]}
        reproduced = await client.post(f"/v1/runs/{runs['churn']['run_id']}/reproduce")
        failed = await client.post(f"/v1/runs/{runs['churn_wide']['run_id']}/reproduce")
        unknown = await client.post("/v1/runs/nope/reproduce")

    assert reproduced.status_code == 200
    assert reproduced.json()["matches"] is True and reproduced.json()["predictions"] == "identical"
    assert failed.status_code == 409 and "no model to reproduce" in failed.json()["error"]["message"]
    assert unknown.status_code == 404
