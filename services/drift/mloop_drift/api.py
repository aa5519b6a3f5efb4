"""Drift HTTP routes: they translate requests into store reads and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from mloop_common.errors import NotFound
from mloop_common.http import components
from mloop_drift.bootstrap import DriftService
from mloop_drift.entities import Observation, Report, ReportList
from mloop_drift.histograms import WindowHistograms, window_histograms

router = APIRouter(tags=["drift"])
Service = Annotated[DriftService, Depends(components)]


@router.get("/v1/drift/{model}/reports")
async def list_reports(service: Service, model: str, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> ReportList:
    """Window reports of a model, newest window first, each at its latest revision (summary fields)."""
    async with service.store.transaction() as unit:
        return ReportList(reports=await unit.reports(model, limit))


@router.get("/v1/drift/{model}/reports/{report_id}")
async def get_report(service: Service, model: str, report_id: str) -> Report:
    """One window report (a revision) with per-feature tests, data quality, performance and the window's revisions."""
    async with service.store.transaction() as unit:
        return await unit.report(model, report_id)


# A window is a few hundred rows by count; a time window may hold many more: its newest rows stand for it.
HISTOGRAM_ROWS = 20_000


@router.get("/v1/drift/{model}/reports/{report_id}/histograms")
async def get_histograms(service: Service, model: str, report_id: str) -> WindowHistograms:
    """Each feature's distribution in the report's window next to the reference (the training data's profile).

    Numeric bins are the reference's deciles, plus a bin below and one above its range when current values
    fall there. ``rows`` is 0 once retention removed the window's predictions (the reference is still shown)."""
    async with service.store.transaction() as unit:
        report = await unit.report(model, report_id)
        watched = await unit.monitored(model, report.version)
        if watched is None:
            raise NotFound(f"version {report.version} of model {model!r} has no reference profile here")
        rows = await unit.window_rows(model, report.version, report.window_index, HISTOGRAM_ROWS)
    return window_histograms(model, report.version, report.window_index, watched.profile, (r.inputs for r in rows))


@router.get("/v1/predictions/{request_id}", tags=["lineage"])
async def get_prediction(service: Service, request_id: Annotated[str, Path(max_length=100)]) -> Observation:
    """One logged prediction: the model version that answered, its inputs and output, and its label once given.

    The first hop of a prediction's lineage (``mloop lineage REQUEST_ID``); kept as long as drift keeps
    its observations. Shadow predictions are not kept."""
    async with service.store.transaction() as unit:
        return await unit.observation(request_id)
