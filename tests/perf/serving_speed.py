"""`make bench`: mloop serving against MLServer, `mlflow models serve` and a bare FastAPI echo, in one run.

Every target serves the same fitted model on one worker and is driven by the same load generator, `wrk`
(Debian's package, unpacked into .cache/ like promtool), with one single-row request body repeated:

- echo: a bare FastAPI endpoint returning the JSON it got, under uvicorn (the HTTP floor of this stack);
- mloop `/v1/models/{name}:predict` and OIP `/v2/models/{name}/infer` (one FP64 tensor per feature), each
  with prediction logging on (Kafka) and off (``MLOOP_SERVING_LOG_PREDICTIONS=false``); serving runs as its
  own process behind the registry, the model registered directly (as tests/faults do);
- mloop `/v1` with micro-batching off (``MLOOP_SERVING_BATCHING=false``), logging on: what batching brings;
- MLServer (mlserver + mlserver-sklearn, one process: ``parallel_workers`` 0) with the pandas codec, so the
  pipeline gets the DataFrame it was fitted on; `mlflow models serve` with a ``dataframe_split`` body.
  Each lives in a venv of its own under .cache/serving-bench/, made on first use with pinned versions.
  Both answer ``predict`` only (their default); mloop answers labels and probabilities.

The model: scikit-learn's HistGradientBoostingClassifier behind mloop's preprocessing (a ColumnTransformer
imputing and scaling the 20 numeric columns), fitted on 50,000 x 20 synthetic rows with a fixed seed.
The anchors get ``OMP_NUM_THREADS=1`` (their best case on a small machine); mloop serving gets no thread
setting from outside (it limits its own native threads).

Concurrency 8 and 64, WARMUP seconds then DURATION seconds each; req/s, p50, p99 and failures (connect,
read, write and timeout errors and non-2xx answers), and the CPU time the server's processes spent per
answered request (steadier than req/s on a machine shared with other work), the cores the server used and the
cores everything else on the machine used meanwhile (wrk included; see ``machine_busy_seconds``), and for mloop
the mean requests per call of the model (micro-batching). Results, with the issue's ratios, go to
bench/results/serving_speed.json (``--out`` elsewhere); ``--only`` and ``--concurrency`` measure a part.
Then logging's cost once more, with logging on and off loaded at the same time (``side_by_side``): runs one
after the other on this shared machine vary too much for a 10 % threshold.

Environment: MLOOP_KAFKA__BOOTSTRAP_SERVERS (default 127.0.0.1:9092), MLOOP_TEST_PORT_OFFSET (ports: see
tests/stack.py; the others take 8101..8107 plus the offset), MLOOP_DATABASE_PORT (default 55432),
MLOOP_BENCH_SERVING_SECONDS (default 10), MLOOP_BENCH_SERVING_REPEATS (default 3: medians taken, and the
median of each repeat's ratios; see ``ratios``), MLOOP_BENCH_SERVING_PAIRS (default 8; see ``side_by_side``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from fastapi import Body, FastAPI

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as a plain script
    sys.path.insert(0, str(REPO))

from tests.perf.idle_cpu import TICKS, drop_schemas, group_cpu_seconds  # noqa: E402
from tests.stack import PORT_OFFSET, ServiceStack  # noqa: E402

CACHE = REPO / ".cache" / "serving-bench"
OUT = REPO / "bench" / "results" / "serving_speed.json"
PG_PORT = int(os.environ.get("MLOOP_DATABASE_PORT", "55432"))
ADMIN_DSN = f"postgresql://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
ADMIN_URL = f"postgresql+asyncpg://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
DURATION = float(os.environ.get("MLOOP_BENCH_SERVING_SECONDS", "10"))
WARMUP = 2.0
REPEATS = int(os.environ.get("MLOOP_BENCH_SERVING_REPEATS", "3"))
PAIRS = int(os.environ.get("MLOOP_BENCH_SERVING_PAIRS", "8"))  # single pairs vary by +-5 %: a median of 8
CONCURRENCY = (8, 64)
TIMEOUT = "10s"  # wrk's own default (2 s) would count slow answers as failures instead of measuring them

ROWS, WIDTH, SEED = 50_000, 20, 0
FEATURES = [f"f{i:02d}" for i in range(WIDTH)]
MODEL = "speed"
MLSERVER = ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "scikit-learn==1.9.1"]
MLFLOW = ["mlflow==3.17.2", "scikit-learn==1.9.1"]  # 3.18.0 needs an mlflow-skinny not on PyPI (yet)
ONE_THREAD = dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1")

# --- the HTTP floor --------------------------------------------------------------------------

echo_app = FastAPI()


@echo_app.post("/echo")
async def echo(body: dict[str, Any] = Body()) -> dict[str, Any]:  # noqa: B008 (FastAPI's idiom)
    """The request's JSON, parsed and answered back: what any JSON endpoint costs before it does any work."""
    return body


# --- tools and environments ------------------------------------------------------------------


def wrk() -> list[str]:
    """wrk from Debian (and the LuaJIT it links), unpacked into the cache; the command prefix to run it."""
    root = CACHE / "wrk"
    binary = root / "usr" / "bin" / "wrk"
    if not binary.exists():
        with tempfile.TemporaryDirectory() as work:
            for package in ("wrk", "libluajit-5.1-2"):
                done = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"apt-get download {package} failed (as root, run apt-get update): {done.stderr}"
                    )
            partial = root.with_name("wrk.partial")
            subprocess.run(["rm", "-rf", str(partial)], check=True)
            partial.mkdir(parents=True)  # dpkg-deb makes the folder, not its parents (a fresh cache has none)
            for deb in Path(work).glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(partial)], check=True)
            subprocess.run(["rm", "-rf", str(root)], check=True)
            partial.rename(root)
    libs = root / "usr" / "lib" / "x86_64-linux-gnu"
    return ["env", f"LD_LIBRARY_PATH={libs}", str(binary)]


def venv(name: str, packages: list[str], cache: Path = CACHE) -> Path:
    """A venv under the cache holding ``packages`` from PyPI, made on first use.

    Built in place (its scripts name their interpreter by path, so a venv cannot be moved once made); the
    marker is written last, so an interrupted install is made again from scratch.
    """
    path = cache / name
    if not (path / ".installed").exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(path)], check=True)
        subprocess.run(
            [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", *packages],
            check=True,
            timeout=1200,
            cwd=cache,  # not the repository: pip would take its egg-info for an installed package
        )
        (path / ".installed").touch()
    return path


# --- the model -------------------------------------------------------------------------------


def model_files() -> tuple[Path, dict[str, float]]:
    """The fitted pipeline (skops for mloop, joblib for the others) and its reference profile, cached by seed."""
    import joblib
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    from mloop_common.modelio import dump_model
    from mloop_common.profile import build_reference_profile

    root = CACHE / f"model-{ROWS}x{WIDTH}-seed{SEED}"
    rng = np.random.default_rng(SEED)
    frame = pd.DataFrame(rng.normal(size=(ROWS, WIDTH)), columns=FEATURES)
    noise = rng.normal(scale=0.5, size=ROWS)
    frame["label"] = np.where(frame["f00"] + frame["f01"] * frame["f02"] - frame["f03"] + noise > 0, "yes", "no")
    row = {f: round(float(v), 6) for f, v in frame.loc[123, FEATURES].items()}
    if not (root / "model.joblib").exists():
        # mloop's preprocessing around the estimator (services/trainer build_pipeline, numeric columns)
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        preprocess = ColumnTransformer([("numeric", numeric, FEATURES)], remainder="drop", sparse_threshold=0.0)
        model = Pipeline([("preprocess", preprocess), ("model", HistGradientBoostingClassifier(random_state=SEED))])
        model.fit(frame[FEATURES], frame["label"])
        partial = root.with_name(root.name + ".partial")
        partial.mkdir(parents=True, exist_ok=True)
        (partial / "model.skops").write_bytes(dump_model(model))
        joblib.dump(model, partial / "model.joblib")
        (partial / "profile.json").write_bytes(build_reference_profile(frame, FEATURES).to_json())
        frame.head(5)[FEATURES].to_json(partial / "sample.json", orient="split", index=False)
        subprocess.run(["rm", "-rf", str(root)], check=True)
        partial.rename(root)
    return root, row


# --- processes -------------------------------------------------------------------------------


class Processes:
    """Servers started here, each in its own process group, stopped together."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        with (self.logs / f"{name}.log").open("ab") as log:
            self.running[name] = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait(self, name: str, url: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running[name].poll() is not None:
                raise RuntimeError(f"{name} exited during start: {self.tail(name)}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{name} not ready after {timeout:.0f}s: {self.tail(name)}")

    def tail(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-1500:] if path.exists() else ""

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# --- targets ---------------------------------------------------------------------------------


class Target:
    """One endpoint: where to POST what, and how to tell that an answer is a real prediction."""

    def __init__(self, name: str, url: str, body: dict[str, Any], check: Callable[[Any], bool], answers: str) -> None:
        self.name, self.url, self.body, self.check, self.answers = name, url, body, check, answers
        self.process_group = 0  # of the server answering: its CPU time is read around each run
        self.metrics_url: str | None = None  # mloop's: where its batch sizes are read around each run

    def verify(self) -> None:
        response = httpx.post(self.url, json=self.body, timeout=30)
        if response.status_code != 200 or not self.check(response.json()):
            raise RuntimeError(f"{self.name}: unexpected answer {response.status_code} {response.text[:300]}")


def oip_body(row: dict[str, float]) -> dict[str, Any]:
    return {"inputs": [{"name": f, "shape": [1], "datatype": "FP64", "data": [v]} for f, v in row.items()]}


def run_wrk(command: list[str], target: Target, connections: int, seconds: float, work: Path) -> dict[str, Any]:
    script = work / f"{target.name}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = [==[{json.dumps(target.body, separators=(',', ':'))}]==]\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "done = function(s, latency, requests)\n"
        '  io.write(string.format("RESULT %d %d %d %d %d %d %d %d %d\\n", s.requests, s.duration,\n'
        "    s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout,\n"
        "    latency:percentile(50), latency:percentile(99)))\n"
        "end\n"
    )
    done = subprocess.run(
        [*command, "-t1", f"-c{connections}", f"-d{seconds:g}s", f"--timeout={TIMEOUT}", "-s", str(script), target.url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    match = re.search(r"^RESULT (.*)$", done.stdout, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk gave no result for {target.name}: {done.stdout} {done.stderr}")
    requests, duration, connect, read, write, status, timeouts, p50, p99 = (int(v) for v in match.group(1).split())
    failures = connect + read + write + status + timeouts
    answered = requests > 0  # none: every request was still waiting when the run ended (no latency to report)
    return {
        "requests_per_second": round((requests - status) / (duration / 1e6), 1),
        "p50_ms": round(p50 / 1000, 2) if answered else None,
        "p99_ms": round(p99 / 1000, 2) if answered else None,
        "requests": requests,
        "failures": failures,
    }


def side_by_side(
    command: list[str], on: Target, off: Target, connections: int, seconds: float, work: Path, *, on_first: bool
) -> dict[str, Any]:
    """Logging on and off loaded at the same time, each by its own wrk: what the machine's neighbours do then
    slows both alike, where runs one after the other can each catch a different moment (on this machine the
    same server's req/s varies by a third from one run to the next). The two servers share the cores, so each
    one's req/s is set by its CPU per request: their ratio is logging's cost in throughput when CPU-bound.

    ``on_first``: whose wrk starts first. Pairs of two identical servers came out 2-3 % apart, one side favoured
    by where it stood, so callers alternate it."""
    order = (on, off) if on_first else (off, on)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda target: run_wrk(command, target, connections, WARMUP, work), order))
        before = {target.name: group_cpu_seconds(target.process_group) for target in order}
        started = list(pool.map(lambda target: run_wrk(command, target, connections, seconds, work), order))
        after = {target.name: group_cpu_seconds(target.process_group) for target in order}
    by_name = {target.name: run for target, run in zip(order, started, strict=True)}
    runs = [by_name[on.name], by_name[off.name]]
    before_cpu, after_cpu = [before[on.name], before[off.name]], [after[on.name], after[off.name]]
    cpu = [
        1000 * (b - a) / run["requests"] if run["requests"] else None
        for a, b, run in zip(before_cpu, after_cpu, runs, strict=True)
    ]
    pair: dict[str, Any] = {
        "on_first": on_first,
        "on_requests_per_second": runs[0]["requests_per_second"],
        "off_requests_per_second": runs[1]["requests_per_second"],
        "on_cpu_ms_per_request": round(cpu[0], 3) if cpu[0] is not None else None,
        "off_cpu_ms_per_request": round(cpu[1], 3) if cpu[1] is not None else None,
        "failures": runs[0]["failures"] + runs[1]["failures"],
    }
    if runs[1]["requests_per_second"]:
        pair["throughput_ratio"] = round(runs[0]["requests_per_second"] / runs[1]["requests_per_second"], 4)
    if cpu[0] is not None and cpu[1]:
        pair["cpu_per_request_ratio"] = round(cpu[0] / cpu[1], 4)
    return pair


def model_calls(target: Target) -> tuple[float, float]:
    """mloop's requests scored and calls of the model so far (``mloop_serving_batch_requests``'s sum and count)."""
    if target.metrics_url is None:
        return 0.0, 0.0
    text = httpx.get(target.metrics_url, timeout=10).text
    found = {}
    for part in ("sum", "count"):
        match = re.search(rf'^mloop_serving_batch_requests_{part}{{model="{MODEL}"}} (\S+)$', text, re.MULTILINE)
        found[part] = float(match.group(1)) if match else 0.0
    return found["sum"], found["count"]


def machine_busy_seconds() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat: all but idle and iowait).

    With the server's own CPU time, a run tells how much of the machine the rest took meanwhile (``others_cores``:
    wrk, the broker, and anything else running): a collapse with the server's CPU per request unchanged and
    ``others_cores`` high is the machine being shared, not the server stalling; with ``others_cores`` at wrk's
    usual share and the server's cores low, the server waited on something.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / TICKS  # user nice system idle iowait irq softirq steal (guest is in user)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = (
        "requests_per_second",
        "p50_ms",
        "p99_ms",
        "server_cpu_ms_per_request",
        "server_cores",
        "others_cores",
        "requests_per_model_call",
    )
    summary: dict[str, Any] = {}
    for key in keys:
        values = [r[key] for r in runs if r.get(key) is not None]
        summary[key] = round(statistics.median(values), 2) if values else None
    summary["failures"] = sum(r["failures"] for r in runs)
    summary["runs"] = runs
    return summary


# --- the run ---------------------------------------------------------------------------------


def start_all(
    processes: Processes, stack: ServiceStack, files: Path, row: dict[str, float], only: set[str] | None = None
) -> tuple[list[Target], dict[str, str]]:
    """Every server ready, each target checked once; also why any anchor could not be measured.

    ``only``: the targets to measure (None: all); the anchors' servers start only when one of them is asked for.
    """
    skipped: dict[str, str] = {}
    base = 8100 + PORT_OFFSET
    anchor_env = {**os.environ, **ONE_THREAD}
    anchor_env.pop("PYTHONPATH", None)

    processes.start(
        "echo",
        [sys.executable, "-m", "uvicorn", "tests.perf.serving_speed:echo_app", "--port", str(base + 1)]
        + ["--workers", "1", "--log-level", "warning"],
        anchor_env,
    )
    processes.wait("echo", f"http://127.0.0.1:{base + 1}/docs")

    # mloop: registry and serving (logging on), then a second serving process with logging off
    stack.env.update(
        {
            "MLOOP_AUTH__OPEN_PREDICT": "true",
        }
    )
    for key in ONE_THREAD:
        stack.env.pop(key, None)
    stack.env["MLOOP_SERVING_LOG_SPILL_DIR"] = str(stack.artifacts.parent / "spill")
    stack.start("registry", "serving")
    stack.register_directly(
        MODEL,
        model=(files / "model.skops").read_bytes(),
        profile=(files / "profile.json").read_bytes(),
        features=FEATURES,
        target="label",
        estimator="HistGradientBoostingClassifier",
    )
    _wait_http(f"{stack.urls['serving']}/v2/models/{MODEL}/ready")
    stack.env.update(
        {"MLOOP_SERVING_LOG_PREDICTIONS": "false", "MLOOP_SERVING_INSTANCE_ID": f"bench-nolog-{stack.run_id}"}
    )
    stack.start_replica("serving", "serving-nolog", base + 6)
    # logging on, micro-batching off: what batching alone brings
    stack.env.update(
        {
            "MLOOP_SERVING_LOG_PREDICTIONS": "true",
            "MLOOP_SERVING_BATCHING": "false",
            "MLOOP_SERVING_INSTANCE_ID": f"bench-unbatched-{stack.run_id}",
        }
    )
    stack.start_replica("serving", "serving-unbatched", base + 7)
    for serving in ("serving-nolog", "serving-unbatched"):
        _wait_http(f"{stack.urls[serving]}/v2/models/{MODEL}/ready")

    def mloop_v1(answer: Any) -> bool:
        return answer["predictions"][0] in ("yes", "no") and len(answer["probabilities"][0]) == 2

    def mloop_oip(answer: Any) -> bool:
        return {o["name"] for o in answer["outputs"]} == {"predict", "predict_proba"}

    targets = [Target("echo", f"http://127.0.0.1:{base + 1}/echo", {"instances": [row]}, lambda a: bool(a), "echo")]
    for path in ("v1", "oip"):  # logging on and off back to back: their ratio is the one that matters most
        for label, serving in (("log-on", "serving"), ("log-off", "serving-nolog")):
            url = stack.urls[serving]
            if path == "v1":
                target = Target(
                    f"mloop-v1-{label}",
                    f"{url}/v1/models/{MODEL}:predict",
                    {"instances": [row]},
                    mloop_v1,
                    "label + probabilities",
                )
            else:
                target = Target(
                    f"mloop-oip-{label}",
                    f"{url}/v2/models/{MODEL}/infer",
                    oip_body(row),
                    mloop_oip,
                    "predict + predict_proba",
                )
            targets.append(target)

    unbatched = f"{stack.urls['serving-unbatched']}/v1/models/{MODEL}:predict"
    targets.append(Target("mloop-v1-unbatched", unbatched, {"instances": [row]}, mloop_v1, "label + probabilities"))
    for anchor, start in (("mlserver", start_mlserver), ("mlflow", start_mlflow)):
        if only is not None and anchor not in only:
            continue
        try:
            targets.append(start(processes, files, row, base, anchor_env))
        except Exception as exc:
            skipped[anchor] = f"{type(exc).__name__}: {exc}"[:1500]
    if only is not None:
        targets = [t for t in targets if t.name in only]
    groups = {
        "echo": processes.running["echo"].pid,
        "mloop-v1-log-on": stack.processes["serving"].pid,
        "mloop-oip-log-on": stack.processes["serving"].pid,
        "mloop-v1-log-off": stack.processes["serving-nolog"].pid,
        "mloop-oip-log-off": stack.processes["serving-nolog"].pid,
        "mloop-v1-unbatched": stack.processes["serving-unbatched"].pid,
        **{name: process.pid for name, process in processes.running.items() if name in ("mlserver", "mlflow")},
    }
    for target in targets:
        target.process_group = groups[target.name]
        if target.name.startswith("mloop-"):
            target.metrics_url = target.url.split("/v", 1)[0] + "/metrics"
        target.verify()
    return targets, skipped


def _wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not answering 200 after {timeout:.0f}s")


def start_mlserver(processes: Processes, files: Path, row: dict[str, float], base: int, env: dict[str, str]) -> Target:
    python = venv("mlserver-1.7.1", MLSERVER) / "bin"
    folder = processes.logs / "mlserver"
    (folder / MODEL).mkdir(parents=True, exist_ok=True)
    (folder / MODEL / "model.joblib").write_bytes((files / "model.joblib").read_bytes())
    (folder / MODEL / "model-settings.json").write_text(
        json.dumps(
            {"name": MODEL, "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"}}
        )
    )
    settings = {"http_port": base + 2, "grpc_port": base + 3, "metrics_port": base + 4, "parallel_workers": 0}
    (folder / "settings.json").write_text(json.dumps(settings))
    processes.start("mlserver", [str(python / "mlserver"), "start", str(folder)], env, cwd=folder)
    processes.wait("mlserver", f"http://127.0.0.1:{base + 2}/v2/models/{MODEL}/ready")
    body = {"parameters": {"content_type": "pd"}, **oip_body(row)}
    return Target(
        "mlserver",
        f"http://127.0.0.1:{base + 2}/v2/models/{MODEL}/infer",
        body,
        lambda a: a["outputs"][0]["data"][0] in ("yes", "no"),
        "predict",
    )


def start_mlflow(processes: Processes, files: Path, row: dict[str, float], base: int, env: dict[str, str]) -> Target:
    python = venv("mlflow-3.17.2", MLFLOW) / "bin"
    saved = processes.logs / "mlflow-model"
    # cloudpickle: MLflow 3's default format (skops) refuses HistGradientBoosting's tree nodes unless trusted by name
    save = (
        "import sys, joblib, pandas as pd, mlflow.sklearn\n"
        "from mlflow.models import infer_signature\n"
        "model = joblib.load(sys.argv[1]); sample = pd.read_json(sys.argv[2], orient='split')\n"
        "mlflow.sklearn.save_model(\n"
        "    model, sys.argv[3], signature=infer_signature(sample, model.predict(sample)),\n"
        "    serialization_format='cloudpickle')\n"
    )
    done = subprocess.run(
        [str(python / "python"), "-c", save, str(files / "model.joblib"), str(files / "sample.json"), str(saved)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"saving the model as an MLflow model failed: {done.stderr[-1000:]}")
    command = [str(python / "mlflow"), "models", "serve", "-m", str(saved), "-h", "127.0.0.1", "-p", str(base + 5)]
    processes.start(
        "mlflow", [*command, "-w", "1", "--env-manager", "local"], {**env, "PATH": f"{python}:{env['PATH']}"}
    )
    processes.wait("mlflow", f"http://127.0.0.1:{base + 5}/ping")
    body = {"dataframe_split": {"columns": list(row), "data": [list(row.values())]}}
    return Target(
        "mlflow",
        f"http://127.0.0.1:{base + 5}/invocations",
        body,
        lambda a: a["predictions"][0] in ("yes", "no"),
        "predict",
    )


def ratios(results: dict[str, dict[str, Any]], pairs: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """The issue's targets as ratios: of mloop against echo and of logging on against off, the median over repeats
    of each repeat's own ratio (the two ran back to back there, so what the machine's neighbours did in between
    weighs less than in a ratio of medians); of mloop against the anchors, the ratio of medians; logging's cost
    also from ``pairs`` (``side_by_side``), the median of the pairs' ratios. None where a target was not
    measured, or a denominator is zero."""

    def ratio(ours: float | None, theirs: float | None, digits: int = 3) -> float | None:
        return round(ours / theirs, digits) if ours is not None and theirs else None

    def paired(ours: str, theirs: str, key: str, metric: str) -> float | None:
        if ours not in results or theirs not in results or key not in results[ours] or key not in results[theirs]:
            return None
        pairs = zip(results[ours][key]["runs"], results[theirs][key]["runs"], strict=False)
        each = [ratio(a.get(metric), b.get(metric), 6) for a, b in pairs]
        found = [r for r in each if r is not None]
        return round(statistics.median(found), 3) if found else None

    out: dict[str, Any] = {}
    for key in sorted({c for by_c in results.values() for c in by_c}, key=lambda c: int(c[1:])):
        rate = {name: by_c[key]["requests_per_second"] for name, by_c in results.items() if key in by_c}
        cpu = {name: by_c[key]["server_cpu_ms_per_request"] for name, by_c in results.items() if key in by_c}
        anchors = {n: rate[n] for n in ("mlserver", "mlflow") if n in rate}
        faster = max(anchors, key=anchors.__getitem__) if anchors else None
        entry: dict[str, Any] = {"faster_anchor": faster}
        for path in ("v1", "oip"):
            on, off = f"mloop-{path}-log-on", f"mloop-{path}-log-off"
            entry[f"mloop_{path}_vs_echo"] = paired(on, "echo", key, "requests_per_second")
            # The same from the server's CPU per request: steadier when something else shares the machine
            entry[f"mloop_{path}_vs_echo_by_cpu"] = paired("echo", on, key, "server_cpu_ms_per_request")
            cost = paired(on, off, key, "requests_per_second")
            entry[f"mloop_{path}_logging_cost"] = round(1 - cost, 3) if cost is not None else None
            entry[f"mloop_{path}_logging_cpu_per_request"] = paired(on, off, key, "server_cpu_ms_per_request")
            together = pairs.get(path, {}).get(key, [])
            throughput = [p["throughput_ratio"] for p in together if "throughput_ratio" in p]
            cpu_ratios = [p["cpu_per_request_ratio"] for p in together if "cpu_per_request_ratio" in p]
            if throughput:
                entry[f"mloop_{path}_logging_cost_side_by_side"] = round(1 - statistics.median(throughput), 3)
            if cpu_ratios:
                entry[f"mloop_{path}_logging_cpu_per_request_side_by_side"] = round(statistics.median(cpu_ratios), 3)
            if faster and on in rate:
                entry[f"mloop_{path}_vs_faster_anchor"] = ratio(rate[on], anchors[faster], 2)
                entry[f"mloop_{path}_p99_vs_faster_anchor"] = ratio(
                    results[on][key]["p99_ms"], results[faster][key]["p99_ms"]
                )
                entry[f"mloop_{path}_cpu_per_request_vs_faster_anchor"] = ratio(cpu[on], cpu[faster])
        out[key] = entry
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--label", default="", help="what this run measures (kept in the results)")
    parser.add_argument(
        "--only", help="comma-separated targets to measure (e.g. echo,mloop-oip-log-on); default: every one"
    )
    parser.add_argument(
        "--concurrency", help=f"comma-separated connection counts (default {','.join(map(str, CONCURRENCY))})"
    )
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else None
    concurrency = tuple(int(c) for c in args.concurrency.split(",")) if args.concurrency else CONCURRENCY
    started = time.monotonic()
    command = wrk()
    files, row = model_files()
    bootstrap = os.environ.get("MLOOP_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    with tempfile.TemporaryDirectory(prefix="mloop-serving-bench-") as root:
        work = Path(root)
        stack = ServiceStack(bootstrap=bootstrap, database_url=ADMIN_URL, root=work, repo=REPO)
        processes = Processes(stack.logs)
        try:
            targets, skipped = start_all(processes, stack, files, row, only)
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {
                t.name: {f"c{c}": [] for c in concurrency} for t in targets
            }
            pairs: dict[str, dict[str, list[dict[str, Any]]]] = {}  # path, concurrency: logging on and off at once
            for repeat in range(REPEATS):
                for c in concurrency:
                    # Interleaved, so a busy moment of the machine hits every target alike; every other repeat in
                    # reverse order, so a machine slowly getting busier or quieter favours no target.
                    for target in targets if repeat % 2 == 0 else targets[::-1]:
                        run_wrk(command, target, c, WARMUP, work)
                        scored, calls = model_calls(target)
                        cpu, machine = group_cpu_seconds(target.process_group), machine_busy_seconds()
                        run = run_wrk(command, target, c, DURATION, work)
                        cpu = group_cpu_seconds(target.process_group) - cpu
                        machine = machine_busy_seconds() - machine
                        scored_after, calls_after = model_calls(target)
                        if calls_after > calls:
                            run["requests_per_model_call"] = round((scored_after - scored) / (calls_after - calls), 1)
                        run["server_cpu_ms_per_request"] = (
                            round(1000 * cpu / run["requests"], 2) if run["requests"] else None
                        )
                        run["server_cores"] = round(cpu / DURATION, 2)
                        run["others_cores"] = round((machine - cpu) / DURATION, 2)
                        runs[target.name][f"c{c}"].append(run)
                        print(target.name, c, runs[target.name][f"c{c}"][-1], flush=True)
            by_name = {target.name: target for target in targets}
            compared = [
                (path, by_name[f"mloop-{path}-log-on"], by_name[f"mloop-{path}-log-off"])
                for path in ("v1", "oip")
                if f"mloop-{path}-log-on" in by_name and f"mloop-{path}-log-off" in by_name
            ]
            # Round robin over paths and concurrencies: a pair varies with the moment (one minute's pairs all came
            # out 10 % low, the next minute's not), so every comparison gets pairs from every moment.
            for index in range(PAIRS):
                for c in concurrency:
                    for path, on, off in compared:
                        pair = side_by_side(command, on, off, c, DURATION, work, on_first=index % 2 == 0)
                        pairs.setdefault(path, {}).setdefault(f"c{c}", []).append(pair)
                        print("side by side", path, c, pair, flush=True)
        finally:
            processes.stop()
            codes = stack.stop()
            asyncio.run(drop_schemas(stack.schemas))
    results = {name: {c: median_of(r) for c, r in by_c.items()} for name, by_c in runs.items()}
    report = {
        "benchmark": "serving_speed",
        "label": args.label,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "method": {
            "load_generator": "wrk 4.1.0 (Debian), 1 thread, one single-row body repeated",
            "concurrency": list(concurrency),
            "warmup_seconds": WARMUP,
            "seconds": DURATION,
            "repeats": REPEATS,
            "order": "targets interleaved, every other repeat in reverse; logging on and off back to back",
            "ratios": "vs echo and logging cost: median of each repeat's ratio; vs the anchors: ratio of medians",
            "side_by_side": f"logging on and off loaded at the same time, {PAIRS} times per path and concurrency, "
            "every other time with logging off's wrk started first, in turn with the other paths and concurrencies; "
            "*_side_by_side: median of the pairs' ratios",
            "timeout": TIMEOUT,
            "model": f"Pipeline(ColumnTransformer(impute+scale), HistGradientBoostingClassifier), {ROWS}x{WIDTH}, "
            f"seed {SEED}",
            "workers": 1,
            "answers": {t.name: t.answers for t in targets},
            "anchors": {"mlserver": MLSERVER, "mlflow": MLFLOW, "threads": "OMP_NUM_THREADS=1 for the anchors"},
        },
        "results": results,
        "ratios": ratios(results, pairs),
        "logging_side_by_side": pairs,
        "not_measured": skipped,
        "exit_codes": codes,
        "seconds_total": round(time.monotonic() - started),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                "results": {
                    n: {c: {k: v for k, v in r.items() if k != "runs"} for c, r in by_c.items()}
                    for n, by_c in results.items()
                },
                "ratios": report["ratios"],
                "not_measured": skipped,
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
