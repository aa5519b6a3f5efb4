"""Validator HTTP API (evaluations) and its composition root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query
from fastapi.encoders import jsonable_encoder

from mloop_common.clients import RegistryClient
from mloop_common.events import Topic
from mloop_common.http import create_app
from mloop_common.runtime import Runtime
from mloop_common.settings import build_settings
from mloop_validator import store
from mloop_validator.config import ValidatorSettings
from mloop_validator.handlers import Validator


def create_validator_app() -> tuple[FastAPI, ValidatorSettings]:
    common, settings = build_settings("validator", ValidatorSettings)
    runtime = Runtime("validator", common, settings, migrations="mloop_validator:migrations")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = RegistryClient(common.registry_url, actor="validator")
        runtime.consume([Topic.MODEL_TRAINED], Validator(runtime, registry).on_model_trained)
        await runtime.start(app)
        yield
        await runtime.stop()
        await registry.aclose()

    app = create_app(
        service="validator",
        lifespan=lifespan,
        description="Evaluates each trained candidate against the production model.",
    )

    @app.get("/v1/evaluations", tags=["evaluations"])
    async def list_evaluations(
        model: Annotated[str | None, Query(max_length=63)] = None, limit: Annotated[int, Query(ge=1, le=500)] = 50
    ) -> dict[str, Any]:
        """Evaluations, newest first."""
        async with runtime.transaction() as session:
            return jsonable_encoder({"evaluations": await store.list_all(session, model, limit)})

    @app.get("/v1/evaluations/{evaluation_id}", tags=["evaluations"])
    async def get_evaluation(evaluation_id: str) -> dict[str, Any]:
        """One evaluation: candidate and champion metrics, slices, decision and reasons."""
        async with runtime.transaction() as session:
            return jsonable_encoder(await store.get(session, evaluation_id))

    return app, settings
