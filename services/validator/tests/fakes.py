"""The validator's store in memory, for handler tests."""

from __future__ import annotations

from mloop_common.errors import NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_validator.entities import Evaluation


class MemoryValidatorUnit(MemoryUnit):
    @property
    def _evaluations(self) -> dict[str, Evaluation]:
        return self.tables.setdefault("evaluations", {})

    async def add_evaluation(self, evaluation: Evaluation) -> None:
        if any(e.run_id == evaluation.run_id for e in self._evaluations.values()):
            raise AssertionError(f"run {evaluation.run_id} evaluated twice (unique in the real table)")
        self._evaluations[evaluation.id] = evaluation

    async def evaluation(self, evaluation_id: str) -> Evaluation:
        if evaluation_id not in self._evaluations:
            raise NotFound(f"evaluation {evaluation_id!r} does not exist")
        return self._evaluations[evaluation_id]

    async def evaluations(self, model: str | None, limit: int) -> list[Evaluation]:
        found = [e for e in reversed(self._evaluations.values()) if model in (None, e.model)]
        return found[:limit]


def memory_store() -> MemoryStore[MemoryValidatorUnit]:
    return MemoryStore(MemoryValidatorUnit, consumer="mloop-validator")
