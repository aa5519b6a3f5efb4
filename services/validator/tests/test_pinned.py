"""A pinned evaluation set: the spec names a dataset version that every candidate and the champion are measured on,
besides the run's holdout; the candidate must pass the policy's comparisons and floors on both."""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from typing import Any

import pandas as pd
import pytest

from mloop_common.artifacts import ArtifactStore
from mloop_common.errors import InvalidInput
from mloop_common.events import DataPublished, ModelRejected, new_event
from mloop_common.spec import ModelSpec, PromotionPolicy, parse_spec, spec_digest
from mloop_common.testing import FakeRegistry, through_the_wire
from mloop_validator.evaluate import unusable_evaluation_set
from mloop_validator.policy import decide_pinned
from mloop_validator.report_page import render

from .fakes import memory_store
from .test_handlers import FEATURES, evaluations, frame, good_model, pointer, poor_model, trained_event, validator


def pinned_spec(evaluation: dict[str, Any] | None, **promotion: Any) -> ModelSpec:
    body: dict[str, Any] = {
        "name": "churn",
        "dataset": "churn",
        "task": "classification",
        "target": "label",
        "features": FEATURES,
        "estimators": [{"class": "LogisticRegression"}],
        "metric": "accuracy",
        "promotion": promotion,
    }
    if evaluation is not None:
        body["evaluation"] = evaluation
    return ModelSpec.model_validate(body)


async def publish(checker: Any, artifacts: ArtifactStore, rows: pd.DataFrame, *, dataset: str, version: int) -> None:
    """Announce a published dataset version to the validator, as ingest's data.published does."""
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    published = DataPublished(
        dataset=dataset,
        version=version,
        snapshot=pointer(artifacts, buffer.getvalue(), "datasets", ".parquet"),
        rows=len(rows),
        target="label",
    )
    event = through_the_wire(new_event(published, source="tests", subject=dataset))
    await checker.on_data_published(event.decode(DataPublished), event)


# --- the spec ----------------------------------------------------------------------------------


def test_a_spec_may_pin_a_dataset_version_of_its_own_or_another_dataset():
    pinned = parse_spec(
        "name: churn\ndataset: churn\ntask: classification\ntarget: label\nmetric: accuracy\n"
        "estimators: [{class: LogisticRegression}]\nevaluation: {dataset: churn-golden, version: 3}\n",
        "application/yaml",
    )
    assert pinned.evaluation is not None
    assert (pinned.evaluation.dataset, pinned.evaluation.version) == ("churn-golden", 3)
    assert pinned_spec({"version": 2}).evaluation.dataset is None  # type: ignore[union-attr]  # the spec's own

    assert pinned_spec(None).evaluation is None
    assert spec_digest(pinned_spec(None)) != spec_digest(pinned_spec({"version": 1}))


@pytest.mark.parametrize(
    ("evaluation", "field"),
    [
        ({"version": 0}, "evaluation.version"),
        ({"dataset": "Bad Name", "version": 1}, "evaluation.dataset"),
        ({"version": 1, "rows": 10}, "evaluation.rows"),
        ({}, "evaluation.version"),
    ],
)
def test_a_bad_evaluation_set_is_refused_naming_the_field(evaluation, field):
    body = pinned_spec(None).model_dump(by_alias=True) | {"evaluation": evaluation}
    with pytest.raises(InvalidInput) as refused:
        parse_spec(json.dumps(body), "application/json")
    assert refused.value.field == field


def test_the_digest_of_a_spec_without_an_evaluation_set_is_the_one_it_had_before_the_field_existed():
    # Otherwise the registry would see every stored spec as changed, and retrain it.
    plain = pinned_spec(None)
    before = plain.model_dump(mode="json", by_alias=True)
    del before["evaluation"]  # the spec as it was serialised before the field existed
    canonical = json.dumps(before, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert spec_digest(plain) == hashlib.sha256(canonical.encode()).hexdigest()


# --- pure parts --------------------------------------------------------------------------------


def test_an_evaluation_set_without_the_models_columns_or_labels_is_unusable_with_the_reason():
    rows = frame(rows=20)
    assert unusable_evaluation_set(rows, FEATURES, "label") is None
    assert "x2, label" in (unusable_evaluation_set(rows[["x1"]], FEATURES, "label") or "")
    unlabelled = rows.assign(label=None)
    assert "none of its 20 rows has a label" in (unusable_evaluation_set(unlabelled, FEATURES, "label") or "")


def test_pinned_checks_are_named_and_worded_for_the_pinned_set():
    checks = decide_pinned(
        "the pinned evaluation set churn v1",
        "accuracy",
        {"accuracy": 0.80},
        {"accuracy": 0.90},
        None,
        None,
        PromotionPolicy(floors={"accuracy": 0.85}),
    )

    assert [(c.name, c.passed) for c in checks] == [
        ("pinned.improvement.accuracy", False),
        ("pinned.floor.accuracy", False),
    ]
    assert all(c.message.startswith("On the pinned evaluation set churn v1: ") for c in checks)


def test_a_champion_that_cannot_be_measured_on_the_pinned_set_leaves_only_its_floors():
    checks = decide_pinned(
        "the pinned set",
        "accuracy",
        {"accuracy": 0.80},
        None,
        None,
        None,
        PromotionPolicy(min_improvement=0.5),
        champion_problem="v1: it lacks the column(s) x3",
    )

    assert [(c.name, c.passed) for c in checks] == [("pinned.champion", True)]
    assert "x3" in checks[0].message


# --- the validator -----------------------------------------------------------------------------


async def test_candidate_and_champion_are_measured_on_the_pinned_version_in_a_section_of_their_own(artifacts):
    registry = FakeRegistry()
    registry.add_spec(pinned_spec({"version": 1}))
    store = memory_store()
    checker = validator(store, registry, artifacts)
    await publish(checker, artifacts, frame(rows=300, seed=7), dataset="churn", version=1)

    await checker.on_model_trained(*trained_event(artifacts, good_model()))
    await checker.on_model_trained(*trained_event(artifacts, good_model()))

    first, second = sorted(await evaluations(store), key=lambda e: e.champion_version or 0)
    assert first.decision == second.decision == "registered"
    pinned = second.report["pinned"]
    assert (pinned["dataset"], pinned["version"], pinned["rows"], pinned["error"]) == ("churn", 1, 300, None)
    assert pinned["candidate_metrics"]["accuracy"] > 0.9
    assert pinned["champion_metrics"] == pinned["candidate_metrics"]  # the same model, the same rows
    assert first.report["pinned"]["champion_metrics"] is None  # no champion yet
    assert {"pinned", "pinned.improvement.accuracy"} <= {c.name for c in second.checks if c.passed}
    assert second.holdout_rows == 400  # the holdout is still what the report's main metrics are on


async def test_a_candidate_that_passes_on_the_holdout_but_not_on_the_pinned_set_is_rejected(artifacts):
    registry = FakeRegistry()
    # Up to 0.6 worse than the champion is allowed: the constant model passes on the balanced holdout (0.5 worse).
    registry.add_spec(pinned_spec({"version": 1}, min_improvement=-0.6))
    store = memory_store()
    checker = validator(store, registry, artifacts)
    every_one_a_yes = frame(rows=600, seed=7).query("label == 'yes'")
    await publish(checker, artifacts, every_one_a_yes, dataset="churn", version=1)
    await checker.on_model_trained(*trained_event(artifacts, good_model()))

    await checker.on_model_trained(*trained_event(artifacts, poor_model()))

    [rejected] = store.published_payloads(ModelRejected)
    [verdict] = [e for e in await evaluations(store) if e.decision == "rejected"]
    assert [c.name for c in verdict.failed_checks] == ["pinned.improvement.accuracy"]
    assert next(c for c in verdict.checks if c.name == "improvement.accuracy").passed  # on the holdout
    assert rejected.reasons == [verdict.failed_checks[0].message]
    assert "pinned evaluation set churn v1" in rejected.reasons[0]
    assert verdict.report["pinned"]["candidate_metrics"]["accuracy"] == 0.0


@pytest.mark.parametrize(
    ("evaluation", "published", "reason"),
    [
        ({"version": 9}, None, "dataset churn has no published version 9"),
        ({"dataset": "golden", "version": 1}, None, "dataset golden has no published version 1"),
        ({"dataset": "golden", "version": 1}, ["x1", "label"], "lacks the column(s) x2"),
    ],
)
async def test_an_unusable_pinned_set_rejects_the_candidate_with_the_reason(artifacts, evaluation, published, reason):
    registry = FakeRegistry()
    registry.add_spec(pinned_spec(evaluation))
    store = memory_store()
    checker = validator(store, registry, artifacts)
    if published is not None:
        await publish(checker, artifacts, frame(seed=7)[published], dataset=evaluation["dataset"], version=1)

    await checker.on_model_trained(*trained_event(artifacts, good_model(), run_id=uuid.uuid4().hex))

    [rejected] = store.published_payloads(ModelRejected)  # judged and announced, not an error to retry forever
    assert len(rejected.reasons) == 1 and reason in rejected.reasons[0]
    [verdict] = await evaluations(store)
    assert reason in verdict.report["pinned"]["error"]
    assert registry.versions["churn"] == []


async def test_a_replayed_publication_is_remembered_once(artifacts):
    store = memory_store()
    checker = validator(store, FakeRegistry(), artifacts)
    buffer = io.BytesIO()
    frame().to_parquet(buffer, index=False)
    published = DataPublished(
        dataset="churn",
        version=1,
        snapshot=pointer(artifacts, buffer.getvalue(), "datasets", ".parquet"),
        rows=400,
        target="label",
    )
    event = through_the_wire(new_event(published, source="tests", subject="churn"))

    await checker.on_data_published(published, event)
    await checker.on_data_published(published, event)

    async with store.transaction() as unit:
        remembered = await unit.dataset_version("churn", 1)
        assert await unit.dataset_version("churn", 2) is None
    assert remembered is not None and remembered.snapshot_sha256 == published.snapshot.sha256


async def test_the_report_page_shows_the_pinned_section_or_why_it_is_missing(artifacts):
    registry = FakeRegistry()
    registry.add_spec(pinned_spec({"version": 1}))
    store = memory_store()
    checker = validator(store, registry, artifacts)
    await checker.on_model_trained(*trained_event(artifacts, good_model()))  # before version 1 is known
    await publish(checker, artifacts, frame(rows=300, seed=7), dataset="churn", version=1)
    await checker.on_model_trained(*trained_event(artifacts, good_model()))

    by_decision = {e.decision: e for e in await evaluations(store)}
    unmeasured, measured = by_decision["rejected"], by_decision["registered"]

    page = render(measured)
    assert "<h2>Pinned evaluation set: churn v1</h2>" in page and "300 labelled rows" in page
    assert page.count("<svg") >= 2 and measured.report["pinned"]["sha256"] in page
    assert "Not measured: dataset churn has no published version 1" in render(unmeasured)
    assert "Pinned evaluation set" not in render(measured.model_copy(update={"report": {}}))
