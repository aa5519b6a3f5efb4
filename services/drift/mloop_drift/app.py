"""Drift HTTP API (reports) and its composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.encoders import jsonable_encoder

from mloop_common.events import Envelope, Topic
from mloop_common.http import create_app
from mloop_common.runtime import Runtime
from mloop_common.settings import build_settings
from mloop_drift import store
from mloop_drift.config import DriftSettings
from mloop_drift.handlers import DriftMonitor


def create_drift_app() -> tuple[FastAPI, DriftSettings]:
    common, settings = build_settings("drift", DriftSettings)
    runtime = Runtime("drift", common, settings, migrations="mloop_drift:migrations")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        monitor = DriftMonitor(runtime, settings)
        handlers = {
            Topic.MODEL_PROMOTED: monitor.on_model_promoted,
            Topic.PREDICTIONS_LOGGED: monitor.on_predictions_logged,
            Topic.FEEDBACK_RECEIVED: monitor.on_feedback_received,
        }

        async def dispatch(event: Envelope) -> None:
            await handlers[Topic(event.type)](event)

        # One consumer for all three topics: a model's windows are judged by one task at a time.
        runtime.consume(list(handlers), dispatch)
        await runtime.start(app)
        yield
        await runtime.stop()

    app = create_app(
        service="drift",
        lifespan=lifespan,
        description="Watches predictions and labels per model version; reports drift.",
    )

    @app.get("/v1/drift/{model}/reports", tags=["drift"])
    async def list_reports(model: str, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """Window reports of a model, newest first (summary fields)."""
        async with runtime.transaction() as session:
            return jsonable_encoder({"reports": await store.list_reports(session, model, limit)})

    @app.get("/v1/drift/{model}/reports/{report_id}", tags=["drift"])
    async def get_report(model: str, report_id: str) -> dict[str, Any]:
        """One window report with per-feature tests, data quality and performance evidence."""
        async with runtime.transaction() as session:
            return jsonable_encoder(await store.get_report(session, model, report_id))

    return app, settings
