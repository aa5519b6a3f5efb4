"""The trainer's store in memory, and an executor that runs jobs in place, for handler tests."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from mloop_common.errors import NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_trainer.entities import DatasetRef, Run

T = TypeVar("T")


class MemoryTrainerUnit(MemoryUnit):
    @property
    def _datasets(self) -> dict[str, DatasetRef]:
        return self.tables.setdefault("datasets", {})

    @property
    def _runs(self) -> dict[str, Run]:
        return self.tables.setdefault("runs", {})

    async def remember_dataset(self, dataset: DatasetRef) -> None:
        known = self._datasets.get(dataset.name)
        if known is None or known.version < dataset.version:
            self._datasets[dataset.name] = dataset

    async def latest_dataset(self, name: str) -> DatasetRef:
        if name not in self._datasets:
            raise NotFound(f"no version of dataset {name!r} has been published yet")
        return self._datasets[name]

    async def add_run(self, run: Run) -> None:
        if any((r.trigger_event_id, r.model) == (run.trigger_event_id, run.model) for r in self._runs.values()):
            raise AssertionError(f"{run.model} trained twice for event {run.trigger_event_id} (unique in the table)")
        self._runs[run.run_id] = run

    async def run(self, run_id: str) -> Run:
        if run_id not in self._runs:
            raise NotFound(f"run {run_id!r} does not exist", field="run_id")
        return self._runs[run_id]

    async def runs(self, model: str | None, limit: int) -> list[Run]:
        found = [r for r in reversed(self._runs.values()) if model in (None, r.model)]
        return sorted(found, key=lambda r: r.finished_at, reverse=True)[:limit]


def memory_store() -> MemoryStore[MemoryTrainerUnit]:
    return MemoryStore(MemoryTrainerUnit, consumer="mloop-trainer")


class InlineExecutor(Executor):
    """Runs each job where it is submitted: a real training job, without worker processes."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future
