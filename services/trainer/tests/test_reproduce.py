"""Reproducing a run: the same inputs give the same model, and what differs is named."""

from __future__ import annotations

import numpy as np
import pytest

from mloop_common.errors import Conflict
from mloop_common.testing import FakeRegistry
from mloop_trainer import training
from mloop_trainer.entities import Run
from mloop_trainer.reproduce import compare_predictions, differences

from .fakes import memory_store
from .test_handlers import frame, published, spec, trainer


def test_predictions_are_identical_within_tolerance_or_different():
    assert compare_predictions(["a", "b"], ["a", "b"]) == ("identical", 0.0)
    outcome, gap = compare_predictions(np.array([0.5, 0.25]), np.array([0.5, 0.25 + 1e-12]))
    assert outcome == "within_tolerance" and gap == pytest.approx(1e-12)
    assert compare_predictions([0.5], [0.6])[0] == "different"
    assert compare_predictions(["a", "b"], ["a", "c"]) == ("different", None)
    assert compare_predictions([1, 2], [1, 2, 3]) == ("different", None)


def test_differences_name_the_inputs_that_explain_them_and_the_outputs_that_moved():
    found = differences(
        {"library.scikit-learn": "1.7.0", "code_version": "abc"},
        {"library.scikit-learn": "1.8.0", "code_version": "abc"},
        {"cv_score": 0.91, "holdout.accuracy": 0.9, "params": {"C": 1.0}},
        {"cv_score": 0.91 + 1e-12, "holdout.accuracy": 0.85, "params": {"C": 1.0}},
    )

    assert [(d.kind, d.name) for d in found] == [("input", "library.scikit-learn"), ("output", "holdout.accuracy")]
    assert found[1].recorded == 0.9 and found[1].reproduced == 0.85


@pytest.fixture
def registry() -> FakeRegistry:
    registry = FakeRegistry()
    registry.add_spec(spec("churn"))
    return registry


async def trained_run(store, registry, artifacts) -> Run:  # type: ignore[no-untyped-def]
    await trainer(store, registry, artifacts).on_data_published(*published(artifacts, frame()))
    async with store.transaction() as unit:
        [run] = await unit.runs("churn", 10)
    return run


async def test_a_run_trained_again_from_its_inputs_matches_bit_for_bit(artifacts, registry):
    store = memory_store()
    run = await trained_run(store, registry, artifacts)

    reproduction = await trainer(store, registry, artifacts).reproduce(run.run_id)

    assert reproduction.matches and reproduction.predictions == "identical"
    assert reproduction.max_prediction_difference == 0.0 and reproduction.rows_compared > 0
    assert reproduction.differences == []


async def test_a_record_that_does_not_match_what_its_inputs_produce_is_reported_with_the_number(artifacts, registry):
    store = memory_store()
    run = await trained_run(store, registry, artifacts)
    tampered = run.details.model_copy(update={"cv_score": run.details.cv_score + 0.05})
    store.state.tables["runs"][run.run_id] = run.model_copy(update={"details": tampered})

    reproduction = await trainer(store, registry, artifacts).reproduce(run.run_id)

    assert not reproduction.matches and reproduction.predictions == "identical"
    [difference] = reproduction.differences
    assert difference.kind == "output" and difference.name == "cv_score"
    assert difference.recorded == pytest.approx(difference.reproduced + 0.05)


async def test_a_different_library_version_is_named_as_the_input_that_changed(artifacts, registry, monkeypatch):
    store = memory_store()
    run = await trained_run(store, registry, artifacts)
    monkeypatch.setattr(training, "library_versions", lambda: {**run.details.library_versions, "scikit-learn": "0.0"})

    reproduction = await trainer(store, registry, artifacts).reproduce(run.run_id)

    assert reproduction.matches  # same numbers: the version change did not matter this time
    [changed] = reproduction.differences
    assert changed.kind == "input" and changed.name == "library.scikit-learn" and changed.reproduced == "0.0"


async def test_a_failed_run_or_one_without_its_inputs_locations_cannot_be_reproduced(artifacts, registry):
    store = memory_store()
    run = await trained_run(store, registry, artifacts)
    store.state.tables["runs"][run.run_id] = run.model_copy(update={"dataset_uri": None})

    with pytest.raises(Conflict, match="recorded before runs kept where their inputs are"):
        await trainer(store, registry, artifacts).reproduce(run.run_id)
