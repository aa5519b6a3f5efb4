"""Drift's store in memory, for handler tests: the same upsert, window and revision rules as the SQL queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from mloop_common.errors import NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_drift.cooldown import CooldownState
from mloop_drift.entities import Label, MonitoredVersion, Observation, Prediction, Report, ReportSummary, Revision
from mloop_drift.retention import observation_purgeable, report_purgeable


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

    async def mark_retrain(self, model: str, version: int, at: datetime | None) -> None:
        current = self._monitored[(model, version)]
        self._monitored[(model, version)] = current.model_copy(update={"retrain_requested_at": at})

    async def watch_only(self, model: str, version: int) -> bool:
        if (model, version) not in self._monitored:
            return False
        for key, other in self._monitored.items():
            if key[0] == model:
                self._monitored[key] = other.model_copy(update={"retired": key[1] != version})
        return True

    async def lock_monitored(self, model: str, version: int) -> MonitoredVersion | None:
        return self._monitored.get((model, version))

    async def monitored(self, model: str, version: int) -> MonitoredVersion | None:
        return self._monitored.get((model, version))

    async def advance(
        self, model: str, version: int, *, next_window: int, cooldown: CooldownState, window_fill: int | None = None
    ) -> None:
        current = self._monitored[(model, version)]
        update = {"next_window": next_window, "cooldown": cooldown}
        if window_fill is not None:
            update["window_fill"] = window_fill
        self._monitored[(model, version)] = current.model_copy(update=update)

    async def record_predictions(self, model: str, version: int, predictions: Sequence[Prediction]) -> None:
        for p in predictions:
            existing = self._observations.get(p.request_id)
            if existing is None:
                self._observations[p.request_id] = Observation(model=model, version=version, **p.model_dump())
            elif existing.logged_at is None:
                self._observations[p.request_id] = existing.model_copy(update={"version": version, **p.model_dump()})

    async def already_logged(self, request_ids: Sequence[str]) -> set[str]:
        return {r for r in request_ids if (o := self._observations.get(r)) is not None and o.logged_at is not None}

    async def record_labels(self, model: str, labels: Sequence[Label]) -> None:
        for label in labels:
            existing = self._observations.get(label.request_id)
            if existing is None:
                self._observations[label.request_id] = Observation(model=model, **label.model_dump())
            else:
                self._observations[label.request_id] = existing.model_copy(update=label.model_dump())

    async def observation(self, request_id: str) -> Observation:
        found = self._observations.get(request_id)
        if found is None or found.logged_at is None:
            raise NotFound(f"no prediction with request id {request_id!r} was logged", field="request_id")
        return found

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

    async def open_rows(self, model: str, version: int) -> list[Observation]:
        return self._open(model, version)

    async def place_in_windows(self, model: str, version: int, windows: Mapping[str, int]) -> None:
        for request_id, index in windows.items():
            row = self._observations[request_id]
            if row.model == model and row.version == version and row.window_index is None:
                self._observations[request_id] = row.model_copy(update={"window_index": index})

    async def window_rows(self, model: str, version: int, index: int, limit: int) -> list[Observation]:
        rows = [
            o
            for o in self._observations.values()
            if (o.model, o.version, o.window_index) == (model, version, index) and o.logged_at is not None
        ]
        return sorted(rows, key=lambda o: (o.logged_at, o.request_id))[-limit:]

    async def windows_of(self, model: str, request_ids: Sequence[str]) -> list[tuple[int, int]]:
        found = {
            (o.version, o.window_index)
            for r in request_ids
            if (o := self._observations.get(r)) is not None
            and o.model == model
            and o.version is not None
            and o.window_index is not None
        }
        return sorted(found)  # type: ignore[arg-type]

    async def unjudged_windows(self, model: str, version: int, before: int) -> list[int]:
        judged = {r.window_index for r in self._reports.values() if (r.model, r.version) == (model, version)}
        return sorted(
            {
                o.window_index
                for o in self._observations.values()
                if o.model == model
                and o.version == version
                and o.window_index is not None
                and o.window_index < before
                and o.window_index not in judged
            }
        )

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
        revision = (report.model, report.version, report.window_index, report.revision)
        if any((r.model, r.version, r.window_index, r.revision) == revision for r in self._reports.values()):
            raise AssertionError(f"revision {revision} reported twice (unique in the real table)")
        self._reports[report.id] = report

    async def update_report(self, report: Report) -> None:
        assert report.id in self._reports, "only a kept revision can be refreshed"
        self._reports[report.id] = report

    def _window(self, model: str, version: int, index: int) -> list[Report]:
        found = [r for r in self._reports.values() if (r.model, r.version, r.window_index) == (model, version, index)]
        return sorted(found, key=lambda r: r.revision)

    async def latest_report(self, model: str, version: int, index: int) -> Report | None:
        history = self._window(model, version, index)
        return history[-1] if history else None

    async def report(self, model: str, report_id: str) -> Report:
        found = self._reports.get(report_id)
        if found is None or found.model != model:
            raise NotFound(f"drift report {report_id!r} of model {model!r} does not exist")
        history = self._window(model, found.version, found.window_index)
        revisions = [Revision.model_validate(r.model_dump()) for r in history]
        return found.model_copy(update={"revisions": revisions})

    async def reports(self, model: str, limit: int) -> list[ReportSummary]:
        latest: dict[tuple[int, int], Report] = {}
        for r in self._reports.values():
            key = (r.version, r.window_index)
            if r.model == model and (key not in latest or latest[key].revision < r.revision):
                latest[key] = r
        newest_first = sorted(latest.values(), key=lambda r: (r.version, r.window_index), reverse=True)
        return [
            ReportSummary.model_validate(r.model_dump(exclude={"report", "revisions"})) for r in newest_first[:limit]
        ]

    async def purge_observations(self, cutoff: datetime, limit: int) -> int:
        chosen = [
            o.request_id
            for o in self._observations.values()
            if observation_purgeable(
                o,
                self._window(o.model, o.version or 0, o.window_index) if o.window_index is not None else [],
                watched=(m := self._monitored.get((o.model, o.version or 0))) is not None and not m.retired,
                cutoff=cutoff,
            )
        ][:limit]
        for request_id in chosen:
            del self._observations[request_id]
        return len(chosen)

    async def purge_reports(self, cutoff: datetime, limit: int) -> int:
        chosen = [
            r.id
            for r in self._reports.values()
            if report_purgeable(
                r,
                self._window(r.model, r.version, r.window_index),
                rows_left=any(
                    (o.model, o.version, o.window_index) == (r.model, r.version, r.window_index)
                    for o in self._observations.values()
                ),
                cutoff=cutoff,
            )
        ][:limit]
        for report_id in chosen:
            del self._reports[report_id]
        return len(chosen)


def memory_store() -> MemoryStore[MemoryDriftUnit]:
    return MemoryStore(MemoryDriftUnit, consumer="mloop-drift")
