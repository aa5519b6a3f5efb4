"""Ingest's composition root: adapters built from settings, handed to the use case and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.runtime import Runtime
from mloop_common.uow import Store
from mloop_ingest.config import IngestSettings
from mloop_ingest.handlers import DatasetPublisher
from mloop_ingest.store import IngestUnit, SqlIngestUnit


@dataclass(frozen=True)
class IngestService:
    """What the routes use."""

    store: Store[IngestUnit]
    publisher: DatasetPublisher
    max_upload_bytes: int


@asynccontextmanager
async def bootstrap(settings: IngestSettings, app: FastAPI) -> AsyncIterator[IngestService]:
    """Build the database, outbox relay and artifact store (ingest consumes no topic)."""
    runtime = Runtime(settings, migrations="mloop_ingest:migrations")
    store = runtime.store(SqlIngestUnit)
    publisher = DatasetPublisher(store=store, artifacts=runtime.artifacts, max_event_bytes=settings.max_event_bytes)
    await runtime.start(app)
    try:
        yield IngestService(store=store, publisher=publisher, max_upload_bytes=settings.max_upload_bytes)
    finally:
        await runtime.stop()
