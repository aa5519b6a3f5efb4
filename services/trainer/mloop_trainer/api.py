"""Trainer HTTP routes: they translate requests into store reads and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from mloop_common.http import components
from mloop_trainer.bootstrap import TrainerService
from mloop_trainer.entities import Run, RunList

router = APIRouter(tags=["runs"])
Service = Annotated[TrainerService, Depends(components)]


@router.get("/v1/runs")
async def list_runs(
    service: Service,
    model: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    """Finished training runs, newest first (no candidate list), and the runs training right now."""
    async with service.store.transaction() as unit:
        runs = await unit.runs(model, limit)
    return RunList(runs=[run.summary() for run in runs], training=service.trainer.training(model))


@router.get("/v1/runs/{run_id}")
async def get_run(service: Service, run_id: str) -> Run:
    """One run: params, CV scores of every candidate, timings, data and code versions, artifacts."""
    async with service.store.transaction() as unit:
        return await unit.run(run_id)
