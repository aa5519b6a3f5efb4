"""Serving's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_serving import access, api
from mloop_serving.bootstrap import bootstrap
from mloop_serving.config import ServingSettings
from mloop_serving.fastpath import FastPath


def create_app(settings: ServingSettings) -> FastAPI:
    app = service_app(
        settings,
        bootstrap=bootstrap,
        router=api.router,
        rules=access.RULES,
        max_body_bytes=settings.max_body_bytes,
        inner=[FastPath],  # the predict routes' common requests, answered without FastAPI's machinery
        description="Predictions from the production version of each model (simple JSON API and "
        "Open Inference Protocol v2), and ground-truth feedback.",
    )
    api.configure_oip(app)
    return app
