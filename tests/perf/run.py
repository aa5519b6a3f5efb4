"""`make bench`: the pipeline's own overhead, measured over several runs of the demo loop.

Overhead = time from the triggering event (data.published, drift.detected) to serving
answering with the new version, minus the training job itself. Results go to
.run/bench/loop_overhead.json. Needs the stack (`make bench` starts it).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from mloop_cli.demo import DemoConfig, run_demo

RUNS = int(os.environ.get("MLOOP_BENCH_RUNS", "3"))
OUT = Path(".run/bench/loop_overhead.json")


async def main() -> int:
    console = Console()
    config = DemoConfig(
        ingest_url="http://127.0.0.1:8001",
        registry_url="http://127.0.0.1:8004",
        serving_url="http://127.0.0.1:8005",
        bootstrap_servers=os.environ.get("MLOOP_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
    runs = []
    for index in range(RUNS):
        result = await run_demo(config, Console(quiet=True))
        if not result.completed:
            console.print(f"[red]run {index + 1} failed:[/] {result.failure}")
            return 1
        runs.append({"model": result.model, **result.overhead, "accuracy": result.accuracy})
        console.print(
            f"run {index + 1}/{RUNS}: overhead v1 {result.overhead['v1']:.2f}s, v2 {result.overhead['v2']:.2f}s"
        )
    summary = {
        key: {"median": statistics.median(r[key] for r in runs), "max": max(r[key] for r in runs)}
        for key in ("v1", "v2", "v1_total", "v2_total", "v1_training", "v2_training")
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps({"measured_at": datetime.now(UTC).isoformat(), "runs": runs, "summary": summary}, indent=2)
    )
    console.print(
        f"pipeline overhead (trigger -> served, minus training): "
        f"v1 median {summary['v1']['median']:.2f}s max {summary['v1']['max']:.2f}s; "
        f"v2 median {summary['v2']['median']:.2f}s max {summary['v2']['max']:.2f}s -> {OUT}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
