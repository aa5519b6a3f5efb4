"""The trainer's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_trainer import access, api
from mloop_trainer.bootstrap import bootstrap
from mloop_trainer.config import TrainerSettings


def create_app(settings: TrainerSettings) -> FastAPI:
    return service_app(
        settings,
        bootstrap=bootstrap,
        router=api.router,
        rules=access.RULES,
        description="Trains every model spec on new dataset versions and on drift; lists runs.",
    )
