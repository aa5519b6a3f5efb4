"""The validator's composition root: adapters built from settings, handed to the handlers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.bus import route
from mloop_common.clients import RegistryClient
from mloop_common.events import DataPublished, ModelTrained
from mloop_common.runtime import Runtime
from mloop_common.uow import Store
from mloop_validator.config import ValidatorSettings
from mloop_validator.handlers import Validator
from mloop_validator.infra import CleanProcessCheck
from mloop_validator.store import SqlValidatorUnit, ValidatorUnit


@dataclass(frozen=True)
class ValidatorService:
    """What the routes use."""

    store: Store[ValidatorUnit]
    validator: Validator


@asynccontextmanager
async def bootstrap(settings: ValidatorSettings, app: FastAPI) -> AsyncIterator[ValidatorService]:
    """Build the database, bus, registry client and artifact store; consume model.trained (and data.published)."""
    runtime = Runtime(settings, migrations="mloop_validator:migrations")
    registry = RegistryClient(settings.common.registry_url, key=settings.own_key)
    store = runtime.store(SqlValidatorUnit)
    infra_check = CleanProcessCheck(settings.infra_python, settings.infra_timeout_seconds)
    validator = Validator(store=store, registry=registry, artifacts=runtime.artifacts, infra_check=infra_check)
    runtime.consume(route(ModelTrained, validator.on_model_trained))
    # Where each published version's snapshot is, for specs that pin an evaluation set; a group of its own, so a
    # long evaluation never delays it.
    runtime.consume(route(DataPublished, validator.on_data_published), group_suffix="-data")
    infra_check.start()  # the first check's process imports while the service starts
    await runtime.start(app)
    try:
        yield ValidatorService(store=store, validator=validator)
    finally:
        await runtime.stop()
        await registry.aclose()
        await infra_check.close()
