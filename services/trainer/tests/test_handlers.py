"""The trainer's reactions through fakes of its ports (no Kafka, no database), with real training jobs."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY

from mloop_common.artifacts import ArtifactStore
from mloop_common.contracts import Lineage, RegisterVersion
from mloop_common.datacontract import ColumnContract, DatasetContract, Declared
from mloop_common.events import (
    ArtifactPointer,
    DataPublished,
    DriftDetected,
    Envelope,
    ModelTrained,
    SpecChanged,
    TrainingFailed,
    new_event,
)
from mloop_common.modelio import load_model
from mloop_common.profile import ReferenceProfile
from mloop_common.spec import ModelSpec, SpecLimits, spec_digest
from mloop_common.testing import FakeRegistry, MemoryStore, through_the_wire
from mloop_trainer.entities import DatasetRef, FailedDetails, Run, TrainedDetails
from mloop_trainer.handlers import Trainer
from mloop_trainer.workers import Budget, OverBudget, WorkerDied, Workers

from .fakes import FailingWorkers, InlineWorkers, MemoryTrainerUnit, memory_store

FEATURES = ["x1", "x2"]
CODE_VERSION = "abc123-test"
BUDGET = Budget(memory_mb=2048, seconds=600)


def frame(rows: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")})


def spec(name: str = "churn", dataset: str = "churn", c: float = 1.0) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "dataset": dataset,
            "task": "classification",
            "target": "label",
            "features": FEATURES,
            "estimators": [{"class": "LogisticRegression", "params": {"C": [c]}}],
            "search": {"strategy": "grid", "cv": 2},
            "metric": "accuracy",
        }
    )


def stored(artifacts: ArtifactStore, rows: pd.DataFrame, kind: str) -> ArtifactPointer:
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    ref = artifacts.put(buffer.getvalue(), kind=kind, suffix=".parquet")
    return ArtifactPointer(uri=ref.uri, sha256=ref.sha256)


def published(
    artifacts: ArtifactStore, rows: pd.DataFrame, *, dataset: str = "churn", version: int = 1
) -> tuple[DataPublished, Envelope]:
    payload = DataPublished(
        dataset=dataset,
        version=version,
        snapshot=stored(artifacts, rows, "datasets"),
        rows=len(rows),
        columns=list(rows.columns),
        target="label",
    )
    event = through_the_wire(new_event(payload, source="tests", subject=dataset))
    return event.decode(DataPublished), event


def drift(recent: ArtifactPointer, *, version: int, rows: int) -> tuple[DriftDetected, Envelope]:
    payload = DriftDetected(
        model="churn",
        version=version,
        report_id=uuid.uuid4().hex,
        cause="covariate_shift",
        action="retrain",
        summary="x1 drifted",
        drifted_features=["x1"],
        evidence={},
        window_size=rows,
        recent_data=recent,
        recent_rows=rows,
    )
    event = through_the_wire(new_event(payload, source="tests", subject="churn"))
    return event.decode(DriftDetected), event


def ticking_clock() -> Callable[[], datetime]:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]

    def tick() -> datetime:
        now[0] += timedelta(seconds=1)
        return now[0]

    return tick


def trainer(
    store: MemoryStore[MemoryTrainerUnit],
    registry: FakeRegistry,
    artifacts: ArtifactStore,
    workers: Workers | None = None,
    limits: SpecLimits | None = None,
) -> Trainer:
    return Trainer(
        store=store,
        registry=registry,
        artifacts=artifacts,
        workers=workers or InlineWorkers(),
        budget=BUDGET,
        limits=limits or SpecLimits(),
        code_version=CODE_VERSION,
        clock=ticking_clock(),
    )


async def runs_of(store: MemoryStore[MemoryTrainerUnit], model: str | None = None) -> list[Run]:
    async with store.transaction() as unit:
        return await unit.runs(model, 100)


async def handled(store: MemoryStore[MemoryTrainerUnit], event: Envelope) -> bool:
    async with store.transaction() as unit:
        return await unit.handled(event)


async def register(registry: FakeRegistry, trained: ModelTrained) -> int:
    """What the validator does with a candidate that passed: the registry makes it the production version."""
    lineage: dict[str, Any] = trained.model_dump(
        include={
            "dataset",
            "dataset_version",
            "dataset_sha256",
            "recent_data_sha256",
            "trigger",
            "code_version",
            "estimator_class",
            "params",
            "seed",
            "training_seconds",
        }
    )
    request = RegisterVersion(
        run_id=trained.run_id,
        evaluation_id=uuid.uuid4().hex,
        spec_version=trained.spec_version,
        task=trained.task,
        artifact=trained.artifact,
        profile=trained.profile,
        features=trained.features,
        metrics=trained.holdout_metrics,
        lineage=Lineage(**lineage, trained_event_id=uuid.uuid4().hex, correlation_id=uuid.uuid4().hex),
    )
    return (await registry.register(trained.model, request)).version


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.add_spec(spec("churn", c=0.5))
    registry.add_spec(spec("churn", c=1.0))  # spec version 2: the one that trains
    registry.add_spec(spec("churn_small"))
    registry.add_spec(spec("weather", dataset="weather"))
    return registry


async def test_a_published_dataset_trains_each_model_of_that_dataset_once(artifacts, registry):
    store = memory_store()
    payload, event = published(artifacts, frame())

    await trainer(store, registry, artifacts).on_data_published(payload, event)

    runs = {run.model: run for run in await runs_of(store)}
    assert set(runs) == {"churn", "churn_small"}
    assert all(run.status == "succeeded" and run.trigger_event_id == event.id for run in runs.values())
    trained = {t.model: t for t in store.published_payloads(ModelTrained)}
    assert len(store.published) == 2 and set(trained) == {"churn", "churn_small"}
    churn = trained["churn"]
    assert churn.run_id == runs["churn"].run_id and churn.trigger == "data.published"
    assert churn.dataset == "churn" and churn.dataset_version == 1
    assert churn.dataset_sha256 == payload.snapshot.sha256 == runs["churn"].dataset_sha256
    assert churn.spec_version == 2 and churn.params["C"] == 1.0
    assert churn.code_version == CODE_VERSION == runs["churn"].code_version
    assert churn.recent_data_sha256 is None and churn.holdout_metrics["accuracy"] > 0.8
    model = load_model(artifacts.get(churn.artifact.uri, churn.artifact.sha256))
    assert set(model.predict(frame(rows=5, seed=9)[FEATURES])) <= {"yes", "no"}
    assert all(e.causationid == event.id and e.correlationid == event.correlationid for e in store.published)


def spec_changed(registry: FakeRegistry, name: str, spec_version: int) -> tuple[SpecChanged, Envelope]:
    model_spec = registry.specs[name][spec_version - 1]
    payload = SpecChanged(
        model=name, spec_version=spec_version, spec_digest=spec_digest(model_spec), dataset=model_spec.dataset
    )
    event = through_the_wire(new_event(payload, source="tests", subject=name))
    return event.decode(SpecChanged), event


async def test_a_spec_declared_after_its_dataset_was_published_trains_on_the_newest_version_at_once(
    artifacts, registry
):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    await handler.on_data_published(*published(artifacts, frame(), dataset="weather", version=1))
    await handler.on_data_published(*published(artifacts, frame(seed=1), dataset="weather", version=2))
    registry.add_spec(spec("rain", dataset="weather"))  # declared after both publications

    payload, event = spec_changed(registry, "rain", 1)
    await handler.on_spec_changed(payload, event)

    [run] = await runs_of(store, "rain")
    assert (run.status, run.trigger, run.dataset_version, run.spec_version) == ("succeeded", "spec.changed", 2, 1)
    [trained] = [t for t in store.published_payloads(ModelTrained) if t.model == "rain"]
    assert (trained.trigger, trained.dataset_version) == ("spec.changed", 2)
    await handler.on_spec_changed(payload, event)  # redelivered
    assert len(await runs_of(store, "rain")) == 1


async def test_a_spec_change_trains_nothing_without_data_when_newer_or_when_already_trained(artifacts, registry):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    registry.add_spec(spec("fresh", dataset="unpublished"))
    no_data = spec_changed(registry, "fresh", 1)
    superseded = spec_changed(registry, "churn", 1)  # the fixture's churn has spec v2 already
    await handler.on_data_published(*published(artifacts, frame()))  # trains churn spec v2 on churn v1
    already = spec_changed(registry, "churn", 2)

    for payload, event in (no_data, superseded, already):
        await handler.on_spec_changed(payload, event)
        assert await handled(store, event)  # claimed: not delivered again

    assert [r.trigger for r in await runs_of(store, "churn")] == ["data.published"]
    assert await runs_of(store, "fresh") == []


async def test_a_publication_handled_after_its_spec_change_trained_the_same_inputs_trains_nothing_more(
    artifacts, registry
):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    registry.add_spec(spec("rain", dataset="weather"))
    first, first_event = published(artifacts, frame(), dataset="weather", version=1)
    async with store.transaction() as unit:
        await unit.remember_dataset(
            DatasetRef(
                name="weather",
                version=1,
                snapshot_uri=first.snapshot.uri,
                snapshot_sha256=first.snapshot.sha256,
                target="label",
            )
        )  # as when the publication was remembered but its training waited for the registry
    await handler.on_spec_changed(*spec_changed(registry, "rain", 1))

    await handler.on_data_published(first, first_event)  # its training of rain would repeat the same inputs

    assert [r.trigger for r in await runs_of(store, "rain")] == ["spec.changed"]
    assert [t.trigger for t in store.published_payloads(ModelTrained) if t.model == "rain"] == ["spec.changed"]
    assert await handled(store, first_event)


async def test_a_redelivered_data_published_trains_nothing_more(artifacts, registry):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    payload, event = published(artifacts, frame())
    await handler.on_data_published(payload, event)

    await handler.on_data_published(payload, event)

    assert sorted(run.model for run in await runs_of(store)) == ["churn", "churn_small"]
    assert sorted(t.model for t in store.published_payloads(ModelTrained)) == ["churn", "churn_small"]


def announced_failures(store: MemoryStore[MemoryTrainerUnit]) -> list[tuple[str, str]]:
    """(model, failure) of each training.failed staged; nothing else may be announced for a failed run."""
    assert store.published_payloads(ModelTrained) == []
    return sorted((f.model, f.failure) for f in store.published_payloads(TrainingFailed))


async def test_a_dataset_without_the_target_column_records_a_failed_run_and_announces_only_the_failure(
    artifacts, registry
):
    store = memory_store()
    payload, event = published(artifacts, frame().rename(columns={"label": "outcome"}))

    await trainer(store, registry, artifacts).on_data_published(payload, event)

    runs = await runs_of(store)
    assert {run.model for run in runs} == {"churn", "churn_small"}
    assert all(run.status == "failed" and "'label'" in (run.error or "") for run in runs)
    assert all(run.details == FailedDetails(seed=42, failure="data") for run in runs)
    assert announced_failures(store) == [("churn", "data"), ("churn_small", "data")]
    [failure] = [f for f in store.published_payloads(TrainingFailed) if f.model == "churn"]
    assert "'label'" in failure.error and failure.run_id == next(r.run_id for r in runs if r.model == "churn")
    assert (failure.trigger, failure.dataset, failure.dataset_version) == ("data.published", "churn", 1)
    assert await handled(store, event)  # a retry could not fix the data: the event is done


async def test_drift_with_a_retrain_verdict_trains_on_the_dataset_plus_the_recent_rows(artifacts, registry):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    dataset, published_event = published(artifacts, frame(rows=120))
    await handler.on_data_published(dataset, published_event)
    first = next(t for t in store.published_payloads(ModelTrained) if t.model == "churn")
    production = await register(registry, first)
    recent = stored(artifacts, frame(rows=40, seed=7), "recent")
    payload, event = drift(recent, version=production, rows=40)

    await handler.on_drift_detected(payload, event)

    [retrained] = [t for t in store.published_payloads(ModelTrained) if t.trigger == "drift.detected"]
    assert retrained.model == "churn" and retrained.run_id != first.run_id
    assert retrained.recent_data_sha256 == recent.sha256
    assert retrained.dataset_sha256 == dataset.snapshot.sha256 and retrained.dataset_version == 1
    assert retrained.spec_version == 2 and retrained.code_version == CODE_VERSION
    run = next(r for r in await runs_of(store, "churn") if r.trigger == "drift.detected")
    assert run.run_id == retrained.run_id and run.trigger_event_id == event.id
    assert isinstance(run.details, TrainedDetails)
    assert run.details.recent_rows == 40 and run.details.train_rows + run.details.holdout_rows == 160


async def test_the_datasets_contract_travels_in_the_profile_of_every_version_trained_on_it(artifacts, registry):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    contract = DatasetContract(
        target="label",
        columns=[
            ColumnContract(
                name="x1",
                type="numeric",
                physical_type="double",
                nullable=False,
                missing_rate=0.0,
                declared=Declared(min=-10, max=10),
            )
        ],
    )
    ref = artifacts.put(contract.model_dump_json().encode(), kind="contracts", suffix=".json")
    dataset, _ = published(artifacts, frame(rows=120))
    with_contract = dataset.model_copy(update={"contract": ArtifactPointer(uri=ref.uri, sha256=ref.sha256)})
    await handler.on_data_published(*wire_published(with_contract))
    first = next(t for t in store.published_payloads(ModelTrained) if t.model == "churn")
    production = await register(registry, first)
    await handler.on_drift_detected(
        *drift(stored(artifacts, frame(rows=40, seed=7), "recent"), version=production, rows=40)
    )

    trained = store.published_payloads(ModelTrained)
    assert {t.trigger for t in trained} == {"data.published", "drift.detected"}
    for announced in trained:
        profile = ReferenceProfile.from_json(artifacts.get(announced.profile.uri, announced.profile.sha256))
        assert profile.contract == contract  # a retrain reads the stored dataset's contract too


def wire_published(payload: DataPublished) -> tuple[DataPublished, Envelope]:
    event = through_the_wire(new_event(payload, source="tests", subject=payload.dataset))
    return event.decode(DataPublished), event


async def test_drift_on_a_version_no_longer_in_production_is_claimed_and_ignored(artifacts, registry):
    store = memory_store()
    handler = trainer(store, registry, artifacts)
    dataset, published_event = published(artifacts, frame())
    await handler.on_data_published(dataset, published_event)
    first = next(t for t in store.published_payloads(ModelTrained) if t.model == "churn")
    old = await register(registry, first)
    await register(registry, first.model_copy(update={"run_id": uuid.uuid4().hex}))  # a retrain already landed
    runs_before, events_before = len(await runs_of(store)), len(store.published)
    payload, event = drift(stored(artifacts, frame(rows=40, seed=7), "recent"), version=old, rows=40)

    await handler.on_drift_detected(payload, event)

    assert len(await runs_of(store)) == runs_before and len(store.published) == events_before
    assert await handled(store, event)


def failed_runs(model: str, failure: str) -> float:
    """The counter an alert rule watches, as /metrics shows it."""
    return REGISTRY.get_sample_value("mloop_trainer_failed_runs_total", {"model": model, "failure": failure}) or 0.0


async def test_a_run_killed_for_memory_fails_once_is_not_retried_and_the_next_dataset_trains(artifacts, registry):
    killed = WorkerDied(
        "the training worker was killed by SIGKILL during the run, most likely by the kernel's OOM killer"
    )
    workers = FailingWorkers(killed, OverBudget("the run needed more memory than its budget of 2048 MB"))
    store = memory_store()
    handler = trainer(store, registry, artifacts, workers=workers)
    payload, event = published(artifacts, frame())
    died_before = failed_runs("churn", "worker_died")

    await handler.on_data_published(payload, event)  # returns: the bus has nothing to retry

    failed = {run.model: run for run in await runs_of(store)}
    assert {run.status for run in failed.values()} == {"failed"} and set(failed) == {"churn", "churn_small"}
    assert failed["churn"].details == FailedDetails(seed=42, failure="worker_died")
    assert failed["churn_small"].details == FailedDetails(seed=42, failure="over_budget")
    assert "SIGKILL" in (failed["churn"].error or "") and "2048 MB" in (failed["churn_small"].error or "")
    assert announced_failures(store) == [("churn", "worker_died"), ("churn_small", "over_budget")]
    assert await handled(store, event)
    assert workers.budgets == [BUDGET, BUDGET]
    assert failed_runs("churn", "worker_died") == died_before + 1
    assert handler.training() == []

    await handler.on_data_published(*published(artifacts, frame(seed=1), version=2))

    trained = store.published_payloads(ModelTrained)
    assert sorted((t.model, t.dataset_version) for t in trained) == [("churn", 2), ("churn_small", 2)]


async def test_a_spec_beyond_the_trainers_limits_fails_without_running(artifacts, registry):
    workers = InlineWorkers()
    store = memory_store()
    handler = trainer(store, registry, artifacts, workers=workers, limits=SpecLimits(param_max={"C": 0}))
    payload, event = published(artifacts, frame())

    await handler.on_data_published(payload, event)

    runs = await runs_of(store)
    assert len(runs) == 2 and all(run.details == FailedDetails(seed=42, failure="limits") for run in runs)
    assert all("estimators.0.params.C" in (run.error or "") for run in runs)
    assert workers.budgets == [] and await handled(store, event)
    assert announced_failures(store) == [("churn", "limits"), ("churn_small", "limits")]
