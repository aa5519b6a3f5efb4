"""The validator's reaction to model.trained, through fakes of its ports (no Kafka, no database)."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from mloop_common.artifacts import ArtifactStore
from mloop_common.contracts import PRODUCTION
from mloop_common.errors import ServiceUnavailable
from mloop_common.events import ArtifactPointer, ModelRejected, ModelTrained, new_event
from mloop_common.modelio import dump_model
from mloop_common.spec import ModelSpec
from mloop_common.testing import FakeRegistry, through_the_wire
from mloop_validator.handlers import Validator, _registration

from .fakes import memory_store

FEATURES = ["x1", "x2"]


def frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": np.where(x[:, 0] + x[:, 1] > 0, "yes", "no")})


def spec(**promotion: object) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "dataset": "churn",
            "task": "classification",
            "target": "label",
            "features": FEATURES,
            "estimators": [{"class": "LogisticRegression"}],
            "metric": "accuracy",
            "promotion": promotion,
        }
    )


def pointer(artifacts: ArtifactStore, data: bytes, kind: str, suffix: str) -> ArtifactPointer:
    ref = artifacts.put(data, kind=kind, suffix=suffix)
    return ArtifactPointer(uri=ref.uri, sha256=ref.sha256)


def good_model() -> bytes:
    train = frame(seed=1)
    return dump_model(LogisticRegression().fit(train[FEATURES], train["label"]))


def poor_model() -> bytes:
    train = frame(seed=1)
    return dump_model(DummyClassifier(strategy="constant", constant="no").fit(train[FEATURES], train["label"]))


def trained_event(artifacts: ArtifactStore, model: bytes, *, run_id: str | None = None):  # type: ignore[no-untyped-def]
    holdout = io.BytesIO()
    frame(seed=2).to_parquet(holdout, index=False)
    pointer_to = {
        "artifact": pointer(artifacts, model, "models", ".skops"),
        "profile": pointer(artifacts, b"{}", "profiles", ".json"),
        "holdout": pointer(artifacts, holdout.getvalue(), "holdouts", ".parquet"),
    }
    payload = ModelTrained(
        model="churn",
        run_id=run_id or uuid.uuid4().hex,
        task="classification",
        spec_version=1,
        spec_digest="d" * 64,
        dataset="churn",
        dataset_version=1,
        dataset_sha256="e" * 64,
        trigger="data.published",
        features=FEATURES,
        target="label",
        estimator_class="LogisticRegression",
        params={},
        metric="accuracy",
        cv_score=0.9,
        holdout_metrics={},
        training_seconds=0.1,
        code_version="test",
        seed=42,
        **pointer_to,
    )
    event = through_the_wire(new_event(payload, source="tests", subject="churn"))
    return event.decode(ModelTrained), event


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path)


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.add_spec(spec())
    return registry


async def test_a_first_candidate_is_registered_and_goes_to_production(artifacts, registry):
    store = memory_store()
    validator = Validator(store=store, registry=registry, artifacts=artifacts)
    payload, event = trained_event(artifacts, good_model())

    await validator.on_model_trained(payload, event)

    async with store.transaction() as unit:
        [evaluation] = await unit.evaluations("churn", 10)
    assert evaluation.decision == "registered" and evaluation.registered_version == 1
    assert evaluation.candidate_metrics["accuracy"] > 0.9
    assert registry.aliases["churn"][PRODUCTION] == 1
    assert registry.lineages[("churn", 1)].trained_event_id == event.id
    assert store.published == []


async def test_a_candidate_worse_than_the_champion_is_rejected_with_its_reasons(artifacts, registry):
    store = memory_store()
    validator = Validator(store=store, registry=registry, artifacts=artifacts)
    await validator.on_model_trained(*trained_event(artifacts, good_model()))

    await validator.on_model_trained(*trained_event(artifacts, poor_model()))

    [rejected] = store.published_payloads(ModelRejected)
    assert rejected.champion_version == 1
    assert rejected.candidate_metrics["accuracy"] < rejected.champion_metrics["accuracy"]
    assert any("accuracy" in reason for reason in rejected.reasons)
    assert len(registry.versions["churn"]) == 1 and registry.aliases["churn"][PRODUCTION] == 1


async def test_a_redelivered_event_is_judged_once(artifacts, registry):
    store = memory_store()
    validator = Validator(store=store, registry=registry, artifacts=artifacts)
    payload, event = trained_event(artifacts, poor_model())
    await validator.on_model_trained(payload, event)

    await validator.on_model_trained(payload, event)

    async with store.transaction() as unit:
        assert len(await unit.evaluations(None, 10)) == 1
    assert len(registry.versions["churn"]) == 1


async def test_a_replay_after_a_crash_between_register_and_record_keeps_the_registered_version(artifacts, registry):
    store = memory_store()
    validator = Validator(store=store, registry=registry, artifacts=artifacts)
    payload, event = trained_event(artifacts, good_model())
    first_attempt = _registration(payload, event, "first-attempt", {"accuracy": 0.99}, None)
    await registry.register("churn", first_attempt)  # the crashed attempt got this far

    await validator.on_model_trained(payload, event)

    async with store.transaction() as unit:
        [evaluation] = await unit.evaluations(None, 10)
    assert evaluation.registered_version == 1 and evaluation.id == "first-attempt"
    assert len(registry.versions["churn"]) == 1


async def test_a_registry_outage_records_nothing_so_the_retry_starts_clean(artifacts, registry):
    store = memory_store()
    validator = Validator(store=store, registry=registry, artifacts=artifacts)
    registry.unavailable = True

    with pytest.raises(ServiceUnavailable):
        await validator.on_model_trained(*trained_event(artifacts, good_model()))

    async with store.transaction() as unit:
        assert await unit.evaluations(None, 10) == []
    assert store.published == []
