"""The registry's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_registry import access, api
from mloop_registry.bootstrap import bootstrap
from mloop_registry.config import RegistrySettings


def create_app(settings: RegistrySettings) -> FastAPI:
    return service_app(
        settings,
        bootstrap=bootstrap,
        router=api.router,
        rules=access.RULES,
        description="Model specs, versions, aliases, approvals, lineage and the audit log.",
    )
