"""Deny by default, on every route of every service: 401 without a key, 403 with a key of the wrong role."""

from __future__ import annotations

import importlib

import pytest

from mloop_common.settings import ServiceSettings
from mloop_common.testing import access_problems

SERVICES = ["ingest", "trainer", "validator", "registry", "serving", "drift", "ui"]


@pytest.mark.parametrize("service", SERVICES)
async def test_every_route_refuses_a_caller_without_a_key_or_with_the_wrong_role(service: str) -> None:
    app_module = importlib.import_module(f"mloop_{service}.app")
    config = importlib.import_module(f"mloop_{service}.config")
    [settings_class] = [
        value
        for value in vars(config).values()
        if isinstance(value, type) and issubclass(value, ServiceSettings) and value is not ServiceSettings
    ]
    app = app_module.create_app(settings_class())

    assert await access_problems(app) == []
