"""`make bench`: a whole mloop training run against raw scikit-learn `GridSearchCV`, side by side in one run.

Data: 50,000 x 20 synthetic classification rows (numeric, fixed seed; the same generator as serving_speed),
written once as CSV under .cache/training-bench/. Model: HistGradientBoostingClassifier, a 6-point grid
(learning_rate x max_iter), 3 folds, n_jobs 1, seed 42, holdout 0.2 (the spec defaults).

- mloop: a real stack (tests/stack.py: registry, ingest and trainer as their own processes) on a fresh broker of
  its own (deploy/local/kafka.sh on MLOOP_BENCH_KAFKA_PORT) and the local PostgreSQL. Each repeat stores a spec
  under a new name and publishes the CSV through ingest; the time measured runs from the ``data.published`` record
  to the ``model.trained`` record (their Kafka timestamps: when each reached the bus). In between the trainer
  consumes the event, loads the snapshot, hands it to its worker process (parse, split, search, refit, profile,
  holdout metrics, serialize), stores model, profile and holdout, records the run and emits through its outbox.
  The run's own record (GET /v1/runs/{id}: started_at, finished_at, details.timings) splits that time up.
- raw: in a fresh process, the same snapshot ingest stored (read back from the artifact store), cut into the same
  training rows as the trainer's (its split_holdout, untimed); then the timed part alone:
  ``GridSearchCV(HistGradientBoostingClassifier(random_state=42), grid, cv=3, n_jobs=1, refit=True).fit(X, y)``.
  Also timed, to tell the preprocessing from the rest: the same search over mloop's pipeline (impute + scale
  before the estimator; the trainer's build_pipeline), "raw_pipeline".

Native threads: OMP/OpenBLAS/MKL at 1 on both sides (the stack sets them for its services; the raw processes get
the same). MLOOP_BENCH_TRAINING_REPEATS (default 3) repeats, interleaved (mloop, raw, raw_pipeline), medians
compared: ratio = mloop / raw (target <= 1.2, issue 9). Results go to bench/results/training_overhead.json.

Environment: MLOOP_BENCH_KAFKA_PORT (default 19592; the controller takes the next port), MLOOP_TEST_PORT_OFFSET
(service ports: see tests/stack.py), MLOOP_DATABASE_PORT (default 55432).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as a plain script
    sys.path.insert(0, str(REPO))

from tests.perf.idle_cpu import drop_schemas, group_cpu_seconds  # noqa: E402
from tests.stack import ServiceStack  # noqa: E402

OUT = REPO / "bench" / "results" / "training_overhead.json"
CACHE = REPO / ".cache" / "training-bench"
LOCAL = REPO / "deploy" / "local"
KAFKA_PORT = int(os.environ.get("MLOOP_BENCH_KAFKA_PORT", "19592"))
PG_PORT = int(os.environ.get("MLOOP_DATABASE_PORT", "55432"))
ADMIN_URL = f"postgresql+asyncpg://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
REPEATS = int(os.environ.get("MLOOP_BENCH_TRAINING_REPEATS", "3"))
RUN_TIMEOUT = 900.0  # one run; a stuck one ends the benchmark instead of hanging it

ROWS, WIDTH, SEED = 50_000, 20, 0
FEATURES = [f"f{i:02d}" for i in range(WIDTH)]
ESTIMATOR = "HistGradientBoostingClassifier"
GRID: dict[str, list[Any]] = {"learning_rate": [0.05, 0.1, 0.2], "max_iter": [50, 100]}
CV = 3
SPEC_SEED = 42  # ModelSpec's default seed: random_state of the estimator and of the split
TARGET_RATIO = 1.2
ONE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")


def spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": name,
        "task": "classification",
        "target": "label",
        "estimators": [{"class": ESTIMATOR, "params": GRID}],
        "search": {"strategy": "grid", "cv": CV},
        "metric": "accuracy",
        "seed": SPEC_SEED,
    }


def data_csv(rows: int = ROWS) -> Path:
    """The CSV, generated once: serving_speed's rows (a label from an interaction and noise)."""
    path = CACHE / f"data-{rows}x{WIDTH}-seed{SEED}.csv"
    if not path.exists():
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(SEED)
        frame = pd.DataFrame(rng.normal(size=(rows, WIDTH)), columns=FEATURES)
        noise = rng.normal(scale=0.5, size=rows)
        frame["label"] = np.where(frame["f00"] + frame["f01"] * frame["f02"] - frame["f03"] + noise > 0, "yes", "no")
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        frame.to_csv(partial, index=False, float_format="%.6f")
        partial.rename(path)
    return path


# --- the raw side (a fresh process per measurement) ------------------------------------------


def measure_raw(kind: str, snapshot: Path) -> dict[str, Any]:
    """GridSearchCV on the trainer's training rows of ``snapshot``; only the fit is timed."""
    import pandas as pd
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import GridSearchCV

    from mloop_common.spec import ModelSpec
    from mloop_trainer.training import build_pipeline, split_holdout

    model_spec = ModelSpec.model_validate(spec("raw"))
    train, _ = split_holdout(pd.read_parquet(snapshot), model_spec)
    X, y = train[FEATURES], train["label"]
    estimator = HistGradientBoostingClassifier(random_state=SPEC_SEED)
    if kind == "raw":
        searched: Any = estimator
        grid = GRID
    else:  # raw_pipeline: mloop's preprocessing in front, as the trainer fits it
        searched = build_pipeline(estimator, X, FEATURES)
        grid = {f"model__{k}": v for k, v in GRID.items()}
    started, cpu = time.perf_counter(), time.process_time()
    search = GridSearchCV(searched, grid, cv=CV, n_jobs=1, refit=True).fit(X, y)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"seconds": seconds, "cpu_s": cpu, "train_rows": len(train), "best_params": search.best_params_}


def run_raw(kind: str, snapshot: Path) -> dict[str, Any]:
    env = {**os.environ, **ONE_THREAD}
    done = subprocess.run(
        [sys.executable, "-m", "tests.perf.training_overhead", "--raw", kind, str(snapshot)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {kind} measurement failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the mloop side --------------------------------------------------------------------------


def kafka(command: str) -> None:
    env = {
        **os.environ,
        "MLOOP_RUN": str(REPO / ".run" / f"bench-kafka-{KAFKA_PORT}"),
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
    }
    subprocess.run([str(LOCAL / "kafka.sh"), command], env=env, check=True, stdout=subprocess.DEVNULL)


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def train_once(stack: ServiceStack, name: str, csv: Path) -> dict[str, Any]:
    """Store a spec, publish the CSV through ingest, wait for the run; its record, with the CPU seconds the
    trainer's processes (service and workers: one process group) spent from the upload to the run's end."""
    pgid = stack.processes["trainer"].pid
    with httpx.Client(timeout=120, headers=stack.headers) as http:
        http.post(f"{stack.urls['registry']}/v1/models", json=spec(name)).raise_for_status()
        cpu = group_cpu_seconds(pgid)
        with csv.open("rb") as handle:
            http.post(
                f"{stack.urls['ingest']}/v1/datasets/{name}/versions",
                data={"target": "label"},
                files={"file": (csv.name, handle, "text/csv")},
            ).raise_for_status()
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            runs = http.get(f"{stack.urls['trainer']}/v1/runs", params={"model": name}).json()["runs"]
            if runs:
                run = http.get(f"{stack.urls['trainer']}/v1/runs/{runs[0]['run_id']}").json()
                if run["status"] != "succeeded":
                    raise RuntimeError(f"run of {name} {run['status']}: {run.get('error')}")
                return {**run, "trainer_cpu_s": group_cpu_seconds(pgid) - cpu}
            time.sleep(0.25)
    raise RuntimeError(f"no run of {name} after {RUN_TIMEOUT:.0f}s:\n{stack.log_tail('trainer')}")


async def bus_times(bootstrap: str, name: str, timeout: float = 60) -> dict[str, float]:
    """When data.published and model.trained for ``name`` reached the bus (record timestamps, epoch seconds)."""
    from mloop_common.bus import BusConfig, read_topics

    found: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record, event in await read_topics(BusConfig(bootstrap), ["data.published", "model.trained"]):
            if event is not None and event.subject == name:
                found[event.type] = record.timestamp / 1000
                found[f"{event.type} envelope"] = event.time.timestamp()
        if "model.trained" in found and "data.published" in found:
            return found
        await asyncio.sleep(0.5)  # the relay publishes just after the run's transaction commits
    raise RuntimeError(f"the events of {name} are not on the bus after {timeout:.0f}s: {found}")


def measure_mloop(stack: ServiceStack, bootstrap: str, name: str, csv: Path) -> dict[str, Any]:
    run = train_once(stack, name, csv)
    bus = asyncio.run(bus_times(bootstrap, name))
    timings = run["details"]["timings"]
    published, trained = bus["data.published"], bus["model.trained"]
    started, finished = _time(run["started_at"]), _time(run["finished_at"])
    job = timings["job_s"]
    return {
        "seconds": trained - published,
        "cpu_s": run["trainer_cpu_s"],
        "run_id": run["run_id"],
        "train_rows": run["details"]["train_rows"],
        "best_params": run["details"]["params"],
        "dataset_uri": run["dataset_uri"],
        "dataset_sha256": run["dataset_sha256"],
        # where the time went, in order; they add up to "seconds"
        "parts": {
            # consuming data.published, the registry's specs for the dataset, loading the snapshot's bytes
            "event_to_run_start_s": started - published,
            # inside the worker: split + search + refit (train()'s total_s)
            "job_search_s": timings["search_s"],
            "job_refit_s": timings["refit_s"],
            "job_split_and_setup_s": timings["total_s"] - timings["search_s"] - timings["refit_s"],
            # the rest of the job: parse the snapshot; profile, holdout metrics, skops and Parquet serialisation
            "job_parse_profile_serialise_s": job - timings["total_s"],
            # handing bytes to and from the worker process, storing model, profile and holdout
            "transfer_and_store_s": (finished - started) - job,
            # recording the run and the outbox row, the relay publishing model.trained
            "record_and_emit_s": trained - finished,
        },
        "timings": timings,
    }


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "seconds": round(statistics.median(r["seconds"] for r in runs), 3),
        "cpu_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "runs": runs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--raw", nargs=2, metavar=("KIND", "SNAPSHOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw:
        print(json.dumps(measure_raw(args.raw[0], Path(args.raw[1])), default=str))
        return 0
    started = time.monotonic()
    csv, warm = data_csv(), data_csv(2_000)
    subprocess.run([str(LOCAL / "postgres.sh"), "start"], check=True, stdout=subprocess.DEVNULL)
    kafka("reset")
    kafka("start")
    bootstrap = f"127.0.0.1:{KAFKA_PORT}"
    results: dict[str, list[dict[str, Any]]] = {"mloop": [], "raw": [], "raw_pipeline": []}
    try:
        with tempfile.TemporaryDirectory(prefix="mloop-training-bench-") as root:
            stack = ServiceStack(bootstrap=bootstrap, database_url=ADMIN_URL, root=Path(root), repo=REPO)
            try:
                stack.start("registry", "ingest", "trainer")
                # One small run first (not measured): topics, consumer assignment and connections settle.
                train_once(stack, f"warm-{stack.run_id}", warm)
                snapshot = Path(root) / "snapshot.parquet"
                for index in range(REPEATS):
                    mloop = measure_mloop(stack, bootstrap, f"overhead-{stack.run_id}-{index}", csv)
                    if not snapshot.exists():
                        snapshot.write_bytes(stack.artifact_store().get(mloop["dataset_uri"], mloop["dataset_sha256"]))
                    results["mloop"].append(mloop)
                    for kind in ("raw", "raw_pipeline"):
                        results[kind].append(run_raw(kind, snapshot))
                    print(
                        f"run {index + 1}/{REPEATS}: mloop {mloop['seconds']:.2f}s ({mloop['cpu_s']:.2f} CPU s), "
                        f"raw GridSearchCV {results['raw'][-1]['seconds']:.2f}s ({results['raw'][-1]['cpu_s']:.2f}), "
                        f"raw with mloop's preprocessing {results['raw_pipeline'][-1]['seconds']:.2f}s "
                        f"({results['raw_pipeline'][-1]['cpu_s']:.2f})",
                        flush=True,
                    )
            finally:
                codes = stack.stop()
                asyncio.run(drop_schemas(stack.schemas))
    finally:
        kafka("stop")
    rows = {r["train_rows"] for side in results.values() for r in side}
    if len(rows) != 1:
        raise RuntimeError(f"the sides trained on different row counts: {rows}")
    summary = {kind: medians(runs) for kind, runs in results.items()}
    parts = {
        key: round(statistics.median(r["parts"][key] for r in results["mloop"]), 3)
        for key in results["mloop"][0]["parts"]
    }
    ratio = summary["mloop"]["seconds"] / summary["raw"]["seconds"]
    cpu_ratio = summary["mloop"]["cpu_s"] / summary["raw"]["cpu_s"]
    report: dict[str, Any] = {
        "benchmark": "training_overhead",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "method": {
            "data": f"{ROWS} x {WIDTH} numeric, binary label, seed {SEED}; {rows.pop()} training rows (holdout 0.2)",
            "estimator": ESTIMATOR,
            "grid": GRID,
            "cv": CV,
            "n_jobs": 1,
            "threads": ONE_THREAD,
            "repeats": REPEATS,
            "mloop": "data.published record -> model.trained record (Kafka timestamps); registry, ingest, trainer "
            f"as processes, fresh broker on {bootstrap}, local PostgreSQL",
            "raw": "GridSearchCV(estimator, grid, cv=3, n_jobs=1, refit=True).fit on the trainer's training rows",
            "raw_pipeline": "the same over mloop's pipeline (impute + scale, then the estimator)",
            "cpu": "mloop: the trainer's process group (service and worker) from the upload to the run's end; "
            "raw: the measuring process during the fit",
        },
        "results": {
            "mloop_s": summary["mloop"]["seconds"],
            "raw_s": summary["raw"]["seconds"],
            "raw_pipeline_s": summary["raw_pipeline"]["seconds"],
            "ratio": round(ratio, 3),
            "ratio_to_raw_pipeline": round(summary["mloop"]["seconds"] / summary["raw_pipeline"]["seconds"], 3),
            # CPU seconds: steadier than wall time on a machine shared with other work
            "mloop_cpu_s": summary["mloop"]["cpu_s"],
            "raw_cpu_s": summary["raw"]["cpu_s"],
            "raw_pipeline_cpu_s": summary["raw_pipeline"]["cpu_s"],
            "cpu_ratio": round(cpu_ratio, 3),
            "target_ratio": TARGET_RATIO,
            "mloop_parts_median_s": parts,
        },
        "runs": {kind: s["runs"] for kind, s in summary.items()},
        "exit_codes": codes,
        "seconds_total": round(time.monotonic() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(
        f"training overhead: mloop {summary['mloop']['seconds']:.2f}s (data.published -> model.trained) vs raw "
        f"GridSearchCV {summary['raw']['seconds']:.2f}s: {ratio:.2f}x (target <= {TARGET_RATIO}x; CPU "
        f"{cpu_ratio:.2f}x); raw with mloop's preprocessing "
        f"{summary['raw_pipeline']['seconds']:.2f}s; medians of {REPEATS} -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
