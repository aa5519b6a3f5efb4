"""The validator's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_validator import access, api
from mloop_validator.bootstrap import bootstrap
from mloop_validator.config import ValidatorSettings


def create_app(settings: ValidatorSettings) -> FastAPI:
    return service_app(
        settings,
        bootstrap=bootstrap,
        router=api.router,
        rules=access.RULES,
        description="Evaluates each trained candidate against the production model.",
    )
