"""The validator's HTTP routes in-process, over the fake store: evaluations as JSON and as an HTML page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_common.testing import ADMIN_HEADERS, FakeRegistry
from mloop_validator import access, api
from mloop_validator.bootstrap import ValidatorService
from mloop_validator.config import ValidatorSettings
from mloop_validator.entities import CheckResult, Evaluation, SlicePair
from mloop_validator.handlers import Validator
from mloop_validator.report_page import render

from .fakes import memory_store
from .test_handlers import good_model, poor_model, spec, trained_event, validator


@asynccontextmanager
async def serving(handler: Validator) -> AsyncIterator[httpx.AsyncClient]:
    @asynccontextmanager
    async def fake_bootstrap(settings: ValidatorSettings, app: FastAPI) -> AsyncIterator[ValidatorService]:
        yield ValidatorService(store=handler.store, validator=handler)

    app = service_app(
        ValidatorSettings(), bootstrap=fake_bootstrap, router=api.router, rules=access.RULES, description="tests"
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS
        ) as http,
    ):
        yield http


async def test_a_rejected_evaluation_reads_as_a_page_with_its_failed_checks_and_charts(artifacts):
    registry = FakeRegistry()
    registry.add_spec(spec(slices=["x1"]))
    handler = validator(memory_store(), registry, artifacts)
    await handler.on_model_trained(*trained_event(artifacts, good_model()))
    await handler.on_model_trained(*trained_event(artifacts, poor_model()))

    async with serving(handler) as client:
        listed = (await client.get("/v1/evaluations", params={"model": "churn"})).json()["evaluations"]
        rejected = next(e for e in listed if e["decision"] == "rejected")
        page = await client.get(f"/v1/evaluations/{rejected['id']}/report.html")
        missing = await client.get("/v1/evaluations/no-such-id/report.html")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none' forbids scripts
    assert "default-src 'none'" in page.headers["content-security-policy"]
    html = page.text
    assert "rejected" in html and "FAIL" in html and "champion v1" in html
    assert html.count("<svg") >= 3  # metrics, the slice column x1, the calibration curve
    assert "Expected calibration error" in html and "brier" in html
    assert missing.status_code == 404


def test_values_from_users_are_escaped_on_the_page():
    hostile = "<script>alert(1)</script>"
    evaluation = Evaluation(
        id="e1",
        model="churn",
        run_id="r1",
        decision="rejected",
        reasons=[f"slice {hostile} regressed"],
        metric="accuracy",
        candidate_metrics={"accuracy": 0.8},
        champion_version=1,
        champion_metrics={"accuracy": 0.9},
        slices=SlicePair(
            candidate={"plan": {hostile: {"rows": 40, "value": 0.5}}},
            champion={"plan": {hostile: {"rows": 40, "value": 0.9}}},
        ),
        registered_version=None,
        holdout_rows=80,
        checks=[CheckResult(name=f"slice.plan={hostile}", passed=False, message="regressed", value=-0.4, bound=-0.05)],
        report={"calibration": {"ece": 0.12, "curve": [{"predicted": 0.2, "observed": 0.4, "rows": 10}]}},
    )

    html = render(evaluation)

    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<polyline" in html and "0.12" in html
