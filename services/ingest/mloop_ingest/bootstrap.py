"""Ingest's composition root: adapters built from settings, handed to the use case and the routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from mloop_common.runtime import Runtime
from mloop_common.uow import Store
from mloop_ingest.config import IngestSettings
from mloop_ingest.handlers import DatasetPublisher
from mloop_ingest.reading import Limits
from mloop_ingest.sources import Sources
from mloop_ingest.store import IngestUnit, SqlIngestUnit


@dataclass(frozen=True)
class IngestService:
    """What the routes use."""

    store: Store[IngestUnit]
    publisher: DatasetPublisher
    max_upload_bytes: int
    spool_dir: Path | None = None
    sources: Sources = Sources(roots=())


@asynccontextmanager
async def bootstrap(settings: IngestSettings, app: FastAPI) -> AsyncIterator[IngestService]:
    """Build the database, outbox relay and artifact store (ingest consumes no topic)."""
    runtime = Runtime(settings, migrations="mloop_ingest:migrations")
    store = runtime.store(SqlIngestUnit)
    if settings.spool_dir is not None:
        settings.spool_dir.mkdir(parents=True, exist_ok=True)
    publisher = DatasetPublisher(
        store=store,
        artifacts=runtime.artifacts,
        max_event_bytes=settings.max_event_bytes,
        policy=settings.checks,
        limits=Limits(max_columns=settings.max_columns),
        workdir=settings.spool_dir,
    )
    await runtime.start(app)
    try:
        yield IngestService(
            store=store,
            publisher=publisher,
            max_upload_bytes=settings.max_upload_bytes,
            spool_dir=settings.spool_dir,
            sources=Sources.of(settings.source_roots, settings.common.s3),
        )
    finally:
        await runtime.stop()
