"""Validator HTTP routes: they translate requests into store reads and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from mloop_common.http import components
from mloop_validator.bootstrap import ValidatorService
from mloop_validator.entities import Evaluation, EvaluationList

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
