"""`make bench`: how fast drift judges one window, against the plain floor, measured side by side in one run.

Data: 20 numeric features, a reference of 50,000 training rows, windows of 50,000 and 500,000 rows in
which 5 features are shifted by 0.5 standard deviations. Timed, each the median of a few runs:

- mloop columns: `mloop_drift.detector.evaluate` on a window already in columns (numpy arrays), with
  the default tests (Wasserstein + PSI at these sizes) and with KS + PSI (the floor's tests);
- mloop rows: the same from rows of JSON objects, turning them into columns first (`Window.from_rows`;
  measured on at most 50,000 rows: half a million Python dicts would need about a gigabyte);
- rows per 1,000: turning 1,000 more rows into columns (what adding them to a window costs);
- floor: scipy `ks_2samp` against the full reference plus a 10-bin numpy PSI, per column;
- anchors: Evidently's `DataDriftPreset` (a `Report` run on the reference and the window) and NannyML's
  `UnivariateDriftCalculator` (fit on the reference, timed apart; calculate on the window as one chunk). Each
  lives in a venv of its own under .cache/drift-bench/, made on first use with pinned versions, and runs in a
  subprocess (tests/perf/drift_anchor.py) on the same data, written once as Parquet; it times the computation
  alone (imports and Parquet reads happen before its clock starts) and reports it as JSON.

No thread limits are set for anyone (numpy, scipy and the anchors use what the machine has).
Results, with the issue's ratios, go to bench/results/drift_speed.json.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
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
from tests.perf.serving_speed import venv

FEATURES = [f"f{i}" for i in range(20)]
SHIFTED = FEATURES[:5]
REFERENCE_ROWS = 50_000
SIZES = [int(s) for s in os.environ.get("MLOOP_BENCH_DRIFT_SIZES", "50000,500000").split(",")]
REPEATS = int(os.environ.get("MLOOP_BENCH_DRIFT_REPEATS", "5"))
REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "bench" / "results" / "drift_speed.json"
CACHE = REPO / ".cache" / "drift-bench"
ANCHOR = Path(__file__).with_name("drift_anchor.py")
# pandas 3 breaks both (Evidently imports a helper it dropped; NannyML's plots need statsmodels, not declared).
ANCHORS = {
    "evidently": ("evidently-0.7.23", ["evidently==0.7.23", "pandas==2.3.3", "pyarrow==26.0.1"]),
    "nannyml": ("nannyml-0.13.1", ["nannyml==0.13.1", "pandas==2.3.3", "statsmodels==0.14.5", "pyarrow==26.0.1"]),
}
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


def anchor(library: str, reference: Path, window: Path) -> dict[str, Any]:
    """One anchor's own timing on the Parquet files (median of REPEATS runs), or why it could not run."""
    try:
        name, packages = ANCHORS[library]
        python = venv(name, packages, cache=CACHE) / "bin" / "python"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            [str(python), str(ANCHOR), library, str(reference), str(window), str(REPEATS)],
            capture_output=True,
            text=True,
            timeout=3600,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-1500:])
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result
    except Exception as exc:
        return {"library": library, "error": f"{type(exc).__name__}: {exc}"[:1500]}


def columns_window(window: pd.DataFrame) -> Window:
    n = len(window)
    return Window(
        n=n,
        features={name: numeric_column(window[name].to_numpy()) for name in FEATURES},
        predictions=np.zeros(n, dtype=object),
    )


def rows_window(records: list[dict[str, Any]]) -> Window:
    return Window.from_rows(KINDS, records, [0] * len(records))


def ratio(slower: float | None, faster: float | None) -> float | None:
    return round(slower / faster, 2) if slower is not None and faster else None


def main() -> int:
    reference = frame(REFERENCE_ROWS, seed=0)
    profile = build_reference_profile(reference, FEATURES)
    ks_config = DriftConfig(numeric_methods=("ks", "psi"))
    results = []
    with tempfile.TemporaryDirectory(prefix="mloop-drift-bench-") as root:
        reference_file = Path(root) / "reference.parquet"
        reference.to_parquet(reference_file)
        for size in SIZES:
            window = frame(size, seed=size, shift=0.5)
            window_file = Path(root) / f"window-{size}.parquet"
            window.to_parquet(window_file)
            results.append(measure(size, reference, window, profile, ks_config, reference_file, window_file))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    versions = {name: packages for name, (_, packages) in ANCHORS.items()}
    OUT.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(),
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "reference_rows": REFERENCE_ROWS,
                "features": len(FEATURES),
                "shifted": SHIFTED,
                "repeats": REPEATS,
                "anchors": {
                    "packages": versions,
                    "evidently": "Report([DataDriftPreset()]).run on Datasets of the reference and the window "
                    "(defaults: normed Wasserstein, 0.1, for numeric columns over 1,000 rows); the reference "
                    "is processed in every run (Evidently keeps no fitted state)",
                    "nannyml": "UnivariateDriftCalculator defaults (Jensen-Shannon), chunk_number=1, constant "
                    "threshold 0.1; seconds = calculate on the window, fit_s = fit on the reference",
                    "timing": "inside the anchor's process, computation only (no imports, no Parquet reads)",
                },
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"-> {OUT}")
    return 0


def measure(
    size: int,
    reference: pd.DataFrame,
    window: pd.DataFrame,
    profile: Any,
    ks_config: DriftConfig,
    reference_file: Path,
    window_file: Path,
) -> dict[str, Any]:
    floor_s, floor_drifted = timed(lambda: floor(reference, window))
    default_s, report = timed(lambda: evaluate(profile, columns_window(window)))
    ks_s, ks_report = timed(lambda: evaluate(profile, columns_window(window), config=ks_config))
    # Rows of JSON objects, as events carry them (500,000 of them would need about 1 GB: 50,000 at most).
    records = window.head(ROWS_MAX).to_dict("records")
    rows_s, _ = timed(lambda: evaluate(profile, rows_window(records)))
    per_1000_s, _ = timed(lambda: rows_window(records[:1000]))
    anchors = {library: anchor(library, reference_file, window_file) for library in ANCHORS}
    evidently_s = anchors["evidently"].get("seconds")
    nannyml_s = anchors["nannyml"].get("seconds")
    expected = sorted(SHIFTED)
    result = {
        "rows": size,
        "floor_s": floor_s,
        "mloop_columns_s": default_s,
        "mloop_columns_ks_s": ks_s,
        "mloop_rows_s": rows_s,
        "mloop_rows_measured_on": len(records),
        "rows_to_columns_per_1000_s": per_1000_s,
        "evidently_s": evidently_s,
        "nannyml_s": nannyml_s,
        "nannyml_fit_s": anchors["nannyml"].get("fit_s"),
        "ratio_mloop_to_floor": default_s / floor_s,
        "ratio_mloop_ks_to_floor": ks_s / floor_s,
        "ratio_mloop_rows_to_floor": rows_s / floor_s if len(records) == size else None,
        "evidently_over_mloop": ratio(evidently_s, default_s),
        "nannyml_over_mloop": ratio(nannyml_s, default_s),
        "targets": {
            "at_most_1x_floor": default_s <= floor_s,
            "20x_faster_than_evidently": evidently_s is not None and evidently_s >= 20 * default_s,
            "2x_faster_than_nannyml": nannyml_s is not None and nannyml_s >= 2 * default_s,
        },
        "detected": {
            "floor": sorted(k for k, v in floor_drifted.items() if v) == expected,
            "mloop": sorted(report.drifted_features) == expected,
            "mloop_ks": sorted(ks_report.drifted_features) == expected,
            **{name: a.get("drifted") == expected if "error" not in a else None for name, a in anchors.items()},
        },
        "mloop_tests": [t.method for t in report.features[FEATURES[0]].tests],
        "anchors": anchors,
    }
    print(
        f"{size:>7} rows: floor {floor_s:.3f}s | mloop columns {default_s:.3f}s "
        f"({result['ratio_mloop_to_floor']:.2f}x), with KS {ks_s:.3f}s "
        f"({result['ratio_mloop_ks_to_floor']:.2f}x) | from {len(records)} rows {rows_s:.2f}s | "
        f"1,000 rows to columns {per_1000_s * 1000:.1f} ms\n"
        f"         Evidently {fmt(evidently_s)} ({result['evidently_over_mloop']}x mloop) | NannyML calculate "
        f"{fmt(nannyml_s)} ({result['nannyml_over_mloop']}x mloop), fit {fmt(result['nannyml_fit_s'])} | "
        f"shifted features found: {result['detected']}",
        flush=True,
    )
    for name, a in anchors.items():
        if "error" in a:
            print(f"         {name} not measured: {a['error']}")
    return result


def fmt(seconds: float | None) -> str:
    return f"{seconds:.3f}s" if seconds is not None else "n/a"


if __name__ == "__main__":
    sys.exit(main())
