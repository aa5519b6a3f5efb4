"""The registry's composition root: adapters built from settings, handed to the use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.bus import route
from mloop_common.events import DriftDetected, ModelRejected, ModelServed, TrainingFailed
from mloop_common.runtime import Runtime
from mloop_common.uow import SqlStore
from mloop_registry.alert_delivery import AlertWriter, DeliveryWorker, Senders
from mloop_registry.config import RegistrySettings
from mloop_registry.handlers import ModelRegistry
from mloop_registry.keys import KeyRing
from mloop_registry.store import SqlRegistryUnit


@dataclass(frozen=True)
class RegistryService:
    """What the routes use."""

    registry: ModelRegistry
    keys: KeyRing
    max_spec_bytes: int


@asynccontextmanager
async def bootstrap(settings: RegistrySettings, app: FastAPI) -> AsyncIterator[RegistryService]:
    """Build the database (migrated) and the outbox relay; consume serving's load reports (model.served);
    turn rejections, drift and failed loads into alerts, and deliver them."""
    runtime = Runtime(settings, migrations="mloop_registry:migrations")
    store = runtime.store(SqlRegistryUnit)
    registry = ModelRegistry(store=store, limits=settings.limits)
    keys = KeyRing(store)
    app.state.access.authenticator.resolver = keys  # stored keys are checked against this service's table
    runtime.consume(route(ModelServed, registry.on_model_served))
    # Alerts have their own consumer group and inbox name: model.served is handled twice, once for each.
    assert runtime.db is not None
    alerts_store = SqlStore(runtime.db, SqlRegistryUnit, consumer=f"{runtime.group_id}-alerts")
    worker = DeliveryWorker(store=alerts_store, settings=settings.alerts, senders=Senders())
    writer = AlertWriter(
        store=alerts_store, settings=settings.alerts, registry_url=settings.common.registry_url, on_written=worker.wake
    )
    runtime.consume(
        route(ModelRejected, writer.on_event),
        route(DriftDetected, writer.on_event),
        route(ModelServed, writer.on_event),
        route(TrainingFailed, writer.on_event),
        group_suffix="-alerts",
    )
    await runtime.start(app)
    await registry.load_metrics()
    worker.start()
    try:
        yield RegistryService(registry=registry, keys=keys, max_spec_bytes=settings.max_spec_bytes)
    finally:
        await worker.stop()
        await runtime.stop()
