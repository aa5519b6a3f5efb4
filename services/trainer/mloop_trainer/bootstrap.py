"""The trainer's composition root: adapters and the training pool built from settings, handed to the handlers."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

from fastapi import FastAPI

from mloop_common.bus import route
from mloop_common.clients import RegistryClient
from mloop_common.events import DataPublished, DriftDetected
from mloop_common.runtime import Runtime
from mloop_common.uow import Store
from mloop_trainer.config import TrainerSettings
from mloop_trainer.handlers import Trainer
from mloop_trainer.jobs import warm_up
from mloop_trainer.store import SqlTrainerUnit, TrainerUnit


@dataclass(frozen=True)
class TrainerService:
    """What the routes use."""

    store: Store[TrainerUnit]
    trainer: Trainer


def process_pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes for training jobs, so the event loop (and the Kafka heartbeat) never waits on a fit."""
    # spawn, not fork: forking a process that runs an event loop and Kafka threads is unsafe.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


@asynccontextmanager
async def bootstrap(settings: TrainerSettings, app: FastAPI) -> AsyncIterator[TrainerService]:
    """Build the database, bus, registry client, artifact store and training pool; consume while running."""
    runtime = Runtime(settings, migrations="mloop_trainer:migrations")
    registry = RegistryClient(settings.common.registry_url, actor="trainer")
    store = runtime.store(SqlTrainerUnit)
    trainer = Trainer(
        store=store,
        registry=registry,
        artifacts=runtime.artifacts,
        new_pool=partial(process_pool, settings.workers),
        code_version=runtime.code_version,
    )
    runtime.consume(route(DataPublished, trainer.on_data_published), group_suffix="-data")
    runtime.consume(route(DriftDetected, trainer.on_drift_detected), group_suffix="-drift")
    try:
        # Pay the worker start-up (imports of scikit-learn and friends) now, not on the first dataset.
        warming = asyncio.get_running_loop().run_in_executor(trainer.pool, warm_up)
        await asyncio.gather(warming, runtime.start(app))
        try:
            yield TrainerService(store=store, trainer=trainer)
        finally:
            await runtime.stop()
    finally:
        await registry.aclose()
        trainer.close()
