"""Trainer HTTP API (runs) and its composition root."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder

from mloop_common.clients import RegistryClient
from mloop_common.events import Topic
from mloop_common.http import create_app
from mloop_common.runtime import Runtime
from mloop_common.settings import build_settings
from mloop_trainer import store
from mloop_trainer.config import TrainerSettings
from mloop_trainer.handlers import Trainer
from mloop_trainer.jobs import warm_up


def create_trainer_app() -> tuple[FastAPI, TrainerSettings]:
    common, settings = build_settings("trainer", TrainerSettings)
    runtime = Runtime("trainer", common, settings, migrations="mloop_trainer:migrations")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # spawn, not fork: forking a process that runs an event loop and Kafka threads is unsafe.
        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(max_workers=settings.workers, mp_context=multiprocessing.get_context("spawn"))

        registry = RegistryClient(common.registry_url, actor="trainer")
        trainer = Trainer(runtime, registry, new_pool)
        app.state.trainer = trainer
        runtime.consume([Topic.DATA_PUBLISHED], trainer.on_data_published, group_suffix="-data")
        runtime.consume([Topic.DRIFT_DETECTED], trainer.on_drift_detected, group_suffix="-drift")
        # Pay the worker start-up (imports of scikit-learn and friends) now, not on the first dataset.
        warming = asyncio.get_running_loop().run_in_executor(trainer.pool, warm_up)
        await runtime.start(app)
        await warming
        yield
        await runtime.stop()
        await registry.aclose()
        trainer.pool.shutdown(cancel_futures=True)

    app = create_app(
        service="trainer",
        lifespan=lifespan,
        description="Trains every model spec on new dataset versions and on drift; lists runs.",
    )

    @app.get("/v1/runs", tags=["runs"])
    async def list_runs(
        request: Request,
        model: Annotated[str | None, Query(max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """Finished training runs, newest first (no candidate list), and the runs training right now."""
        async with runtime.transaction() as session:
            rows = await store.list_runs(session, model, limit)
        training = [run for run in request.app.state.trainer.active.values() if model in (None, run["model"])]
        for row in rows:
            details = row.pop("details")
            row["estimator_class"] = details.get("estimator_class")
            row["cv_score"] = details.get("cv_score")
            row["holdout_metrics"] = details.get("holdout_metrics")
        return jsonable_encoder({"runs": rows, "training": training})

    @app.get("/v1/runs/{run_id}", tags=["runs"])
    async def get_run(run_id: str) -> dict[str, Any]:
        """One run: params, CV scores of every candidate, timings, data and code versions, artifacts."""
        async with runtime.transaction() as session:
            return jsonable_encoder(await store.get_run(session, run_id))

    return app, settings
