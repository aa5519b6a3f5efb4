"""`make bench`: ingest's prepare step against the floor `pyarrow.csv.read_csv`, side by side in one run.

Data: a generated 1,000,000-row CSV, 15 numeric columns, 5 categorical ones and a binary target (21
columns, about 195 MB), kept under .cache/ingest-bench/. Each measurement runs in a fresh process (so its
peak memory is its own), floor and mloop alternating, REPEATS times each; the medians are compared:

- floor: `pyarrow.csv.read_csv(path)` alone (Arrow's default threads: every core);
- mloop: `mloop_ingest.prepare.prepare` on the spooled file (parse, every check, profile, schema contract,
  Parquet snapshot) followed by `ArtifactStore.put_file` (hash and store the snapshot): everything ingest
  computes between the upload reaching disk and the database write.

Memory is the peak resident size a step adds to its process (peak RSS after minus RSS before), compared
with the size of the Parquet snapshot. Targets (issue 8): time <= 2x the floor, memory <= 3x the snapshot.
Results go to bench/results/ingest_speed.json.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROWS = int(os.environ.get("MLOOP_BENCH_INGEST_ROWS", "1000000"))
REPEATS = int(os.environ.get("MLOOP_BENCH_REPEATS", "3"))
DATA = Path(".cache/ingest-bench") / f"ingest-{ROWS}.csv"
OUT = Path("bench/results/ingest_speed.json")


def generate(path: Path, rows: int) -> None:
    """15 numeric columns (some skewed, a few with missing values), 5 categorical, a binary target."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    columns: dict[str, Any] = {}
    for i in range(15):
        values = rng.lognormal(0, 1, rows) if i % 5 == 4 else rng.normal(i, 1 + i, rows)
        mask = rng.random(rows) < 0.01 if i % 7 == 0 else None
        columns[f"num_{i:02d}"] = pa.array(values.round(6), mask=mask)
    for i in range(5):
        categories = np.array([f"cat{i}_{j}" for j in range(3 + 12 * i)])
        columns[f"cat_{i}"] = categories[rng.integers(0, len(categories), rows)]
    columns["label"] = rng.integers(0, 2, rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    pacsv.write_csv(pa.table(columns), partial)
    partial.rename(path)


def _rss() -> int:
    """Current resident set size in bytes (Linux)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(step: str, path: Path) -> dict[str, Any]:
    """Run one step in this (fresh) process: seconds, and the peak memory it added."""
    import pyarrow.csv as pacsv

    from mloop_common.artifacts import ArtifactStore
    from mloop_ingest.checks import CheckPolicy
    from mloop_ingest.contract import Declaration
    from mloop_ingest.prepare import prepare
    from mloop_ingest.reading import Limits

    with tempfile.TemporaryDirectory(dir=path.parent) as work:
        before = _rss()
        started = time.perf_counter()
        result: dict[str, Any] = {}
        if step == "floor":
            table = pacsv.read_csv(path)
            result["rows"] = table.num_rows
        else:
            prepared = prepare(
                path,
                filename=path.name,
                target="label",
                time_column=None,
                declaration=Declaration(),
                previous=None,
                policy=CheckPolicy(),
                limits=Limits(),
                workdir=Path(work),
            )
            assert prepared.snapshot is not None, prepared.report.failures()
            ref = ArtifactStore(Path(work) / "artifacts").put_file(
                prepared.snapshot, kind="datasets", suffix=".parquet"
            )
            result.update(rows=prepared.rows, snapshot_bytes=ref.size, checks=len(prepared.report.checks))
        seconds = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_added_bytes": max(0, peak - before), **result}


def run_step(step: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "tests.perf.ingest_speed", "--step", step, str(DATA)],
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def main() -> int:
    if not DATA.exists():
        print(f"generating {DATA} ({ROWS} rows)...")
        generate(DATA, ROWS)
    run_step("floor")  # warm the page cache: both sides read the file from memory
    floors, mloops = [], []
    for index in range(REPEATS):
        floors.append(run_step("floor"))
        mloops.append(run_step("mloop"))
        print(f"run {index + 1}/{REPEATS}: floor {floors[-1]['seconds']:.2f}s, mloop {mloops[-1]['seconds']:.2f}s")
    floor_s = statistics.median(r["seconds"] for r in floors)
    mloop_s = statistics.median(r["seconds"] for r in mloops)
    snapshot = mloops[0]["snapshot_bytes"]
    mloop_peak = statistics.median(r["peak_added_bytes"] for r in mloops)
    floor_peak = statistics.median(r["peak_added_bytes"] for r in floors)
    summary = {
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "data": {"rows": ROWS, "columns": 21, "numeric": 15, "categorical": 5, "csv_bytes": DATA.stat().st_size},
        "repeats": REPEATS,
        "floor": "pyarrow.csv.read_csv(path), default threads",
        "mloop": "prepare() (parse, checks, profile, contract, Parquet snapshot) + ArtifactStore.put_file",
        "floor_s": floor_s,
        "mloop_s": mloop_s,
        "ratio_time": mloop_s / floor_s,
        "target_ratio_time": 2.0,
        "snapshot_bytes": snapshot,
        "mloop_peak_added_bytes": mloop_peak,
        "floor_peak_added_bytes": floor_peak,
        "ratio_memory_to_snapshot": mloop_peak / snapshot,
        "target_ratio_memory": 3.0,
        "runs": {"floor": floors, "mloop": mloops},
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"ingest prepare {mloop_s:.2f}s vs pyarrow.csv.read_csv {floor_s:.2f}s: {summary['ratio_time']:.2f}x "
        f"(target <= 2x); peak memory {mloop_peak / 1e6:.0f} MB for a {snapshot / 1e6:.0f} MB snapshot: "
        f"{summary['ratio_memory_to_snapshot']:.2f}x (target <= 3x) -> {OUT}"
    )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--step":
        print(json.dumps(measure(sys.argv[2], Path(sys.argv[3]))))
        sys.exit(0)
    sys.exit(main())
