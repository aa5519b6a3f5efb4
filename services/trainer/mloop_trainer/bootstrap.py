"""The trainer's composition root: adapters and the training pool built from settings, handed to the handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.bus import route
from mloop_common.clients import RegistryClient
from mloop_common.events import DataPublished, DriftDetected, SpecChanged
from mloop_common.runtime import Runtime
from mloop_common.uow import Store
from mloop_trainer.config import TrainerSettings
from mloop_trainer.handlers import Trainer
from mloop_trainer.jobs import warm_up
from mloop_trainer.store import SqlTrainerUnit, TrainerUnit
from mloop_trainer.workers import Budget, WorkerPool


@dataclass(frozen=True)
class TrainerService:
    """What the routes use."""

    store: Store[TrainerUnit]
    trainer: Trainer


@asynccontextmanager
async def bootstrap(settings: TrainerSettings, app: FastAPI) -> AsyncIterator[TrainerService]:
    """Build the database, bus, registry client, artifact store and training pool; consume while running."""
    runtime = Runtime(settings, migrations="mloop_trainer:migrations")
    registry = RegistryClient(settings.common.registry_url, key=settings.own_key)
    store = runtime.store(SqlTrainerUnit)
    # Worker processes, so the event loop (and the Kafka heartbeat) never waits on a fit.
    workers = WorkerPool(settings.workers, warm_up=warm_up)
    trainer = Trainer(
        store=store,
        registry=registry,
        artifacts=runtime.artifacts,
        workers=workers,
        budget=Budget(memory_mb=settings.memory_budget_mb, seconds=settings.time_budget_seconds),
        limits=settings.limits,
        code_version=runtime.code_version,
    )
    grace = settings.stop_grace_seconds
    runtime.consume(route(DataPublished, trainer.on_data_published), group_suffix="-data", stop_timeout=grace)
    runtime.consume(route(DriftDetected, trainer.on_drift_detected), group_suffix="-drift", stop_timeout=grace)
    runtime.consume(route(SpecChanged, trainer.on_spec_changed), group_suffix="-spec", stop_timeout=grace)
    try:
        # Pay the worker start-up (imports of scikit-learn and friends) now, not on the first dataset.
        await asyncio.gather(workers.start(), runtime.start(app))
        try:
            yield TrainerService(store=store, trainer=trainer)
        finally:
            await runtime.stop()
    finally:
        await registry.aclose()
        workers.close()
