"""The trainer's store in memory, and workers that run jobs in place (or fail them), for handler tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.errors import NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_trainer import workers
from mloop_trainer.entities import DatasetRef, Run, TrainedDetails
from mloop_trainer.workers import Budget, JobFailed, ProgressSink

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

    async def has_trained(self, model: str, spec_version: int, dataset_version: int) -> bool:
        return any(
            (r.model, r.spec_version, r.dataset_version, r.recent_data_sha256)
            == (model, spec_version, dataset_version, None)
            for r in self._runs.values()
        )

    async def run(self, run_id: str) -> Run:
        if run_id not in self._runs:
            raise NotFound(f"run {run_id!r} does not exist", field="run_id")
        return self._runs[run_id]

    async def runs(self, model: str | None, limit: int) -> list[Run]:
        found = [r for r in reversed(self._runs.values()) if model in (None, r.model)]
        return sorted(found, key=lambda r: r.finished_at, reverse=True)[:limit]

    async def artifact_references(self) -> ArtifactReferences:
        uris: list[str | None] = []
        for dataset in self._datasets.values():
            uris += [dataset.snapshot_uri, dataset.contract_uri]
        for run in self._runs.values():
            if isinstance(run.details, TrainedDetails):
                uris += [run.dataset_uri, run.recent_data_uri]
                uris += [run.details.artifact.uri, run.details.profile.uri, run.details.holdout.uri]
        return ArtifactReferences.of("trainer", uris)


def memory_store() -> MemoryStore[MemoryTrainerUnit]:
    return MemoryStore(MemoryTrainerUnit, consumer="mloop-trainer")


class InlineWorkers:
    """Runs each job where it is submitted: a real training job, without worker processes."""

    def __init__(self) -> None:
        self.budgets: list[Budget] = []

    async def run(self, budget: Budget, fn: Callable[..., T], /, *args: Any, progress: ProgressSink | None = None) -> T:
        self.budgets.append(budget)
        workers.progress_sink = progress
        try:
            return fn(*args)
        finally:
            workers.progress_sink = None

    def close(self) -> None:
        pass


class FailingWorkers(InlineWorkers):
    """Workers whose next jobs fail as given (e.g. the OOM killer), then run normally."""

    def __init__(self, *failures: JobFailed) -> None:
        super().__init__()
        self.failures = list(failures)

    async def run(self, budget: Budget, fn: Callable[..., T], /, *args: Any, progress: ProgressSink | None = None) -> T:
        if self.failures:
            self.budgets.append(budget)
            raise self.failures.pop(0)
        return await super().run(budget, fn, *args, progress=progress)


class GatedWorkers(InlineWorkers):
    """Runs jobs on a thread once ``gate`` is set, so a test can look at a run while it is being fitted."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    async def run(self, budget: Budget, fn: Callable[..., T], /, *args: Any, progress: ProgressSink | None = None) -> T:
        def gated() -> T:
            self.gate.wait(timeout=60)
            workers.progress_sink = progress
            try:
                return fn(*args)
            finally:
                workers.progress_sink = None

        return await asyncio.to_thread(gated)

    def close(self) -> None:
        self.gate.set()


class PausingWorkers(InlineWorkers):
    """Runs each job on a thread and holds it just after it reports its first trial done, until ``resume``."""

    def __init__(self) -> None:
        super().__init__()
        self.paused = threading.Event()
        self.resume = threading.Event()

    async def run(self, budget: Budget, fn: Callable[..., T], /, *args: Any, progress: ProgressSink | None = None) -> T:
        def sink(value: Any) -> None:
            if progress is not None:
                progress(value)
            if value.trials_done >= 1 and not self.paused.is_set():
                self.paused.set()
                self.resume.wait(timeout=60)

        def job() -> T:
            workers.progress_sink = sink
            try:
                return fn(*args)
            finally:
                workers.progress_sink = None

        return await asyncio.to_thread(job)

    def close(self) -> None:
        self.resume.set()
