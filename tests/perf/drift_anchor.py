"""One drift anchor (Evidently or NannyML) timed on the benchmark's Parquet files; run in the anchor's own venv.

    <venv>/bin/python tests/perf/drift_anchor.py {evidently|nannyml} REFERENCE.parquet WINDOW.parquet REPEATS

Prints one JSON object: the library's version, the median seconds of the computation alone (imports and the
Parquet reads happen before the clock starts), and which columns it called drifted. Imports nothing of mloop:
the anchor venvs hold only the anchor and its own dependencies (tests/perf/drift_speed.py makes them).
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pandas as pd


def timed(action: Callable[[], Any], repeats: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return times, result


def evidently(reference: pd.DataFrame, window: pd.DataFrame, repeats: int) -> dict[str, Any]:
    """`DataDriftPreset` with its defaults (for numeric columns over 1,000 rows: normed Wasserstein, 0.1)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    columns = list(reference.columns)
    definition = DataDefinition(numerical_columns=columns)

    def run() -> Any:
        # Wrapping the frames is part of the run: Evidently computes column statistics while doing it.
        ref = Dataset.from_pandas(reference, data_definition=definition)
        cur = Dataset.from_pandas(window, data_definition=definition)
        return Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)

    times, snapshot = timed(run, repeats)
    drifted = []
    for metric in snapshot.dict()["metrics"]:
        # One "ValueDrift(column=fN, ...)" per column: its value is the drift score, its config the threshold.
        name = str(metric.get("metric_name", metric.get("metric_id", "")))
        if not name.startswith("ValueDrift"):
            continue
        config = metric.get("config", {})
        column, threshold = config.get("column"), config.get("threshold")
        method = str(config.get("method", "")).lower()
        value = metric.get("value")
        if column is None or threshold is None or value is None:
            continue
        # p-value tests drift below the threshold, distances above it
        is_p_value = "p_value" in method or "ks" in method or "chi" in method
        if (value < threshold) if is_p_value else (value >= threshold):
            drifted.append(column)
    return {"library": "evidently", "version": version("evidently"), "times_s": times, "drifted": sorted(drifted)}


def nannyml(reference: pd.DataFrame, window: pd.DataFrame, repeats: int) -> dict[str, Any]:
    """`UnivariateDriftCalculator` with its default method (Jensen-Shannon), the window as one chunk.

    One chunk leaves NannyML's default threshold (reference chunks' mean +- 3 std) without a spread to
    compute, so every column would alert: a constant threshold (0.1) stands in for it.

    fit (on the reference) and calculate (on the window) are timed apart: fit is what mloop does once
    per version, when it builds the reference profile; calculate is what it does per window.
    """
    import nannyml as nml
    from nannyml.thresholds import ConstantThreshold

    columns = list(reference.columns)

    def calculator() -> Any:
        return nml.UnivariateDriftCalculator(
            column_names=columns,
            chunk_number=1,
            thresholds={"jensen_shannon": ConstantThreshold(lower=None, upper=0.1)},
        )

    fit_times, fitted = timed(lambda: calculator().fit(reference), repeats)
    times, results = timed(lambda: fitted.calculate(window), repeats)
    frame = results.filter(period="analysis").to_df()
    drifted = sorted(
        str(column)
        for column in columns
        if any(bool(v) for k, v in frame.iloc[-1].items() if k[0] == column and k[-1] == "alert")
    )
    return {
        "library": "nannyml",
        "version": version("nannyml"),
        "times_s": times,
        "fit_times_s": fit_times,
        "fit_s": statistics.median(fit_times),
        "drifted": drifted,
    }


def main() -> int:
    warnings.simplefilter("ignore")  # NannyML warns that one chunk is few; that is the point here
    library, reference_path, window_path, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    reference, window = pd.read_parquet(reference_path), pd.read_parquet(window_path)
    result = {"evidently": evidently, "nannyml": nannyml}[library](reference, window, repeats)
    result["seconds"] = statistics.median(result["times_s"])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
