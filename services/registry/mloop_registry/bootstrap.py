"""The registry's composition root: adapters built from settings, handed to the use cases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.bus import route
from mloop_common.events import ModelServed
from mloop_common.runtime import Runtime
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
    """Build the database (migrated) and the outbox relay; consume serving's load reports (model.served)."""
    runtime = Runtime(settings, migrations="mloop_registry:migrations")
    store = runtime.store(SqlRegistryUnit)
    registry = ModelRegistry(store=store, limits=settings.limits)
    keys = KeyRing(store)
    app.state.access.authenticator.resolver = keys  # stored keys are checked against this service's table
    runtime.consume(route(ModelServed, registry.on_model_served))
    await runtime.start(app)
    await registry.load_metrics()
    try:
        yield RegistryService(registry=registry, keys=keys, max_spec_bytes=settings.max_spec_bytes)
    finally:
        await runtime.stop()
