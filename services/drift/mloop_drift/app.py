"""Drift's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_drift import access, api
from mloop_drift.bootstrap import bootstrap
from mloop_drift.config import DriftSettings


def create_app(settings: DriftSettings) -> FastAPI:
    return service_app(
        settings,
        bootstrap=bootstrap,
        router=api.router,
        rules=access.RULES,
        description="Watches predictions and labels per model version; reports drift.",
    )
