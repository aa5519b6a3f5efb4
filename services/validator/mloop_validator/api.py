"""Validator HTTP routes: they translate requests into store reads and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse

from mloop_common.http import components
from mloop_validator.bootstrap import ValidatorService
from mloop_validator.entities import Evaluation, EvaluationList
from mloop_validator.report_page import render

router = APIRouter(tags=["evaluations"])
Service = Annotated[ValidatorService, Depends(components)]


@router.get("/v1/evaluations")
async def list_evaluations(
    service: Service,
    model: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> EvaluationList:
    """Evaluations, newest first."""
    async with service.store.transaction() as unit:
        return EvaluationList(evaluations=await unit.evaluations(model, limit))


@router.get("/v1/evaluations/{evaluation_id}")
async def get_evaluation(service: Service, evaluation_id: Annotated[str, Path(max_length=64)]) -> Evaluation:
    """One evaluation: candidate and champion metrics, slices, decision and reasons."""
    async with service.store.transaction() as unit:
        return await unit.evaluation(evaluation_id)


# The page has no scripts and loads nothing: a policy that forbids both keeps it that way.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"


@router.get("/v1/evaluations/{evaluation_id}/report.html", response_class=HTMLResponse)
async def evaluation_page(service: Service, evaluation_id: Annotated[str, Path(max_length=64)]) -> HTMLResponse:
    """One evaluation as an HTML page: checks, metrics against the champion, slices, calibration curve,
    robustness, fairness and profile."""
    async with service.store.transaction() as unit:
        evaluation = await unit.evaluation(evaluation_id)
    return HTMLResponse(
        render(evaluation),
        headers={"Content-Security-Policy": PAGE_POLICY, "X-Content-Type-Options": "nosniff"},
    )
