"""What the conformance tests serve: two models trained through the whole loop, and mloop's own answers for them."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import numpy as np
import pandas as pd

from tests.stack import ServiceStack

# Every service, drift included: the stacks of a test session share one broker and the consumer groups,
# so a service left out would later read this stack's events in another stack that lacks its artifacts.
SERVICES = ("registry", "ingest", "trainer", "validator", "serving", "drift")


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: int
    features: list[str]
    rows: pd.DataFrame  # rows to score, without the target

    def column(self, feature: str) -> np.ndarray:
        values = self.rows[feature].to_numpy()
        return values.astype(np.object_) if values.dtype == object else values.astype(np.float64)


@dataclass(frozen=True)
class Served:
    url: str  # the serving service
    mixed: ServedModel
    numeric: ServedModel

    def simple_api_predictions(self, model: ServedModel) -> list[object]:
        """What mloop's own JSON API answers for the same rows: the reference the clients' answers must match."""
        instances = model.rows.to_dict("records")
        response = httpx.post(f"{self.url}/v1/models/{model.name}:predict", json={"instances": instances}, timeout=30)
        response.raise_for_status()
        return list(response.json()["predictions"])


def churn_frame(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "plan": rng.choice(["free", "basic", "pro"], size=rows),
            "usage": rng.normal(10, 3, size=rows).round(3),
            "calls": rng.integers(0, 12, size=rows).astype(float),
        }
    )
    score = (
        (frame["usage"] - 10) / 3 - (frame["calls"] - 6) / 4 + frame["plan"].map({"free": 0.8, "basic": 0, "pro": -0.8})
    )
    frame["churned"] = np.where(score + rng.normal(0, 0.3, size=rows) > 0, "yes", "no")
    return frame


def declare_and_publish(stack: ServiceStack, name: str, frame: pd.DataFrame, features: list[str]) -> None:
    spec = {
        "name": name,
        "dataset": name,
        "task": "classification",
        "target": "churned",
        "features": features,
        "estimators": [{"class": "LogisticRegression", "params": {"C": [1.0]}}],
        "search": {"strategy": "grid", "cv": 2},
        "metric": "accuracy",
        "promotion": {"require_approval": False},
    }
    httpx.post(f"{stack.urls['registry']}/v1/models", json=spec, headers=stack.headers, timeout=30).raise_for_status()
    httpx.post(
        f"{stack.urls['ingest']}/v1/datasets/{name}/versions",
        data={"target": "churned"},
        files={"file": ("data.csv", frame.to_csv(index=False).encode(), "text/csv")},
        headers=stack.headers,
        timeout=60,
    ).raise_for_status()


def wait_until_served(stack: ServiceStack, names: list[str], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            if httpx.get(f"{stack.urls['serving']}/v2/models/{name}/ready", timeout=5).status_code == 200:
                pending.discard(name)
        time.sleep(0.5)
    if pending:
        raise RuntimeError(
            f"not served after {timeout:.0f}s: {sorted(pending)}\n"
            + "\n".join(f"--- {s}\n{stack.log_tail(s)}" for s in ("trainer", "validator", "serving"))
        )
