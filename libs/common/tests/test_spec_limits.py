"""What a spec may ask for: the work limits (registry on submission, trainer before a run) and release gates."""

from typing import Any

import pytest

from mloop_common.errors import InvalidInput
from mloop_common.spec import ModelSpec, SpecLimits, check_limits, grid_points


def spec(*estimators: dict[str, Any], search: dict[str, Any] | None = None) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "dataset": "churn",
            "task": "classification",
            "target": "churned",
            "estimators": list(estimators) or [{"class": "LogisticRegression", "params": {"C": [1.0]}}],
            "search": search or {},
            "metric": "accuracy",
        }
    )


def refusal(model: ModelSpec, limits: SpecLimits | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        check_limits(model, limits or SpecLimits())
    return refused.value


def test_grid_points_add_up_over_estimators_and_random_search_tries_at_most_n_iter_each():
    forest = {"class": "RandomForestClassifier", "params": {"n_estimators": [10, 50], "max_depth": [3, 5, None]}}
    logistic = {"class": "LogisticRegression", "params": {"C": [0.1, 1.0]}}

    assert grid_points(spec(forest, logistic)) == 6 + 2
    assert grid_points(spec(forest, logistic, search={"strategy": "random", "n_iter": 4})) == 4 + 2
    assert grid_points(spec(forest, logistic, search={"strategy": "halving"})) == 6 + 2


def test_an_ordinary_spec_is_within_the_default_limits():
    forest = {
        "class": "RandomForestClassifier",
        "params": {"n_estimators": [100, 300], "n_jobs": [2], "max_depth": [None]},
    }

    check_limits(spec(forest, {"class": "LogisticRegression", "params": {"C": [0.1, 1, 10]}}), SpecLimits())


@pytest.mark.parametrize(
    "params, field, message",
    [
        ({"n_estimators": [100, 10**9]}, "estimators.0.params.n_estimators", "1..1000"),
        ({"n_jobs": [64]}, "estimators.0.params.n_jobs", "1..2"),
        ({"n_jobs": [-1]}, "estimators.0.params.n_jobs", "1..2"),
        ({"max_depth": [10**6]}, "estimators.0.params.max_depth", "1..100"),
        ({"n_estimators": ["many"]}, "estimators.0.params.n_estimators", "not a number"),
        ({"n_estimators": [True]}, "estimators.0.params.n_estimators", "not a number"),
    ],
)
def test_a_parameter_beyond_its_bound_is_refused_naming_it(params, field, message):
    refused = refusal(spec({"class": "RandomForestClassifier", "params": params}))

    assert refused.field == field and message in refused.message


def test_too_many_grid_points_or_random_iterations_are_refused():
    wide = {"class": "LogisticRegression", "params": {"C": list(range(1, 22)), "tol": list(range(1, 11))}}

    too_wide = refusal(spec(wide))
    too_many_iterations = refusal(spec(search={"strategy": "random", "n_iter": 10_000}))

    assert too_wide.field == "estimators" and "210 parameter combinations" in too_wide.message
    assert too_many_iterations.field == "search.n_iter"


def test_a_deployment_sets_its_own_limits():
    forest = spec({"class": "RandomForestClassifier", "params": {"n_jobs": [4], "n_estimators": [2000]}})

    check_limits(forest, SpecLimits(max_n_jobs=4, param_max={"n_estimators": 5000}))
    assert refusal(forest, SpecLimits(max_n_jobs=4)).field == "estimators.0.params.n_estimators"


@pytest.mark.parametrize(
    "promotion, message",
    [
        ({"floors": {"rmse": 3.0}}, "floors name rmse"),
        ({"improvements": {"r2": {"min_improvement": 0.1}}}, "improvements name r2"),
        ({"max_flip_rate": 1.5}, "less than or equal to 1"),
    ],
)
def test_release_gates_must_name_metrics_of_the_task_and_bounds_in_range(promotion, message):
    body = spec().model_dump(by_alias=True) | {"promotion": promotion}

    with pytest.raises(ValueError, match=message):
        ModelSpec.model_validate(body)
