"""Retention: which rows drift may delete (pure rules) and the purge pass over the in-memory store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from mloop_drift.entities import Observation
from mloop_drift.retention import Purger, Retention, observation_purgeable, report_purgeable, window_closed

from .fakes import MemoryDriftUnit, memory_store
from .retention_scenario import EXPECTED, MODEL, NOW, RETENTION, days_ago, report, write_history

CUTOFF = RETENTION.observation_cutoff(NOW)


def row(logged: float | None, window: int | None = 1, labelled: float | None = None) -> Observation:
    return Observation(
        request_id="r",
        model=MODEL,
        version=2,
        logged_at=days_ago(logged) if logged is not None else None,
        labelled_at=days_ago(labelled) if labelled is not None else None,
        window_index=window,
    )


def test_windows_close_after_the_label_horizon_and_rows_and_reports_go_after_their_retention() -> None:
    assert RETENTION.observation_cutoff(NOW) == NOW - timedelta(days=21)
    assert RETENTION.report_cutoff(NOW) == NOW - timedelta(days=44)
    assert window_closed(report(1, 1, created=15), NOW, RETENTION.label_horizon)
    assert not window_closed(report(1, 1, created=15, revised=13), NOW, RETENTION.label_horizon)


@pytest.mark.parametrize(
    "settings",
    [
        {"label_horizon": timedelta(0)},
        {"observations": timedelta(days=-1)},
        {"reports": timedelta(days=-1)},
    ],
)
def test_retention_periods_are_checked(settings: dict[str, timedelta]) -> None:
    with pytest.raises(ValueError):
        Retention(**settings)


def test_rows_of_a_window_closed_long_enough_go() -> None:
    assert observation_purgeable(row(60), [report(1, 1, created=60)], watched=True, cutoff=CUTOFF)


def test_rows_of_a_window_labels_revised_recently_stay() -> None:
    revised = [report(1, 1, created=60), report(1, 2, created=50, revised=3)]
    assert not observation_purgeable(row(60), revised, watched=True, cutoff=CUTOFF)


def test_an_open_window_of_a_watched_version_stays_however_old() -> None:
    assert not observation_purgeable(row(90, window=None), [], watched=True, cutoff=CUTOFF)
    assert not observation_purgeable(row(90, window=7), [], watched=True, cutoff=CUTOFF)  # placed, not judged yet
    assert observation_purgeable(row(90, window=None), [], watched=False, cutoff=CUTOFF)  # nobody will judge it
    assert not observation_purgeable(row(5, window=None), [], watched=False, cutoff=CUTOFF)


def test_a_label_waiting_for_its_prediction_goes_by_its_own_age() -> None:
    assert observation_purgeable(row(None, window=None, labelled=30), [], watched=True, cutoff=CUTOFF)
    assert not observation_purgeable(row(None, window=None, labelled=2), [], watched=True, cutoff=CUTOFF)


def test_reports_that_raised_an_alarm_and_the_latest_of_their_window_stay() -> None:
    cutoff = RETENTION.report_cutoff(NOW)
    alarmed = [report(5, 1, created=80, emitted=True), report(5, 2, created=79), report(5, 3, created=78)]
    quiet = [report(4, 1, created=70), report(4, 2, created=69)]

    assert [report_purgeable(r, alarmed, rows_left=False, cutoff=cutoff) for r in alarmed] == [False, True, False]
    assert [report_purgeable(r, quiet, rows_left=False, cutoff=cutoff) for r in quiet] == [True, True]
    assert not report_purgeable(quiet[0], quiet, rows_left=True, cutoff=cutoff)  # its rows are still there


def test_reports_of_a_window_still_open_or_recently_closed_stay() -> None:
    cutoff = RETENTION.report_cutoff(NOW)
    revised = [report(2, 1, created=90, revised=20)]
    assert not report_purgeable(revised[0], revised, rows_left=False, cutoff=cutoff)
    recent = [report(3, 1, created=30)]
    assert not report_purgeable(recent[0], recent, rows_left=False, cutoff=cutoff)


def purged(kind: str) -> float:
    return REGISTRY.get_sample_value("mloop_drift_purged_total", {"kind": kind}) or 0.0


async def test_a_purge_pass_deletes_in_batches_what_retention_allows_and_counts_it() -> None:
    store = memory_store()
    await write_history(store)
    before = purged("observations"), purged("reports")
    purger = Purger(store=store, retention=RETENTION, batch=2, clock=lambda: NOW)

    counts = await purger.purge()

    unit = MemoryDriftUnit(store.state, "tests")
    assert set(unit._observations) == EXPECTED.observations
    assert set(unit._reports) == EXPECTED.reports
    assert counts == {"observations": 10, "reports": 3}
    assert (purged("observations") - before[0], purged("reports") - before[1]) == (10, 3)
    assert await purger.purge() == {"observations": 0, "reports": 0}  # nothing left to do


def test_a_batch_must_hold_a_row() -> None:
    with pytest.raises(ValueError):
        Purger(store=memory_store(), retention=RETENTION, batch=0, clock=lambda: NOW)
