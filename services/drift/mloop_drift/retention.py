"""Retention: which observations and reports drift may delete, and the task that deletes them.

A judged window stays *open* while anything revises it: labels or late predictions within the label
horizon of its last judgement (the handlers revise no window past it). Once closed:

- its observations go ``observations`` later (the lineage lookup and retraining snapshots read them
  until then);
- its reports go ``reports`` later, except every revision that raised an alarm (``drift.detected``
  names it) and the latest revision of a window that raised one, and never while an observation of the
  window is left (an event-time window whose reports are gone but rows remain would look unjudged).

Never deleted: the predictions of a watched version that are not in a judged window (an open window,
still filling); a version no longer watched (retired, or never promoted) will not judge them, so they
go by age like closed ones. A label whose prediction never arrived goes by the age of the label.

The rules below are the pure statement; ``store.SqlDriftUnit`` runs the same selection in SQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client import Counter

from mloop_common.uow import Store
from mloop_drift.entities import Observation, Report
from mloop_drift.store import DriftUnit

log = logging.getLogger(__name__)
PURGED = Counter("mloop_drift_purged_total", "Rows deleted by drift's retention, by kind", ["kind"])


@dataclass(frozen=True)
class Retention:
    """How long windows stay open to labels, and how long their rows and reports are kept after."""

    label_horizon: timedelta = timedelta(days=14)
    observations: timedelta = timedelta(days=7)
    reports: timedelta = timedelta(days=90)

    def __post_init__(self) -> None:
        if self.label_horizon <= timedelta(0):
            raise ValueError("the label horizon must be positive")
        if self.observations < timedelta(0) or self.reports < timedelta(0):
            raise ValueError("retention periods must not be negative")

    def observation_cutoff(self, now: datetime) -> datetime:
        """Windows last judged before this are closed for longer than observations are kept."""
        return now - self.label_horizon - self.observations

    def report_cutoff(self, now: datetime) -> datetime:
        """Windows last judged before this are closed for longer than reports are kept."""
        return now - self.label_horizon - self.reports


def last_judged(report: Report) -> datetime | None:
    """When a revision was last written: created, or refreshed in place by labels."""
    return report.updated_at or report.created_at


def window_closed(latest: Report, now: datetime, horizon: timedelta) -> bool:
    """Whether a judged window is past the label horizon: nothing revised it for ``horizon``."""
    last = last_judged(latest)
    return last is not None and last < now - horizon


def window_last_judged(revisions: Sequence[Report]) -> datetime | None:
    """The last judgement of a window, over all its revisions (None: never judged)."""
    stamps = [stamp for stamp in map(last_judged, revisions) if stamp is not None]
    return max(stamps) if stamps else None


def observation_purgeable(
    observation: Observation, window_revisions: Sequence[Report], watched: bool, cutoff: datetime
) -> bool:
    """Whether an observation may go: ``window_revisions`` are its window's reports, ``watched`` whether
    its version's windows are still judged, ``cutoff`` from `Retention.observation_cutoff`."""
    if observation.logged_at is None:  # a label still waiting for its prediction
        return observation.labelled_at is not None and observation.labelled_at < cutoff
    if observation.logged_at >= cutoff:
        return False
    last = window_last_judged(window_revisions) if observation.window_index is not None else None
    if last is None:
        return not watched  # an open window (or one not judged yet) of a watched version stays
    return last < cutoff


def report_purgeable(report: Report, window_revisions: Sequence[Report], rows_left: bool, cutoff: datetime) -> bool:
    """Whether one revision may go: ``window_revisions`` are all its window's revisions (itself included),
    ``rows_left`` whether observations of the window remain, ``cutoff`` from `Retention.report_cutoff`."""
    if report.emitted or rows_left or report.created_at is None or report.created_at >= cutoff:
        return False
    last = window_last_judged(window_revisions)
    if last is None or last >= cutoff:
        return False
    latest = max(r.revision for r in window_revisions)
    return not (report.revision == latest and any(r.emitted for r in window_revisions))


class Purger:
    """Deletes what retention allows, in batches of ``batch`` rows, one transaction per batch."""

    def __init__(
        self, *, store: Store[DriftUnit], retention: Retention, batch: int, clock: Callable[[], datetime]
    ) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.store = store
        self.retention = retention
        self.batch = batch
        self.clock = clock

    async def purge(self) -> dict[str, int]:
        """One pass: observations first (a window's reports wait for its rows), then reports."""
        now = self.clock()
        purged = {"observations": 0, "reports": 0}
        cutoff = self.retention.observation_cutoff(now)
        while True:
            async with self.store.transaction() as unit:
                deleted = await unit.purge_observations(cutoff, self.batch)
            purged["observations"] += deleted
            PURGED.labels(kind="observations").inc(deleted)
            if deleted < self.batch:
                break
        cutoff = self.retention.report_cutoff(now)
        while True:
            async with self.store.transaction() as unit:
                deleted = await unit.purge_reports(cutoff, self.batch)
            purged["reports"] += deleted
            PURGED.labels(kind="reports").inc(deleted)
            if deleted < self.batch:
                break
        if any(purged.values()):
            log.info(
                "retention purged %d observations (windows closed before %s) and %d reports (before %s)",
                purged["observations"],
                self.retention.observation_cutoff(now).isoformat(),
                purged["reports"],
                self.retention.report_cutoff(now).isoformat(),
            )
        return purged

    async def run(self, interval: float) -> None:
        """Purge every ``interval`` seconds until cancelled; a failed pass is logged and retried next time."""
        while True:
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("retention pass failed; retrying in %.0fs", interval)
            await asyncio.sleep(interval)
