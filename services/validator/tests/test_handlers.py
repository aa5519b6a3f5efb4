"""The validator's reaction to model.trained, through fakes of its ports (no Kafka, no database)."""

from __future__ import annotations

import io
import logging
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest
from prometheus_client import REGISTRY
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.tree import DecisionTreeClassifier

from mloop_common.artifacts import ArtifactStore
from mloop_common.contracts import PRODUCTION, RegisterVersion, VersionView
from mloop_common.errors import ServiceUnavailable
from mloop_common.events import ArtifactPointer, ModelRejected, ModelTrained, new_event
from mloop_common.modelio import dump_model
from mloop_common.spec import ModelSpec
from mloop_common.testing import FakeRegistry, MemoryStore, through_the_wire
from mloop_validator.entities import Evaluation, SlicePair
from mloop_validator.handlers import Validator, _registration

from .fakes import InfraVerdict, MemoryValidatorUnit, memory_store

FEATURES = ["x1", "x2"]


def frame(rows: int = 400, seed: int = 0, label_noise: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2))
    positive = (x[:, 0] + x[:, 1] > 0) ^ (rng.random(rows) < label_noise)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "label": np.where(positive, "yes", "no")})


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


def fitted_on_noisy_labels(model: BaseEstimator) -> bytes:
    """A model that learnt the noise too: its predictions jump with small changes, its probabilities are 0 or 1."""
    train = frame(seed=1, label_noise=0.3)
    return dump_model(model.fit(train[FEATURES], train["label"]))


def validator(
    store: MemoryStore[MemoryValidatorUnit], registry: FakeRegistry, artifacts: ArtifactStore, **ports: Any
) -> Validator:
    return Validator(
        store=store, registry=registry, artifacts=artifacts, infra_check=ports.get("infra", InfraVerdict())
    )


async def evaluations(store: MemoryStore[MemoryValidatorUnit]) -> list[Evaluation]:
    async with store.transaction() as unit:
        return await unit.evaluations(None, 100)


def rejections(model: str) -> float:
    """The counter an alert rule watches, as /metrics shows it."""
    return REGISTRY.get_sample_value("mloop_validator_rejections_total", {"model": model}) or 0.0


class CrashingRegistry(FakeRegistry):
    """Registers, then the validator "crashes" before it can record anything (the first time only)."""

    def __init__(self) -> None:
        super().__init__()
        self.crashes = 1

    async def register(self, name: str, request: RegisterVersion) -> VersionView:
        version = await super().register(name, request)
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("validator killed after the registry answered")
        return version


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
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.add_spec(spec())
    return registry


async def test_a_first_candidate_is_registered_and_goes_to_production(artifacts, registry):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    payload, event = trained_event(artifacts, good_model())

    await checker.on_model_trained(payload, event)

    async with store.transaction() as unit:
        [evaluation] = await unit.evaluations("churn", 10)
    assert evaluation.decision == "registered" and evaluation.registered_version == 1
    assert evaluation.candidate_metrics["accuracy"] > 0.9
    assert registry.aliases["churn"][PRODUCTION] == 1
    assert registry.lineages[("churn", 1)].trained_event_id == event.id
    assert store.published == []


async def test_a_candidate_worse_than_the_champion_is_rejected_with_its_reasons(artifacts, registry):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    await checker.on_model_trained(*trained_event(artifacts, good_model()))

    await checker.on_model_trained(*trained_event(artifacts, poor_model()))

    [rejected] = store.published_payloads(ModelRejected)
    assert rejected.champion_version == 1
    assert rejected.candidate_metrics["accuracy"] < rejected.champion_metrics["accuracy"]
    assert any("accuracy" in reason for reason in rejected.reasons)
    assert len(registry.versions["churn"]) == 1 and registry.aliases["churn"][PRODUCTION] == 1


async def test_a_redelivered_event_is_judged_once(artifacts, registry):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    payload, event = trained_event(artifacts, poor_model())
    await checker.on_model_trained(payload, event)

    await checker.on_model_trained(payload, event)

    async with store.transaction() as unit:
        assert len(await unit.evaluations(None, 10)) == 1
    assert len(registry.versions["churn"]) == 1


async def test_a_replay_after_a_crash_between_register_and_record_keeps_the_registered_version(artifacts, registry):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    payload, event = trained_event(artifacts, good_model())
    verdict = Evaluation(
        id="first-attempt",
        model="churn",
        run_id=payload.run_id,
        decision="registered",
        reasons=[],
        metric="accuracy",
        candidate_metrics={"accuracy": 0.99},
        champion_version=None,
        champion_metrics=None,
        slices=SlicePair(candidate={}),
        registered_version=None,
        holdout_rows=400,
    )
    # A validator from before verdicts were stored first got this far, then crashed.
    await registry.register("churn", _registration(payload, event, verdict))

    await checker.on_model_trained(payload, event)

    async with store.transaction() as unit:
        [evaluation] = await unit.evaluations(None, 10)
    assert evaluation.registered_version == 1 and evaluation.id == "first-attempt"
    assert len(registry.versions["churn"]) == 1


async def test_a_registry_outage_records_nothing_so_the_retry_starts_clean(artifacts, registry):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    registry.unavailable = True

    with pytest.raises(ServiceUnavailable):
        await checker.on_model_trained(*trained_event(artifacts, good_model()))

    async with store.transaction() as unit:
        assert await unit.evaluations(None, 10) == []
    assert store.published == []


# --- the verdict is decided once -------------------------------------------------------------


async def test_a_crash_after_registering_replays_the_stored_verdict_instead_of_judging_the_candidate_again(artifacts):
    registry = CrashingRegistry()
    registry.add_spec(spec(min_improvement=0.01))  # a tie with the champion is not enough
    store = memory_store()
    checker = validator(store, registry, artifacts)
    payload, event = trained_event(artifacts, good_model())

    with pytest.raises(RuntimeError, match="killed"):
        await checker.on_model_trained(payload, event)
    assert registry.aliases["churn"][PRODUCTION] == 1  # registered and promoted before the crash
    [stored] = await evaluations(store)
    assert stored.decision == "registered" and stored.settled_at is None

    await checker.on_model_trained(payload, event)  # the bus redelivers

    # Judged again, the candidate would have met itself as champion, failed the 0.01 margin and been rejected.
    assert store.published_payloads(ModelRejected) == []
    [settled] = await evaluations(store)
    assert (settled.id, settled.registered_version, settled.decision) == (stored.id, 1, "registered")
    assert settled.settled_at is not None
    assert registry.versions["churn"][0].evaluation_id == stored.id
    assert len(registry.versions["churn"]) == 1


async def test_a_rejection_interrupted_before_it_was_announced_is_announced_once_on_replay(artifacts, registry):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    await checker.on_model_trained(*trained_event(artifacts, good_model()))
    payload, event = trained_event(artifacts, poor_model())
    verdict_of_the_first_attempt = await checker._judge(payload)
    async with store.transaction() as unit:
        await unit.add_evaluation(verdict_of_the_first_attempt)  # stored, then the process died
    registry.promote("churn", 1)

    await checker.on_model_trained(payload, event)
    await checker.on_model_trained(payload, event)

    [rejected] = store.published_payloads(ModelRejected)
    assert rejected.evaluation_id == verdict_of_the_first_attempt.id
    assert len(await evaluations(store)) == 2


async def test_a_rejection_is_counted_for_alerting_and_logged_with_the_failed_checks(artifacts, registry, caplog):
    store = memory_store()
    checker = validator(store, registry, artifacts)
    await checker.on_model_trained(*trained_event(artifacts, good_model()))
    before = rejections("churn")

    with caplog.at_level(logging.WARNING, logger="mloop_validator.handlers"):
        await checker.on_model_trained(*trained_event(artifacts, poor_model()))

    assert rejections("churn") == before + 1
    [alert] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT")]
    assert "churn" in alert and "improvement.accuracy" in alert
    [rejected] = store.published_payloads(ModelRejected)
    assert len(rejected.reasons) == 1 and "short of the required" in rejected.reasons[0]


# --- the checks of the release gate ----------------------------------------------------------


async def test_a_fragile_model_is_rejected_for_its_flip_rate_where_a_steady_one_passes(artifacts):
    registry = FakeRegistry()
    registry.add_spec(spec(max_flip_rate=0.1))
    store = memory_store()
    checker = validator(store, registry, artifacts)

    await checker.on_model_trained(*trained_event(artifacts, fitted_on_noisy_labels(KNeighborsClassifier(1))))
    await checker.on_model_trained(*trained_event(artifacts, good_model()))

    fragile, steady = reversed(await evaluations(store))
    assert fragile.decision == "rejected" and [c.name for c in fragile.failed_checks] == ["flip_rate"]
    assert fragile.report["robustness"]["flip_rate"] > 0.1
    assert steady.decision == "registered" and steady.report["robustness"]["flip_rate"] < 0.1
    [rejected] = store.published_payloads(ModelRejected)
    assert "flip" in rejected.reasons[0] and rejected.champion_version is None


async def test_a_badly_calibrated_model_is_rejected_only_when_the_spec_bounds_calibration(artifacts):
    overconfident = fitted_on_noisy_labels(DecisionTreeClassifier(random_state=0))
    bounded, unbounded = FakeRegistry(), FakeRegistry()
    bounded.add_spec(spec(max_calibration_error=0.1))
    unbounded.add_spec(spec())

    for registry in (bounded, unbounded):
        await validator(store := memory_store(), registry, artifacts).on_model_trained(
            *trained_event(artifacts, overconfident)
        )
        [evaluation] = await evaluations(store)
        assert evaluation.report["calibration"]["ece"] > 0.1 and evaluation.report["calibration"]["curve"]
        if registry is bounded:
            assert evaluation.decision == "rejected"
            assert [c.name for c in evaluation.failed_checks] == ["calibration"]
        else:
            assert evaluation.decision == "registered"


async def test_the_first_model_skips_the_comparisons_but_not_the_floors(artifacts):
    registry = FakeRegistry()
    registry.add_spec(spec(min_improvement=0.5, floors={"accuracy": 0.99}))
    store = memory_store()

    await validator(store, registry, artifacts).on_model_trained(*trained_event(artifacts, poor_model()))

    [evaluation] = await evaluations(store)
    assert evaluation.decision == "rejected" and [c.name for c in evaluation.failed_checks] == ["floor.accuracy"]
    assert not any(c.name.startswith("improvement.") for c in evaluation.checks)


async def test_an_artifact_that_fails_the_clean_process_check_is_rejected(artifacts, registry):
    store = memory_store()
    infra = InfraVerdict("ModuleNotFoundError: No module named 'sklearn'")

    await validator(store, registry, artifacts, infra=infra).on_model_trained(*trained_event(artifacts, good_model()))

    [evaluation] = await evaluations(store)
    assert evaluation.decision == "rejected" and [c.name for c in evaluation.failed_checks] == ["infra"]
    assert "No module named 'sklearn'" in evaluation.failed_checks[0].message
    assert infra.checked == [100] and registry.versions["churn"] == []


async def test_the_report_profiles_the_candidate(artifacts, registry):
    store = memory_store()

    await validator(store, registry, artifacts).on_model_trained(*trained_event(artifacts, good_model()))

    [evaluation] = await evaluations(store)
    profile = evaluation.report["profile"]
    assert profile["artifact_bytes"] > 0 and profile["load_seconds"] == 0.01
    for batch in ("batch_1", "batch_1000"):
        assert 0 < profile["latency"][batch]["median_ms"] <= profile["latency"][batch]["p99_ms"]
    assert evaluation.report["infra"] == {"error": None, "rows": 100}
    assert {c.name for c in evaluation.checks} == {"champion", "infra"}
