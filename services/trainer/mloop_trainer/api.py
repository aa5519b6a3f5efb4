"""Trainer HTTP routes: they translate requests into store reads and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from mloop_common.artifact_refs import REFERENCES_PATH, ArtifactReferences
from mloop_common.http import components
from mloop_trainer.bootstrap import TrainerService
from mloop_trainer.entities import ActiveRun, Run, RunList
from mloop_trainer.reproduce import Reproduction

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
async def get_run(service: Service, run_id: Annotated[str, Path(max_length=64)]) -> Run | ActiveRun:
    """One run: while it trains, its progress (``status: training``, trials done of total, stage); once
    finished, its params, CV scores of every candidate, timings, data and code versions, artifacts."""
    active = service.trainer.active_run(run_id)
    if active is not None:
        return active
    async with service.store.transaction() as unit:
        return await unit.run(run_id)


@router.get(REFERENCES_PATH, tags=["artifacts"])
async def artifact_references(service: Service) -> ArtifactReferences:
    """The artifacts the trainer needs kept (artifact retention): the newest snapshot and contract of each dataset,
    and every succeeded run's inputs and outputs (a recorded run can be reproduced)."""
    async with service.store.transaction() as unit:
        return await unit.artifact_references()


@router.post("/v1/runs/{run_id}/reproduce")
async def reproduce_run(service: Service, run_id: Annotated[str, Path(max_length=64)]) -> Reproduction:
    """Train a succeeded run again from its recorded inputs (dataset and recent-data snapshots by sha256, spec
    version, seed) and compare: model choice, parameters, scores, held-out predictions, library and code versions.
    Answers when the training is done; 409 for a failed run or one recorded without its inputs' locations."""
    return await service.trainer.reproduce(run_id)
