"""Drift's store in memory, for handler tests: the same upsert and window rules as the SQL queries."""

from __future__ import annotations

from collections.abc import Sequence

from mloop_common.errors import NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_drift.cooldown import CooldownState
from mloop_drift.entities import Label, MonitoredVersion, Observation, OpenWindow, Prediction, Report, ReportSummary


class MemoryDriftUnit(MemoryUnit):
    @property
    def _monitored(self) -> dict[tuple[str, int], MonitoredVersion]:
        return self.tables.setdefault("monitored_versions", {})

    @property
    def _observations(self) -> dict[str, Observation]:
        return self.tables.setdefault("observations", {})

    @property
    def _reports(self) -> dict[str, Report]:
        return self.tables.setdefault("reports", {})

    async def add_monitored(self, monitored_version: MonitoredVersion) -> None:
        key = (monitored_version.model, monitored_version.version)
        existing = self._monitored.get(key)
        if existing is None:
            self._monitored[key] = monitored_version
        else:
            self._monitored[key] = existing.model_copy(update={"retired": False})
        for (model, version), other in self._monitored.items():
            if model == monitored_version.model and version != monitored_version.version:
                self._monitored[(model, version)] = other.model_copy(update={"retired": True})

    async def lock_monitored(self, model: str, version: int) -> MonitoredVersion | None:
        return self._monitored.get((model, version))

    async def advance(self, model: str, version: int, *, next_window: int, cooldown: CooldownState) -> None:
        current = self._monitored[(model, version)]
        self._monitored[(model, version)] = current.model_copy(
            update={"next_window": next_window, "cooldown": cooldown}
        )

    async def record_predictions(self, model: str, version: int, predictions: Sequence[Prediction]) -> None:
        for p in predictions:
            existing = self._observations.get(p.request_id)
            if existing is None:
                self._observations[p.request_id] = Observation(model=model, version=version, **p.model_dump())
            elif existing.logged_at is None:
                self._observations[p.request_id] = existing.model_copy(update={"version": version, **p.model_dump()})

    async def record_labels(self, model: str, labels: Sequence[Label]) -> None:
        for label in labels:
            existing = self._observations.get(label.request_id)
            if existing is None:
                self._observations[label.request_id] = Observation(model=model, **label.model_dump())
            else:
                self._observations[label.request_id] = existing.model_copy(update=label.model_dump())

    def _open(self, model: str, version: int) -> list[Observation]:
        found = [
            o
            for o in self._observations.values()
            if o.model == model and o.version == version and o.window_index is None and o.logged_at is not None
        ]
        return sorted(found, key=lambda o: (o.logged_at, o.request_id))

    async def open_versions(self, model: str) -> list[int]:
        return sorted(
            {
                o.version
                for o in self._observations.values()
                if o.model == model and o.version is not None and o.window_index is None and o.logged_at is not None
            }
        )

    async def open_window(self, model: str, version: int, size: int) -> OpenWindow:
        pending = self._open(model, version)
        return OpenWindow(total=len(pending), labelled=sum(o.label is not None for o in pending[:size]))

    async def take_window(self, model: str, version: int, size: int, index: int) -> list[Observation]:
        taken = [o.model_copy(update={"window_index": index}) for o in self._open(model, version)[:size]]
        self._observations.update({o.request_id: o for o in taken})
        return taken

    async def count_labelled(self, model: str, version: int) -> int:
        return sum(
            o.model == model and o.version == version and o.labelled_at is not None and o.logged_at is not None
            for o in self._observations.values()
        )

    async def recent_labelled(self, model: str, limit: int) -> list[Observation]:
        labelled = [
            o
            for o in self._observations.values()
            if o.model == model and o.labelled_at is not None and o.logged_at is not None
        ]
        return sorted(labelled, key=lambda o: (o.logged_at, o.request_id))[-limit:]

    async def add_report(self, report: Report) -> None:
        window = (report.model, report.version, report.window_index)
        if any((r.model, r.version, r.window_index) == window for r in self._reports.values()):
            raise AssertionError(f"window {window} reported twice (unique in the real table)")
        self._reports[report.id] = report

    async def report(self, model: str, report_id: str) -> Report:
        found = self._reports.get(report_id)
        if found is None or found.model != model:
            raise NotFound(f"drift report {report_id!r} of model {model!r} does not exist")
        return found

    async def reports(self, model: str, limit: int) -> list[ReportSummary]:
        newest_first = sorted(
            (r for r in self._reports.values() if r.model == model), key=lambda r: r.created_at, reverse=True
        )
        return [ReportSummary.model_validate(r.model_dump(exclude={"report"})) for r in newest_first[:limit]]


def memory_store() -> MemoryStore[MemoryDriftUnit]:
    return MemoryStore(MemoryDriftUnit, consumer="mloop-drift")
