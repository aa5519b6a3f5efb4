"""`make bench`: does drift keep up with serving at 2,000 predictions/s? Measured on a real broker and database.

A fresh single-node broker of its own (deploy/local/kafka.sh on MLOOP_BENCH_KAFKA_PORT, default 19392, fresh
storage: no old events, no other stack's drift in the consumer group), the local PostgreSQL, and registry +
drift as their own processes (tests/stack.py). A classifier is registered directly, so it becomes production
and drift watches it (default policy: windows of 1,000 predictions). Then ``predictions.logged`` events go
straight to Kafka, shaped as serving's logbook sends them (events of 500 records, one model and version; 20
numeric inputs, a label and two probabilities each; unshifted data, so no alarm), in two runs:

- paced: 2,000 records/s (one 500-record event every 0.25 s, as the logbook flushes at that rate) for
  MLOOP_BENCH_DRIFT_SECONDS (default 90 s: a backlog that builds slowly shows, as one did after 55 s);
- flood: MLOOP_BENCH_DRIFT_FLOOD records (default 60,000) published as fast as the producer goes, to see
  how fast drift drains a backlog.

Every quarter second (the time to drain is not rounded up to whole seconds): records published (producer
side), records drift has handled (its ``mloop_events_consumed_total`` for predictions.logged x 500), their
difference (the lag, in records), drift's own lag gauge, and drift's CPU seconds (its process group). At the
end, the windows drift judged (reports from its API). Drift's CPU per 1,000 records excludes PostgreSQL's
(shared with other work on this machine).

Where the time goes: the same events replayed in this process through drift's handler (`DriftMonitor` on a
schema of its own, decoded from Kafka's bytes as the consumer does), MLOOP_BENCH_DRIFT_PROFILE records (default
20,000) once as they are and once more under cProfile: records/s, wall and CPU seconds per 1,000 records, the
share of the handler's time in each of drift's steps and the functions that take the most.
Results go to bench/results/drift_throughput.json.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also runnable as a plain script
    sys.path.insert(0, str(REPO))

from mloop_common.artifacts import ArtifactStore  # noqa: E402
from mloop_common.bus import BusConfig, Producer  # noqa: E402
from mloop_common.db import Database  # noqa: E402
from mloop_common.events import (  # noqa: E402
    ArtifactPointer,
    Envelope,
    ModelPromoted,
    PredictionRecord,
    PredictionsLogged,
    from_record,
    new_event,
    to_record,
)
from mloop_common.uow import SqlStore  # noqa: E402
from mloop_drift.handlers import DriftMonitor, WindowRules  # noqa: E402
from mloop_drift.store import SqlDriftUnit  # noqa: E402
from tests.perf.idle_cpu import drop_schemas, group_cpu_seconds  # noqa: E402
from tests.perf.serving_speed import FEATURES, model_files  # noqa: E402
from tests.stack import ServiceStack  # noqa: E402

OUT = REPO / "bench" / "results" / "drift_throughput.json"
LOCAL = REPO / "deploy" / "local"
KAFKA_PORT = int(os.environ.get("MLOOP_BENCH_KAFKA_PORT", "19392"))
PG_PORT = int(os.environ.get("MLOOP_DATABASE_PORT", "55432"))
ADMIN_DSN = f"postgresql://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
ADMIN_URL = f"postgresql+asyncpg://mloop:mloop@127.0.0.1:{PG_PORT}/mloop"
RATE = 2_000  # records/s: the serving rate
BATCH = 500  # records per event: serving's logbook default (batch_size)
SECONDS = float(os.environ.get("MLOOP_BENCH_DRIFT_SECONDS", "90"))
FLOOD = int(os.environ.get("MLOOP_BENCH_DRIFT_FLOOD", "60000"))
PROFILED = int(os.environ.get("MLOOP_BENCH_DRIFT_PROFILE", "20000"))
WINDOW = 1_000  # the default drift window (predictions)
SAMPLE_SECONDS = 0.25
MODEL = "driftspeed"
DRAIN_TIMEOUT = 300.0
STEPS = {
    "on_predictions_logged",
    "record_predictions",
    "lock_monitored",
    "already_logged",
    "open_rows",
    "_fill_count_windows",
    "window_rows",
    "_judge_complete_windows",
    "_judge_window",
    "_evaluate",
    "evaluate",
    "add_report",
    "update_report",
    "advance",
    "claim",
}


def kafka(command: str) -> None:
    env = {
        **os.environ,
        "MLOOP_RUN": str(REPO / ".run" / f"bench-kafka-{KAFKA_PORT}"),
        "KAFKA_PORT": str(KAFKA_PORT),
        "KAFKA_CONTROLLER_PORT": str(KAFKA_PORT + 1),
    }
    subprocess.run([str(LOCAL / "kafka.sh"), command], env=env, check=True, stdout=subprocess.DEVNULL)


def events(count: int, seed: int) -> list[Envelope]:
    """``count`` records as serving's logbook would publish them, built before the clock starts."""
    rng = np.random.default_rng(seed)
    values = np.round(rng.normal(size=(count, len(FEATURES))), 6).tolist()
    now = datetime.now(UTC)
    records = [
        PredictionRecord(
            request_id=uuid.uuid4().hex,
            timestamp=now,
            inputs=dict(zip(FEATURES, row, strict=True)),
            prediction="yes" if row[0] > 0 else "no",
            probabilities=[0.3, 0.7] if row[0] > 0 else [0.7, 0.3],
        )
        for row in values
    ]
    return [
        new_event(
            PredictionsLogged(model=MODEL, version=1, records=records[start : start + BATCH]),
            source="mloop/serving",
            subject=MODEL,
        )
        for start in range(0, count, BATCH)
    ]


class Drift:
    """What drift says about itself: records handled (from its metrics), its lag gauge, its CPU, its reports."""

    def __init__(self, stack: ServiceStack) -> None:
        self.stack = stack
        self.url = stack.urls["drift"]
        self.pgid = stack.processes["drift"].pid

    def handled(self) -> tuple[int, int]:
        """(predictions.logged events handled, drift's own lag gauge summed over partitions, in events)."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        consumed = lag = 0.0
        for line in text.splitlines():
            if 'topic="predictions.logged"' not in line:
                continue
            if line.startswith("mloop_events_consumed_total{") and 'outcome="ok"' in line:
                consumed += float(line.rsplit(" ", 1)[1])
            elif line.startswith("mloop_consumer_lag{"):
                lag += float(line.rsplit(" ", 1)[1])
        return int(consumed), int(lag)

    def reports(self) -> int:
        response = httpx.get(
            f"{self.url}/v1/drift/{MODEL}/reports", params={"limit": 500}, headers=self.stack.headers, timeout=30
        )
        response.raise_for_status()
        return len(response.json()["reports"])

    def cpu(self) -> float:
        return group_cpu_seconds(self.pgid)


async def run(name: str, producer: Producer, drift: Drift, batches: list[Envelope], interval: float) -> dict[str, Any]:
    """Publish ``batches`` one every ``interval`` seconds (0: as fast as it goes), sampling drift every
    SAMPLE_SECONDS until it has handled them all."""
    start_events, _ = drift.handled()
    target = start_events + len(batches)
    cpu0 = drift.cpu()
    published = 0
    samples: list[dict[str, Any]] = []
    started = time.monotonic()

    async def publish() -> None:
        nonlocal published
        for index, event in enumerate(batches):
            if interval:
                await asyncio.sleep(max(0.0, started + index * interval - time.monotonic()))
            await producer.publish(event)
            published += 1

    sender = asyncio.create_task(publish())
    sent_at: float | None = None
    while True:
        await asyncio.sleep(SAMPLE_SECONDS)
        handled, gauge = await asyncio.to_thread(drift.handled)
        now = time.monotonic() - started
        if sender.done() and sent_at is None:
            sender.result()
            sent_at = now
        done = handled - start_events
        samples.append(
            {
                "t": round(now, 1),
                "published": published * BATCH,
                "handled": done * BATCH,
                "lag_records": (published - done) * BATCH,
                "drift_lag_gauge_records": gauge * BATCH,
                "drift_cpu_s": round(drift.cpu() - cpu0, 2),
            }
        )
        if len(samples) % round(1 / SAMPLE_SECONDS) == 0:
            print(name, samples[-1], flush=True)
        if handled >= target:
            break
        if now > (sent_at or now) + DRAIN_TIMEOUT:
            raise RuntimeError(f"{name}: drift handled {done} of {len(batches)} events {DRAIN_TIMEOUT:.0f}s after")
    elapsed = time.monotonic() - started
    cpu = drift.cpu() - cpu0
    records = len(batches) * BATCH
    assert sent_at is not None
    lags = [s["lag_records"] for s in samples]
    # Steady state: the second half of the publishing period, where a growing lag would show.
    half = [s for s in samples if sent_at / 2 <= s["t"] <= sent_at]
    return {
        "records": records,
        "events": len(batches),
        "target_records_per_second": round(BATCH / interval) if interval else None,
        "published_in_s": round(sent_at, 1),
        "published_records_per_second": round(records / sent_at, 1),
        "handled_in_s": round(elapsed, 1),
        "handled_records_per_second": round(records / elapsed, 1),
        "drain_after_publishing_s": round(elapsed - sent_at, 1),
        "max_lag_records": max(lags),
        "lag_records_second_half": [s["lag_records"] for s in half],
        "drift_cpu_s": round(cpu, 2),
        "drift_cpu_s_per_1000_records": round(1000 * cpu / records, 3),
        "drift_cpu_share": round(cpu / elapsed, 3),
        "samples": samples,
    }


async def measure(stack: ServiceStack, bootstrap: str) -> dict[str, Any]:
    drift = Drift(stack)
    producer = Producer(BusConfig(bootstrap_servers=bootstrap, client_id="drift-bench"))
    await producer.start()
    try:
        # Warm-up: two windows, judged once drift has taken the promotion (its reports say so).
        for event in events(2 * WINDOW, seed=1):
            await producer.publish(event)
        deadline = time.monotonic() + 120
        while await asyncio.to_thread(drift.reports) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"drift judged no warm-up window:\n{stack.log_tail('drift')}")
            await asyncio.sleep(0.5)
        reports_before = await asyncio.to_thread(drift.reports)
        paced = await run("paced", producer, drift, events(int(RATE * SECONDS), seed=2), BATCH / RATE)
        flood = await run("flood", producer, drift, events(FLOOD, seed=3), 0.0)
        judged = await asyncio.to_thread(drift.reports) - reports_before
    finally:
        await producer.stop()
    return {"paced": paced, "flood": flood, "windows_judged": judged}


async def replay(profile: bytes, root: Path) -> dict[str, Any]:
    """Drift's handler in this process on a schema of its own, under cProfile: where a record's time goes."""
    schema = f"bench_drift_{uuid.uuid4().hex[:8]}"
    database = Database(ADMIN_URL, schema=schema, pool_size=2)
    await database.migrate("mloop_drift:migrations")
    try:
        artifacts = ArtifactStore(root / "replay-artifacts")
        stored = artifacts.put(profile, kind="profiles", suffix=".json")
        pointer = ArtifactPointer(uri=stored.uri, sha256=stored.sha256)
        monitor = DriftMonitor(
            store=SqlStore(database, SqlDriftUnit, consumer="drift-bench"),
            artifacts=artifacts,
            rules=WindowRules(min_labelled_rows=1000, recent_rows=20_000),
            clock=lambda: datetime.now(UTC),
        )
        promoted = ModelPromoted(
            model=MODEL,
            version=1,
            reason="policy",
            task="classification",
            target="label",
            artifact=pointer,
            profile=pointer,
            features=FEATURES,
            metrics={"accuracy": 0.9},
            drift_window=WINDOW,
        )
        await monitor.on_model_promoted(promoted, new_event(promoted, source="drift-bench", subject=MODEL))

        async def handle_all(wire: list[Any]) -> None:
            for _, value, headers in wire:
                event = from_record(value, headers)
                await monitor.on_predictions_logged(event.decode(PredictionsLogged), event)

        # Once without the profiler (its overhead nearly doubles the time), then once with it; each on
        # records of its own, encoded beforehand as the consumer gets them from Kafka.
        plain = [to_record(event) for event in events(PROFILED, seed=4)]
        profiled = [to_record(event) for event in events(PROFILED, seed=5)]
        plain_wall, plain_cpu = time.perf_counter(), time.process_time()
        await handle_all(plain)
        plain_wall, plain_cpu = time.perf_counter() - plain_wall, time.process_time() - plain_cpu
        profiler = cProfile.Profile()
        wall, cpu = time.perf_counter(), time.process_time()
        profiler.enable()
        await handle_all(profiled)
        profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    finally:
        await database.dispose()
        await drop_schemas([schema])
    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
        rows.append(
            {
                "function": f"{Path(file).name}:{line}({name})",
                "calls": calls,
                "own_s": round(tottime, 3),
                "cumulative_s": round(cumtime, 3),
            }
        )
    # drift's own steps (cumulative, so nested calls overlap: shares do not add up to 1)
    steps = {
        f"{Path(file).stem}.{name}": round(cumtime / wall, 3)
        for (file, _, name), (_, _, _, cumtime, _) in stats.stats.items()
        if ("mloop_drift" in file or file.endswith("mloop_common/uow.py")) and name in STEPS
    }
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(40)
    print(text.getvalue()[-12000:], flush=True)
    return {
        "records": PROFILED,
        "unprofiled": {
            "records_per_second": round(PROFILED / plain_wall, 1),
            "wall_s_per_1000_records": round(1000 * plain_wall / PROFILED, 3),
            "cpu_s_per_1000_records": round(1000 * plain_cpu / PROFILED, 3),
        },
        "profiled": "the figures below, under cProfile",
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "records_per_second": round(PROFILED / wall, 1),
        "wall_s_per_1000_records": round(1000 * wall / PROFILED, 3),
        "cpu_s_per_1000_records": round(1000 * cpu / PROFILED, 3),
        "waiting_share": round(1 - cpu / wall, 3),
        "share_of_wall": dict(sorted(steps.items(), key=lambda item: -item[1])),
        "top_cumulative": sorted(rows, key=lambda r: -r["cumulative_s"])[:40],
        "top_own": sorted(rows, key=lambda r: -r["own_s"])[:25],
    }


def main() -> int:
    started = time.monotonic()
    files, _ = model_files()
    subprocess.run([str(LOCAL / "postgres.sh"), "start"], check=True, stdout=subprocess.DEVNULL)
    kafka("reset")
    kafka("start")
    bootstrap = f"127.0.0.1:{KAFKA_PORT}"
    try:
        with tempfile.TemporaryDirectory(prefix="mloop-drift-bench-") as root:
            stack = ServiceStack(bootstrap=bootstrap, database_url=ADMIN_URL, root=Path(root), repo=REPO)
            try:
                stack.start("registry", "drift")
                stack.register_directly(
                    MODEL,
                    model=(files / "model.skops").read_bytes(),
                    profile=(files / "profile.json").read_bytes(),
                    features=FEATURES,
                    target="label",
                    estimator="HistGradientBoostingClassifier",
                )
                results = asyncio.run(measure(stack, bootstrap))
            finally:
                codes = stack.stop()
                asyncio.run(drop_schemas(stack.schemas))
            # after the stack has stopped, so the profiled replay has the machine to itself
            profiled = asyncio.run(replay((files / "profile.json").read_bytes(), Path(root)))
    finally:
        kafka("stop")
    paced, flood = results["paced"], results["flood"]
    second_half = paced["lag_records_second_half"]
    report = {
        "benchmark": "drift_throughput",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "method": {
            "broker": f"fresh single-node Kafka on {bootstrap}",
            "database": "local PostgreSQL (shared)",
            "services": ["registry", "drift"],
            "event": f"predictions.logged, {BATCH} records each, {len(FEATURES)} numeric inputs",
            "drift_window": WINDOW,
            "paced_seconds": SECONDS,
            "flood_records": FLOOD,
            "lag": "records published minus records drift handled (its mloop_events_consumed_total x batch)",
        },
        "paced": paced,
        "flood": flood,
        "windows_judged": results["windows_judged"],
        "replay": profiled,
        "keeps_up_at_2000_per_second": bool(
            paced["handled_records_per_second"] >= 0.95 * RATE
            and paced["drain_after_publishing_s"] <= 5
            and (not second_half or max(second_half) <= 4 * WINDOW)
        ),
        "headroom": round(flood["handled_records_per_second"] / RATE, 2),
        "exit_codes": codes,
        "seconds_total": round(time.monotonic() - started),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    summary = {k: v for k, v in report.items() if k not in ("paced", "flood", "machine", "method", "replay")}
    for name in ("paced", "flood"):
        summary[name] = {k: v for k, v in report[name].items() if k != "samples"}
    summary["replay"] = {k: v for k, v in profiled.items() if not k.startswith("top_")}
    print(json.dumps(summary, indent=1))
    print(f"-> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
