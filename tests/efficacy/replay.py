"""Replays a dataset through the real stack as an application would, and reads back what drift decided.

A scenario publishes its history as dataset version 1, waits until serving has version 1, then sends
its traffic window by window in time order: the window's predictions first, its labels after (for
event-time windows, after the next window's predictions, when the window has closed). It reads the
drift reports, counts drift-triggered training runs and, when a retrained version was registered,
compares it with the stale one on the period that follows the traffic (never sent to serving).
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import pandas as pd
import yaml

from mloop_common.artifacts import ArtifactStore
from mloop_common.modelio import load_model
from mloop_common.spec import duration_seconds

REQUEST_ROWS = 250  # rows per predict request


@dataclass
class Scenario:
    name: str  # the table's dataset column
    key: str  # part of the model name
    task: Literal["classification", "regression"]
    target: str
    time_column: str
    metric: str
    history: pd.DataFrame  # published as dataset version 1
    windows: list[pd.DataFrame]  # traffic, one frame per drift window, in time order
    shift_at: int | None  # the first window of the new regime (None: no shift)
    following: pd.DataFrame | None = None  # the period after the traffic, to compare stale and retrained
    drift: dict[str, Any] = field(default_factory=dict)  # the spec's drift section
    retrain: dict[str, Any] = field(default_factory=dict)
    features: list[str] | None = None
    # What replaces the window's rows before they are sent (the injected faults), by window position.
    corrupt: dict[int, Any] = field(default_factory=dict)
    wait_for_retrain: bool = True


@dataclass
class Outcome:
    dataset: str
    model: str
    windows_sent: int = 0
    shift_at: int | None = None
    detected_at: int | None = None  # first window whose verdict is `retrain`, as a position in the traffic
    cause: str | None = None  # the cause of that verdict
    retrains: int = 0  # drift-triggered training runs
    metric: str = ""
    stale: float | None = None  # version 1 on the following period
    retrained: float | None = None  # the retrained version on the same rows
    verdicts: list[dict[str, Any]] = field(default_factory=list)  # every window of version 1, at its latest
    failure: str | None = None

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "verdicts"}


class Replay:
    def __init__(self, urls: dict[str, str], artifacts: Path, timeout: float, headers: dict[str, str]) -> None:
        self.urls = urls
        self.headers = headers
        self.artifacts = ArtifactStore(artifacts)
        self.timeout = timeout

    async def run(self, scenario: Scenario) -> Outcome:
        model = f"eff-{scenario.key}-{uuid.uuid4().hex[:6]}"
        outcome = Outcome(dataset=scenario.name, model=model, shift_at=scenario.shift_at, metric=scenario.metric)
        clients = {
            name: httpx.AsyncClient(base_url=url, timeout=60, headers=self.headers) for name, url in self.urls.items()
        }
        try:
            await self._declare_and_publish(scenario, model, clients)
            await self._until(lambda: _serves(clients["serving"], model, 1), f"{model} v1 served")
            await self._traffic(scenario, model, clients, outcome)
            try:
                await self._settle(scenario, model, clients, outcome)
            finally:
                await self._read_verdicts(scenario, model, clients, outcome)
            if scenario.following is not None and await _registered(clients["registry"], model, 2):
                outcome.stale = await self._score(scenario, model, 1, clients["registry"])
                outcome.retrained = await self._score(scenario, model, 2, clients["registry"])
        except Exception as exc:  # the table shows what went wrong; the tests fail on it
            outcome.failure = f"{type(exc).__name__}: {exc}"
        finally:
            for client in clients.values():
                await client.aclose()
        return outcome

    async def _declare_and_publish(self, scenario: Scenario, model: str, clients: dict[str, httpx.AsyncClient]) -> None:
        spec: dict[str, Any] = {
            "name": model,
            "dataset": model,
            "task": scenario.task,
            "target": scenario.target,
            "time_column": scenario.time_column,
            "estimators": [
                {
                    "class": "HistGradientBoostingClassifier"
                    if scenario.task == "classification"
                    else "HistGradientBoostingRegressor",
                    "params": {"max_iter": [100]},
                }
            ],
            "metric": scenario.metric,
            "drift": scenario.drift,
            "retrain": scenario.retrain,
        }
        if scenario.features is not None:
            spec["features"] = scenario.features
        response = await clients["registry"].post(
            "/v1/models", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"}
        )
        response.raise_for_status()
        response = await clients["ingest"].post(
            f"/v1/datasets/{model}/versions",
            data={"target": scenario.target, "time_column": scenario.time_column},
            files={"file": (f"{model}.csv", scenario.history.to_csv(index=False).encode(), "text/csv")},
        )
        response.raise_for_status()

    async def _traffic(
        self, scenario: Scenario, model: str, clients: dict[str, httpx.AsyncClient], outcome: Outcome
    ) -> None:
        """Each window's predictions, then its labels; an event-time window gets them once the next window's
        predictions closed it and drift judged it without them."""
        serving = clients["serving"]
        lag = 1 if "window_time" in scenario.drift else 0
        indices = {position: index for index, position in _positions(scenario, []).items()}
        pending: list[list[dict[str, Any]]] = []
        for position, window in enumerate(scenario.windows):
            instances = window.drop(columns=[scenario.target]).to_dict("records")
            if position in scenario.corrupt:
                instances = [scenario.corrupt[position](row) for row in instances]
            ids: list[str] = []
            newer_version = False
            for start in range(0, len(instances), REQUEST_ROWS):
                response = await serving.post(
                    f"/v1/models/{model}:predict",
                    json={"instances": _json_safe(instances[start : start + REQUEST_ROWS])},
                )
                response.raise_for_status()
                body = response.json()
                ids += body["request_ids"]
                newer_version |= body["model_version"] > 1
            outcome.windows_sent = position + 1
            pending.append(
                [{"request_id": i, "label": _plain(y)} for i, y in zip(ids, window[scenario.target], strict=True)]
            )
            while len(pending) > lag:
                if lag:
                    closed = indices[position - lag]
                    judged = functools.partial(_judged, clients["drift"], model, closed)
                    await self._until(judged, f"{model}: window {closed} judged")
                (await serving.post("/v1/feedback", json=pending.pop(0))).raise_for_status()
            if newer_version:
                break  # the retrained version serves: the rest is the next period, not this version's traffic
        for labels in pending:
            (await serving.post("/v1/feedback", json=labels)).raise_for_status()

    async def _settle(
        self, scenario: Scenario, model: str, clients: dict[str, httpx.AsyncClient], outcome: Outcome
    ) -> None:
        """Wait until drift has judged the traffic with its labels, and for the retrained version if one is due."""
        if scenario.wait_for_retrain:
            await self._until(lambda: _registered(clients["registry"], model, 2), f"{model} v2 registered")
            return
        expected = outcome.windows_sent - (1 if "window_time" in scenario.drift else 0)

        async def judged_with_labels() -> bool:
            reports = await _reports(clients["drift"], model, 1)
            return len(reports) >= expected and all((r["label_coverage"] or 0) >= 1 for r in reports)

        await self._until(judged_with_labels, f"{model}: {expected} windows judged with their labels")
        # A retrain emitted by the last revision would reach the trainer within a moment: let it.
        await asyncio.sleep(3)

    async def _read_verdicts(
        self, scenario: Scenario, model: str, clients: dict[str, httpx.AsyncClient], outcome: Outcome
    ) -> None:
        reports = sorted(await _reports(clients["drift"], model, 1), key=lambda r: r["window_index"])
        positions = _positions(scenario, reports)
        outcome.verdicts = [
            {
                "window": positions.get(r["window_index"]),
                "cause": r["cause"],
                "action": r["action"],
                "revision": r["revision"],
                "basis": r["basis"],
                "coverage": r["label_coverage"],
                "emitted": r["emitted"],
                "held_for": r["held_for"],
                "summary": r["summary"],
            }
            for r in reports
        ]
        retrain = [v for v in outcome.verdicts if v["action"] == "retrain"]
        # Detected: the first `retrain` verdict, else (a fault) the first alarm from the shift on.
        alarms = [
            v
            for v in outcome.verdicts
            if v["action"] is not None and v["window"] is not None and v["window"] >= (scenario.shift_at or 0)
        ]
        detected = retrain or (alarms if scenario.shift_at is not None else [])
        if detected:
            outcome.detected_at, outcome.cause = detected[0]["window"], detected[0]["cause"]
        runs = (await clients["trainer"].get("/v1/runs", params={"model": model})).json()
        outcome.retrains = sum(r["trigger"] == "drift.detected" for r in runs["runs"] + runs["training"])

    async def _score(self, scenario: Scenario, model: str, version: int, registry: httpx.AsyncClient) -> float:
        info = (await registry.get(f"/v1/models/{model}/versions/{version}")).json()
        estimator = load_model(self.artifacts.get(info["artifact"]["uri"], info["artifact"]["sha256"]))
        assert scenario.following is not None
        predicted = estimator.predict(scenario.following[info["features"]])
        truth = scenario.following[scenario.target].to_numpy()
        if scenario.task == "classification":
            return float((predicted == truth).mean())
        return float(np.sqrt(np.mean((predicted - truth) ** 2)))

    async def _until(self, predicate: Any, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if await predicate():
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"{what}: not within {self.timeout:.0f}s")


def _positions(scenario: Scenario, reports: list[dict[str, Any]]) -> dict[int, int]:
    """Drift's window index -> the window's position in the scenario's traffic."""
    if "window_time" in scenario.drift:
        seconds = duration_seconds(scenario.drift["window_time"])
        starts = [datetime.fromisoformat(w[scenario.time_column].iloc[0]).replace(tzinfo=UTC) for w in scenario.windows]
        return {int(start.timestamp() // seconds): position for position, start in enumerate(starts)}
    first = min((r["window_index"] for r in reports), default=0)  # count windows are numbered in order
    return {first + position: position for position in range(len(scenario.windows))}


async def _serves(serving: httpx.AsyncClient, model: str, version: int) -> bool:
    # Metadata, not a prediction: a probe must not land in the windows.
    response = await serving.get(f"/v2/models/{model}")
    return response.status_code == 200 and int(response.json()["versions"][0]) >= version


async def _registered(registry: httpx.AsyncClient, model: str, version: int) -> bool:
    return (await registry.get(f"/v1/models/{model}/versions/{version}")).status_code == 200


async def _judged(drift: httpx.AsyncClient, model: str, index: int) -> bool:
    return any(r["window_index"] == index for r in await _reports(drift, model, 1))


async def _reports(drift: httpx.AsyncClient, model: str, version: int) -> list[dict[str, Any]]:
    reports = (await drift.get(f"/v1/drift/{model}/reports", params={"limit": 500})).json()["reports"]
    return [r for r in reports if r["version"] == version]


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _json_safe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: None if isinstance(v, float) and math.isnan(v) else _plain(v) for k, v in row.items()} for row in rows]
