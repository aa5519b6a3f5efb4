"""The validator's store in memory, and an infra check that needs no fresh process, for handler tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd

from mloop_common.errors import Conflict, NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_validator.entities import DatasetVersion, Evaluation
from mloop_validator.infra import InfraReport


class MemoryValidatorUnit(MemoryUnit):
    @property
    def _evaluations(self) -> dict[str, Evaluation]:
        return self.tables.setdefault("evaluations", {})

    async def add_evaluation(self, evaluation: Evaluation) -> None:
        if any(e.run_id == evaluation.run_id for e in self._evaluations.values()):
            raise Conflict(f"run {evaluation.run_id} already has a verdict", field="run_id")
        self._evaluations[evaluation.id] = evaluation

    async def evaluation_of_run(self, run_id: str) -> Evaluation | None:
        return next((e for e in self._evaluations.values() if e.run_id == run_id), None)

    async def settle(self, evaluation_id: str, registered_version: int | None, at: datetime) -> None:
        settled = {"registered_version": registered_version, "settled_at": at}
        self._evaluations[evaluation_id] = self._evaluations[evaluation_id].model_copy(update=settled)

    async def evaluation(self, evaluation_id: str) -> Evaluation:
        if evaluation_id not in self._evaluations:
            raise NotFound(f"evaluation {evaluation_id!r} does not exist")
        return self._evaluations[evaluation_id]

    async def evaluations(self, model: str | None, limit: int) -> list[Evaluation]:
        found = [e for e in reversed(self._evaluations.values()) if model in (None, e.model)]
        return found[:limit]

    async def remember_dataset(self, dataset: DatasetVersion) -> None:
        self.tables.setdefault("datasets", {}).setdefault((dataset.name, dataset.version), dataset)

    async def dataset_version(self, name: str, version: int) -> DatasetVersion | None:
        found: DatasetVersion | None = self.tables.get("datasets", {}).get((name, version))
        return found


def memory_store() -> MemoryStore[MemoryValidatorUnit]:
    return MemoryStore(MemoryValidatorUnit, consumer="mloop-validator")


class InfraVerdict:
    """An infra check that answers ``error`` (None: the artifact loaded alike) and remembers what it saw."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.checked: list[int] = []

    async def __call__(self, artifact: bytes, model: Any, sample: pd.DataFrame) -> InfraReport:
        self.checked.append(len(sample))
        return InfraReport(error=self.error, load_seconds=0.01, rows=len(sample))
