"""The registry's composition root: adapters built from settings, handed to the use cases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.bus import route
from mloop_common.events import DriftDetected, ModelRejected, ModelServed, TrainingFailed
from mloop_common.runtime import Runtime
from mloop_common.uow import SqlStore, Store
from mloop_registry.alert_delivery import AlertWriter, DeliveryWorker, Senders
from mloop_registry.artifact_gc import ArtifactSweeper, HttpReferences, Source
from mloop_registry.config import RegistrySettings
from mloop_registry.handlers import ModelRegistry
from mloop_registry.keys import KeyRing
from mloop_registry.store import RegistryUnit, SqlRegistryUnit


@dataclass(frozen=True)
class RegistryService:
    """What the routes use."""

    registry: ModelRegistry
    keys: KeyRing
    max_spec_bytes: int
    sweeper: ArtifactSweeper | None = None  # None: no artifact store in this process (route tests)


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
    sweeper = artifact_sweeper(settings, runtime, store)
    await runtime.start(app)
    await registry.load_metrics()
    worker.start()
    retention = settings.retention
    sweeping = (
        asyncio.create_task(sweeper.run(retention.interval_seconds), name="artifact-retention")
        if retention.interval_seconds > 0
        else None
    )
    try:
        yield RegistryService(registry=registry, keys=keys, max_spec_bytes=settings.max_spec_bytes, sweeper=sweeper)
    finally:
        if sweeping is not None:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
        await worker.stop()
        await runtime.stop()


def artifact_sweeper(settings: RegistrySettings, runtime: Runtime, store: Store[RegistryUnit]) -> ArtifactSweeper:
    """Artifact retention over the stack's store: the registry's own references, and those of the services in
    ``MLOOP_REGISTRY_RETENTION__SOURCES`` asked with the registry's key."""
    retention = settings.retention

    async def own() -> ArtifactReferences:
        async with store.transaction() as unit:
            return await unit.artifact_references()

    sources: dict[str, Source] = {"registry": own}
    for name, url in retention.sources.items():
        sources[name] = HttpReferences(name, url, key=settings.own_key, timeout=retention.timeout_seconds)
    return ArtifactSweeper(
        artifacts=runtime.artifacts,
        sources=sources,
        grace=timedelta(hours=retention.grace_hours),
        clock=lambda: datetime.now(UTC),
    )
