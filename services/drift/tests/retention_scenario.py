"""One history of windows, reports and labels of every age, written through a drift store, and what
retention must leave of it: shared by the in-memory test and the PostgreSQL one."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from mloop_common.profile import build_reference_profile
from mloop_common.uow import Store
from mloop_drift.entities import Label, MonitoredVersion, Prediction, Report
from mloop_drift.retention import Retention
from mloop_drift.store import DriftUnit

MODEL = "churn"
NOW = datetime(2026, 6, 1, tzinfo=UTC)
# Windows close 14 days after their last judgement; rows go 7 days later (21), reports 30 days later (44).
RETENTION = Retention(label_horizon=timedelta(days=14), observations=timedelta(days=7), reports=timedelta(days=30))


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


@dataclass(frozen=True)
class Kept:
    observations: set[str]
    reports: set[str]


def report(
    window: int, revision: int, created: float, *, emitted: bool = False, revised: float | None = None
) -> Report:
    return Report(
        id=f"w{window}r{revision}",
        model=MODEL,
        version=2,
        window_index=window,
        revision=revision,
        drift_detected=emitted,
        cause="performance_drop" if emitted else None,
        action="retrain" if emitted else None,
        emitted=emitted,
        summary="...",
        report={"n_rows": 2},
        created_at=days_ago(created),
        updated_at=days_ago(revised) if revised is not None else None,
    )


async def write_history(store: Store[DriftUnit]) -> None:
    """Version 1 retired, version 2 watched; every kind of row, old and recent."""
    training = pd.DataFrame({"x1": [0.1 * i for i in range(50)]})
    profile = build_reference_profile(
        training, ["x1"], ["yes" if i % 2 else "no" for i in range(50)], task="classification"
    )
    async with store.transaction() as unit:
        for version in (1, 2):
            await unit.add_monitored(
                MonitoredVersion(
                    model=MODEL,
                    version=version,
                    task="classification",
                    target="label",
                    features=["x1"],
                    profile=profile,
                    baseline={"accuracy": 0.9},
                    window_size=2,
                    cooldown_windows=0,
                    promoted_at=days_ago(100),
                )
            )

        async def predictions(version: int, logged: float, *names: str, window: int | None = None) -> None:
            await unit.record_predictions(
                MODEL,
                version,
                [
                    Prediction(request_id=n, logged_at=days_ago(logged), inputs={"x1": 1.0}, prediction="yes")
                    for n in names
                ],
            )
            if window is not None:
                await unit.place_in_windows(MODEL, version, dict.fromkeys(names, window))

        # w1: judged 60 days ago, revised into an alarm a day later: rows go, the alarm stays, the first revision goes
        await predictions(2, 60, "w1-a", "w1-b", window=1)
        await unit.add_report(report(1, 1, 60))
        await unit.add_report(report(1, 2, 59, emitted=True))
        # w2: judged 50 days ago but revised by labels 10 days ago: still open, everything stays
        await predictions(2, 50, "w2-a", "w2-b", window=2)
        await unit.add_report(report(2, 1, 50, revised=10))
        # w3: judged 30 days ago: closed 16 days ago, rows go (after 7), the report stays (for 30)
        await predictions(2, 30, "w3-a", "w3-b", window=3)
        await unit.add_report(report(3, 1, 30))
        # w4: judged 70 days ago, never an alarm: everything goes
        await predictions(2, 70, "w4-a", "w4-b", window=4)
        await unit.add_report(report(4, 1, 70))
        await unit.add_report(report(4, 2, 69))
        # w5: an alarm 80 days ago, revised to no action since: both revisions stay (the alarm, the latest)
        await predictions(2, 80, "w5-a", window=5)
        await unit.add_report(report(5, 1, 80, emitted=True))
        await unit.add_report(report(5, 2, 79))
        # w6: judged 100 days ago, but its rows are still there (a newer late row): its report waits for them
        await predictions(2, 100, "w6-old", window=6)
        await predictions(2, 15, "w6-late", window=6)
        await unit.add_report(report(6, 1, 100))
        # the watched version's open window: old rows it has not judged yet stay
        await predictions(2, 40, "open-2")
        # the retired version will judge nothing: its old rows go, recent ones stay a while
        await predictions(1, 40, "retired-old")
        await predictions(1, 5, "retired-recent")
        # labels whose prediction never came: by the label's age
        await unit.record_labels(
            MODEL,
            [
                Label(request_id="label-old", label="yes", labelled_at=days_ago(30)),
                Label(request_id="label-recent", label="yes", labelled_at=days_ago(1)),
            ],
        )


EXPECTED = Kept(
    observations={"w2-a", "w2-b", "w6-late", "open-2", "retired-recent", "label-recent"},
    reports={"w1r2", "w2r1", "w3r1", "w5r1", "w5r2", "w6r1"},
)
