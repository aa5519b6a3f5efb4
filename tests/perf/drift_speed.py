"""`make bench`: how fast drift judges one window, against the plain floor, measured side by side in one run.

Data: 20 numeric features, a reference of 50,000 training rows, windows of 50,000 and 500,000 rows in
which 5 features are shifted by 0.5 standard deviations. Timed, each the median of a few runs:

- mloop columns: `mloop_drift.detector.evaluate` on a window already in columns (numpy arrays), with
  the default tests (Wasserstein + PSI at these sizes) and with KS + PSI (the floor's tests);
- mloop rows: the same from rows of JSON objects, turning them into columns first (`Window.from_rows`;
  measured on at most 50,000 rows: half a million Python dicts would need about a gigabyte);
- rows per 1,000: turning 1,000 more rows into columns (what adding them to a window costs);
- floor: scipy `ks_2samp` against the full reference plus a 10-bin numpy PSI, per column.

Evidently and NannyML are not installed in the project's environment; they are not measured here.
Results go to bench/results/drift_speed.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from mloop_common.profile import FeatureKind, build_reference_profile
from mloop_drift.detector import DriftConfig, evaluate
from mloop_drift.window import Window, numeric_column

FEATURES = [f"f{i}" for i in range(20)]
SHIFTED = FEATURES[:5]
REFERENCE_ROWS = 50_000
SIZES = [int(s) for s in os.environ.get("MLOOP_BENCH_DRIFT_SIZES", "50000,500000").split(",")]
REPEATS = int(os.environ.get("MLOOP_BENCH_DRIFT_REPEATS", "3"))
OUT = Path("bench/results/drift_speed.json")
ROWS_MAX = 50_000
KINDS: dict[str, FeatureKind] = dict.fromkeys(FEATURES, "numeric")


def frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    data = np.random.default_rng(seed).normal(0.0, 1.0, size=(rows, len(FEATURES)))
    out = pd.DataFrame(data, columns=FEATURES)
    out[SHIFTED] += shift
    return out


def floor(reference: pd.DataFrame, window: pd.DataFrame) -> dict[str, bool]:
    """The plain floor: KS against the whole reference and a 10-bin PSI on reference deciles, per column."""
    drifted = {}
    for name in FEATURES:
        ref, cur = reference[name].to_numpy(), window[name].to_numpy()
        ks = sps.ks_2samp(ref, cur)
        edges = np.quantile(ref, np.linspace(0, 1, 11))
        expected = np.histogram(np.clip(ref, edges[0], edges[-1]), edges)[0] / ref.size + 1e-4
        actual = np.histogram(np.clip(cur, edges[0], edges[-1]), edges)[0] / cur.size + 1e-4
        psi = float(np.sum((actual - expected) * np.log(actual / expected)))
        drifted[name] = bool(ks.pvalue < 0.05 and ks.statistic >= 0.1) or psi >= 0.2
    return drifted


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(REPEATS):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def columns_window(window: pd.DataFrame) -> Window:
    n = len(window)
    return Window(
        n=n,
        features={name: numeric_column(window[name].to_numpy()) for name in FEATURES},
        predictions=np.zeros(n, dtype=object),
    )


def rows_window(records: list[dict[str, Any]]) -> Window:
    return Window.from_rows(KINDS, records, [0] * len(records))


def main() -> int:
    reference = frame(REFERENCE_ROWS, seed=0)
    profile = build_reference_profile(reference, FEATURES)
    ks_config = DriftConfig(numeric_methods=("ks", "psi"))
    results = []
    for size in SIZES:
        window = frame(size, seed=size, shift=0.5)
        floor_s, floor_drifted = timed(lambda window=window: floor(reference, window))
        default_s, report = timed(lambda window=window: evaluate(profile, columns_window(window)))
        ks_s, ks_report = timed(lambda window=window: evaluate(profile, columns_window(window), config=ks_config))
        # Rows of JSON objects, as events carry them (500,000 of them would need about 1 GB: 50,000 at most).
        records = window.head(ROWS_MAX).to_dict("records")
        rows_s, _ = timed(lambda records=records: evaluate(profile, rows_window(records)))
        per_1000_s, _ = timed(lambda records=records: rows_window(records[:1000]))
        expected = sorted(SHIFTED)
        result = {
            "rows": size,
            "floor_s": floor_s,
            "mloop_columns_s": default_s,
            "mloop_columns_ks_s": ks_s,
            "mloop_rows_s": rows_s,
            "mloop_rows_measured_on": len(records),
            "rows_to_columns_per_1000_s": per_1000_s,
            "ratio_mloop_to_floor": default_s / floor_s,
            "ratio_mloop_ks_to_floor": ks_s / floor_s,
            "ratio_mloop_rows_to_floor": rows_s / floor_s if len(records) == size else None,
            "detected": {
                "floor": sorted(k for k, v in floor_drifted.items() if v) == expected,
                "mloop": sorted(report.drifted_features) == expected,
                "mloop_ks": sorted(ks_report.drifted_features) == expected,
            },
            "mloop_tests": [t.method for t in report.features[FEATURES[0]].tests],
        }
        results.append(result)
        print(
            f"{size:>7} rows: floor {floor_s:.3f}s | mloop columns {default_s:.3f}s "
            f"({result['ratio_mloop_to_floor']:.2f}x), with KS {ks_s:.3f}s "
            f"({result['ratio_mloop_ks_to_floor']:.2f}x) | from {len(records)} rows {rows_s:.2f}s | "
            f"1,000 rows to columns {per_1000_s * 1000:.1f} ms | shifted features found: {result['detected']}"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(),
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "reference_rows": REFERENCE_ROWS,
                "features": len(FEATURES),
                "shifted": SHIFTED,
                "repeats": REPEATS,
                "anchors": "Evidently and NannyML not measured: not installed in a separate environment",
                "results": results,
            },
            indent=2,
        )
    )
    print(f"-> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
