"""Drift's report routes over the in-memory store: the paths, fields and statuses clients rely on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
from fastapi import FastAPI

from mloop_common.http import create_app
from mloop_common.testing import ADMIN_HEADERS, MemoryStore
from mloop_drift import api
from mloop_drift.bootstrap import DriftService
from mloop_drift.entities import Label, Prediction, Report

from .fakes import MemoryDriftUnit, memory_store

SUMMARY_FIELDS = {
    "id",
    "model",
    "version",
    "window_index",
    "revision",
    "drift_detected",
    "cause",
    "action",
    "emitted",
    "held_for",
    "basis",
    "label_coverage",
    "summary",
    "created_at",
    "updated_at",
}


@asynccontextmanager
async def no_lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


def report(window: int, revision: int = 1) -> Report:
    return Report(
        id=f"report-{window}" + (f"-r{revision}" if revision > 1 else ""),
        model="churn",
        version=1,
        window_index=window,
        revision=revision,
        drift_detected=window == 2,
        cause="covariate_shift" if window == 2 else None,
        action="retrain" if window == 2 else None,
        emitted=window == 2,
        summary="...",
        report={"n_rows": 100, "drifted_features": ["x1"] if window == 2 else []},
        created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=window, seconds=revision),
    )


async def client_with(*reports: Report, store: MemoryStore[MemoryDriftUnit] | None = None) -> httpx.AsyncClient:
    store = store or memory_store()
    async with store.transaction() as unit:
        for r in reports:
            await unit.add_report(r)
    app = create_app(service="drift", lifespan=no_lifespan)
    app.include_router(api.router)
    app.state.service = DriftService(store=store)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS)


async def test_reports_are_listed_newest_first_with_their_summary_fields() -> None:
    async with await client_with(report(1), report(2)) as client:
        response = await client.get("/v1/drift/churn/reports", params={"limit": 10})

    assert response.status_code == 200
    listed = response.json()["reports"]
    assert [r["id"] for r in listed] == ["report-2", "report-1"]
    assert set(listed[0]) == SUMMARY_FIELDS
    assert listed[0]["cause"] == "covariate_shift" and listed[0]["emitted"] is True


async def test_an_unknown_model_has_no_reports() -> None:
    async with await client_with(report(1)) as client:
        response = await client.get("/v1/drift/other/reports")

    assert response.status_code == 200 and response.json() == {"reports": []}


async def test_one_report_carries_its_evidence() -> None:
    async with await client_with(report(1), report(2)) as client:
        response = await client.get("/v1/drift/churn/reports/report-2")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == SUMMARY_FIELDS | {"report", "revisions"}
    assert body["report"] == {"n_rows": 100, "drifted_features": ["x1"]}
    assert [r["id"] for r in body["revisions"]] == ["report-2"]


async def test_the_list_shows_each_window_once_at_its_latest_revision_and_a_report_lists_its_revisions() -> None:
    async with await client_with(report(1), report(2), report(1, revision=2)) as client:
        listed = (await client.get("/v1/drift/churn/reports")).json()["reports"]
        first = (await client.get("/v1/drift/churn/reports/report-1")).json()

    assert [(r["window_index"], r["revision"]) for r in listed] == [(2, 1), (1, 2)]
    assert [(r["id"], r["revision"]) for r in first["revisions"]] == [("report-1", 1), ("report-1-r2", 2)]
    assert set(first["revisions"][0]) == {
        "id",
        "revision",
        "cause",
        "action",
        "emitted",
        "basis",
        "label_coverage",
        "created_at",
    }


async def test_an_unknown_report_is_not_found() -> None:
    async with await client_with(report(1)) as client:
        response = await client.get("/v1/drift/churn/reports/nope")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_the_routes_are_documented_with_their_response_models() -> None:
    async with await client_with() as client:
        schema = (await client.get("/openapi.json")).json()

    listed = schema["paths"]["/v1/drift/{model}/reports"]["get"]
    single = schema["paths"]["/v1/drift/{model}/reports/{report_id}"]["get"]
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ReportList")
    assert single["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Report")
    assert single["summary"] and single["description"].startswith("One window report")


async def test_a_logged_prediction_is_found_by_its_request_id_with_the_version_that_answered() -> None:
    store = memory_store()
    logged_at = datetime(2026, 1, 2, tzinfo=UTC)
    async with store.transaction() as unit:
        await unit.record_predictions(
            "churn", 3, [Prediction(request_id="req-1", logged_at=logged_at, inputs={"x1": 1.0}, prediction="yes")]
        )
        await unit.record_labels("churn", [Label(request_id="req-1", label="no", labelled_at=logged_at)])
        await unit.record_labels("churn", [Label(request_id="label-only", label="no", labelled_at=logged_at)])

    async with await client_with(store=store) as client:
        found = await client.get("/v1/predictions/req-1")
        label_only = await client.get("/v1/predictions/label-only")
        unknown = await client.get("/v1/predictions/nope")

    assert found.status_code == 200
    assert {k: found.json()[k] for k in ("model", "version", "prediction", "label")} == {
        "model": "churn",
        "version": 3,
        "prediction": "yes",
        "label": "no",
    }
    assert label_only.status_code == 404 and unknown.status_code == 404
