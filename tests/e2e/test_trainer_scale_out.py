"""Two trainer processes in one consumer group share the datasets to train on, and no run is trained twice."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pandas as pd
from aiokafka.partitioner import murmur2

from tests.stack import PORT_OFFSET, ServiceStack

PARTITIONS = 3  # the topics' partition count (mloop's default)
SECOND_TRAINER_PORT = 8102 + PORT_OFFSET


def partition_of(key: str) -> int:
    """Where the producer puts an event with this key (Kafka's default partitioner)."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % PARTITIONS


def one_name_per_partition(prefix: str) -> list[str]:
    """Dataset names whose data.published events land on each partition: whatever the split between the two
    trainers, each gets some."""
    names: dict[int, str] = {}
    for index in range(1000):
        names.setdefault(partition_of(f"{prefix}-{index}"), f"{prefix}-{index}")
        if len(names) == PARTITIONS:
            break
    return [names[p] for p in range(PARTITIONS)] * 2  # two datasets per partition


def frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 2))
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": np.where(x.sum(axis=1) > 0, "yes", "no")})


def wait_for(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout:.0f}s")


def test_two_trainers_share_the_work_and_train_each_dataset_version_once(stack: ServiceStack) -> None:
    stack.start_replica("trainer", "trainer-2", SECOND_TRAINER_PORT)
    wait_for(
        lambda: "mloop-trainer-data: partitions assigned" in stack.log_tail("trainer-2", 100_000),
        60,
        "the second trainer joining the group",
    )
    prefix = f"scale-{stack.run_id}"
    names = sorted(set(one_name_per_partition(prefix)))
    for index, name in enumerate(names):
        spec = {
            "name": name,
            "dataset": name,
            "task": "classification",
            "target": "label",
            "estimators": [{"class": "LogisticRegression", "params": {"C": [0.5, 1.0]}}],
            "search": {"strategy": "grid", "cv": 3},
            "metric": "accuracy",
        }
        httpx.post(
            f"{stack.urls['registry']}/v1/models", json=spec, headers=stack.headers, timeout=30
        ).raise_for_status()
        for version in (1, 2):
            httpx.post(
                f"{stack.urls['ingest']}/v1/datasets/{name}/versions",
                data={"target": "label"},
                files={"file": ("data.csv", frame(10 * index + version).to_csv(index=False).encode(), "text/csv")},
                headers=stack.headers,
                timeout=60,
            ).raise_for_status()

    def runs() -> list[dict]:  # type: ignore[type-arg]
        listed = httpx.get(
            f"{stack.urls['trainer']}/v1/runs", params={"limit": 500}, headers=stack.headers, timeout=30
        ).json()["runs"]
        return [run for run in listed if run["model"].startswith(prefix)]

    wait_for(lambda: len(runs()) >= 2 * len(names), 240, "every run")
    time.sleep(2)  # a duplicate would have started by now
    finished = runs()

    assert len(finished) == 2 * len(names) and all(r["status"] == "succeeded" for r in finished)
    assert {(r["model"], r["dataset_version"]) for r in finished} == {(n, v) for n in names for v in (1, 2)}
    # Fits started, from the logs: the runs table's unique key would hide a second fit of the same version.
    started = {
        replica: re.findall(rf"training ({prefix}-\d+) on {prefix}-\d+ v(\d)", stack.log_tail(replica, 1_000_000))
        for replica in ("trainer", "trainer-2")
    }
    fits = started["trainer"] + started["trainer-2"]
    assert sorted(fits) == sorted((n, str(v)) for n in names for v in (1, 2)), started
    assert started["trainer"] and started["trainer-2"], "one trainer did all the work"
