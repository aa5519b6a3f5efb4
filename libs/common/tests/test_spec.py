import json
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from mloop_common.errors import InvalidInput
from mloop_common.spec import (
    ModelSpec,
    SpecError,
    duration_seconds,
    metric_higher_is_better,
    parse_spec,
    spec_digest,
)

DESIGN_EXAMPLE = """\
name: churn                  # model name, unique
dataset: churn               # a new version of this dataset trains this model
task: classification         # or regression
target: churned
features: [age, plan, usage] # optional: default all columns but target and time column
time_column: signup_ts       # optional: time-ordered split and drift windows by event time
estimators:                  # candidates, scikit-learn class names from an allowlist
  - class: HistGradientBoostingClassifier
    params: {learning_rate: [0.05, 0.1], max_leaf_nodes: [15, 31]}
  - class: LogisticRegression
    params: {C: [0.1, 1.0, 10.0]}
search: {strategy: grid, cv: 3}        # grid | random (n_iter) | halving
metric: roc_auc                        # primary metric; others are reported too
holdout: 0.2                           # evaluation share, never used for fitting
promotion:
  min_improvement: 0.0                 # over the champion on the primary metric
  slices: [plan]                       # per-slice checks
  max_slice_regression: 0.02
  require_approval: false              # true: a human approves before production
  canary_percent: 0                    # >0: serve as canary before full promotion
drift:
  window: 1000                         # predictions per window
  cooldown_windows: 3
seed: 42
"""


def example() -> dict:
    return yaml.safe_load(DESIGN_EXAMPLE)


def error_locations(exc: ValidationError) -> list[str]:
    return [".".join(str(part) for part in error["loc"]) for error in exc.errors()]


def test_design_example_yaml_parses():
    spec = parse_spec(DESIGN_EXAMPLE.encode(), "application/yaml")

    assert spec.name == "churn"
    assert spec.time_column == "signup_ts"
    assert [e.class_ for e in spec.estimators] == ["HistGradientBoostingClassifier", "LogisticRegression"]
    assert spec.estimators[0].params == {"learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]}
    assert spec.promotion.slices == ["plan"]
    assert spec.drift.window == 1000


@pytest.mark.parametrize("content_type", ["application/x-yaml", "text/yaml", "application/yaml; charset=utf-8"])
def test_every_yaml_content_type_is_accepted(content_type):
    assert parse_spec(DESIGN_EXAMPLE, content_type).name == "churn"


def test_json_spec_parses_to_the_same_spec_as_yaml():
    from_json = parse_spec(json.dumps(example()), "application/json")

    assert from_json == parse_spec(DESIGN_EXAMPLE, "application/yaml")


def test_minimal_spec_gets_documented_defaults():
    spec = ModelSpec.model_validate(
        {
            "name": "m",
            "dataset": "d",
            "task": "regression",
            "target": "y",
            "metric": "rmse",
            "estimators": [{"class": "Ridge"}],
        }
    )

    assert spec.search.strategy == "grid" and spec.search.cv == 3
    assert spec.holdout == 0.2
    assert spec.seed == 42
    assert spec.features is None
    assert spec.promotion.max_slice_regression == 0.02


def test_unknown_estimator_is_rejected_naming_the_field():
    data = example()
    data["estimators"][1]["class"] = "SVC"

    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(data)

    assert "estimators.1.class" in error_locations(caught.value)
    assert "'SVC' is not in the allowlist" in str(caught.value)


def test_regression_estimator_on_classification_task_is_rejected():
    data = example()
    data["estimators"][1] = {"class": "RandomForestRegressor", "params": {"n_estimators": [10]}}

    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(data)

    assert "estimators" in error_locations(caught.value)
    assert "RandomForestRegressor is a regression estimator but the task is classification" in str(caught.value)


def test_unknown_param_is_rejected_naming_estimator_and_param():
    data = example()
    data["estimators"][0]["params"]["max_leaves"] = [15]

    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(data)

    assert "estimators.0.params" in error_locations(caught.value)
    assert "HistGradientBoostingClassifier has no parameter(s) max_leaves" in str(caught.value)


def test_metric_of_the_other_task_is_rejected():
    data = example()
    data["metric"] = "rmse"

    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(data)

    assert error_locations(caught.value) == ["metric"]
    assert "'rmse' is not valid for classification" in str(caught.value)


def test_unknown_metric_is_rejected():
    data = example()
    data["metric"] = "precision_at_k"

    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(data)

    assert error_locations(caught.value) == ["metric"]


@pytest.mark.parametrize(
    ("change", "location", "message"),
    [
        ({"features": ["age", "churned"]}, "features", "must not include the target"),
        ({"features": ["age", "signup_ts"]}, "time_column", "must not also be listed in features"),
        ({"promotion": {"slices": ["region"]}}, "promotion", "slices region must be among the features"),
        ({"name": "Churn Model"}, "name", "should match pattern"),
        ({"holdout": 0.95}, "holdout", "less than 0.9"),
        ({"search": {"cv": 1}}, "search.cv", "greater than or equal to 2"),
        ({"drift": {"window": 10}}, "drift.window", "greater than or equal to 50"),
        ({"promotion": {"canary_percent": 150}}, "promotion.canary_percent", "less than or equal to 100"),
        ({"promotion": {"canary_percent": 10, "shadow": True}}, "promotion.shadow", "a canary"),
        ({"estimators": []}, "estimators", "at least 1 item"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
    ],
)
def test_inconsistent_spec_is_rejected_naming_the_field(change, location, message):
    data = example() | change

    with pytest.raises(ValidationError) as caught:
        ModelSpec.model_validate(data)

    assert location in error_locations(caught.value)
    assert message in str(caught.value)


def test_a_single_param_value_is_a_one_point_search_space():
    data = example()
    data["estimators"][1]["params"] = {"C": 1.0}

    assert ModelSpec.model_validate(data).estimators[1].params == {"C": [1.0]}


def test_unparsable_yaml_raises_spec_error():
    with pytest.raises(SpecError, match="not valid YAML"):
        parse_spec("name: [unclosed", "application/yaml")


def test_unparsable_json_raises_spec_error():
    with pytest.raises(SpecError, match="not valid JSON"):
        parse_spec(b"{name: churn", "application/json")


def test_a_non_mapping_document_raises_spec_error():
    with pytest.raises(SpecError, match="mapping"):
        parse_spec("- just\n- a list\n", "text/yaml")


def test_unsupported_content_type_raises_spec_error():
    with pytest.raises(SpecError, match="unsupported content type"):
        parse_spec(DESIGN_EXAMPLE, "text/plain")


def test_digest_ignores_formatting_and_explicit_defaults():
    explicit = parse_spec(DESIGN_EXAMPLE, "application/yaml")
    data = example()
    del data["seed"], data["drift"]
    implicit = parse_spec(json.dumps(data, indent=4), "application/json")

    assert spec_digest(explicit) == spec_digest(implicit)


def test_digest_changes_when_the_spec_changes():
    data = example()
    data["promotion"]["min_improvement"] = 0.01

    changed = ModelSpec.model_validate(data)

    assert spec_digest(changed) != spec_digest(ModelSpec.model_validate(example()))


def test_spec_dumps_with_class_alias_and_round_trips():
    spec = ModelSpec.model_validate(example())

    dumped = spec.model_dump(mode="json", by_alias=True)

    assert dumped["estimators"][0]["class"] == "HistGradientBoostingClassifier"
    assert ModelSpec.model_validate(dumped) == spec


@pytest.mark.parametrize(
    ("metric", "higher"),
    [("accuracy", True), ("roc_auc", True), ("r2", True), ("rmse", False), ("mae", False), ("log_loss", False)],
)
def test_metric_direction(metric, higher):
    assert metric_higher_is_better(metric) is higher


def test_spec_validation_does_not_import_scikit_learn():
    # The registry validates specs and does not install scikit-learn.
    code = "import sys, mloop_common.spec; sys.exit('sklearn' in sys.modules)"

    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_an_invalid_spec_is_invalid_input_naming_the_field():
    body = json.dumps(
        {
            "name": "churn",
            "dataset": "churn",
            "task": "classification",
            "target": "y",
            "estimators": [{"class": "SVC"}],
            "metric": "accuracy",
        }
    )

    with pytest.raises(InvalidInput) as raised:
        parse_spec(body, "application/json")

    assert raised.value.field == "estimators.0.class"
    assert "allowlist" in raised.value.message


@pytest.mark.parametrize(
    ("drift", "location", "message"),
    [
        ({"window": 10_000_000}, "drift.window", "less than or equal to 100000"),
        ({"window_time": "soon"}, "drift.window_time", "not a duration"),
        ({"window_time": "10s"}, "drift.window_time", "not a duration"),
        ({"window_time": "200d"}, "drift.window_time", "between 1m and 90d"),
        ({"min_label_coverage": 0}, "drift.min_label_coverage", "greater than 0"),
        ({"max_metric_drop": 2}, "drift.max_metric_drop", "less than or equal to 1"),
        ({"numeric_tests": ["chi2"]}, "drift.numeric_tests", "'chi2' is not a numeric drift test"),
        ({"categorical_tests": ["t-test"]}, "drift.categorical_tests", "not a categorical drift test"),
        ({"thresholds": {"psi": -1}}, "drift.thresholds", "threshold of psi must be in (0, 10]"),
        ({"thresholds": {"kl": 0.1}}, "drift.thresholds", "no drift test named 'kl'"),
        ({"constraints": {"age": {"min": 5, "max": 1}}}, "drift.constraints.age.max", "max 1.0 is below min 5.0"),
        ({"constraints": {"height": {"min": 0}}}, "drift", "constraints name height, which are not among the features"),
        ({"cooldown": 3}, "drift.cooldown", "Extra inputs are not permitted"),
    ],
)
def test_a_bad_drift_policy_is_refused_at_submission_naming_the_field(drift, location, message):
    data = example()
    data["drift"] = {**data["drift"], **drift}

    with pytest.raises(InvalidInput) as caught:
        parse_spec(json.dumps(data), "application/json")

    assert caught.value.field == location
    assert message in str(caught.value)


def test_drift_policy_options_are_read_with_their_defaults_documented():
    data = example()
    data["drift"] = {
        "window": 500,
        "window_time": "1d",
        "numeric_tests": ["wasserstein", "psi"],
        "thresholds": {"psi": 0.25},
        "constraints": {"age": {"min": 0, "max": 130, "nullable": False}, "plan": {"categories": ["basic", "pro"]}},
    }

    drift = ModelSpec.model_validate(data).drift

    assert (drift.window, drift.window_time, drift.numeric_tests, drift.thresholds) == (
        500,
        "1d",
        ["wasserstein", "psi"],
        {"psi": 0.25},
    )
    assert drift.constraints["age"].max == 130 and drift.constraints["plan"].categories == ["basic", "pro"]
    assert (drift.min_label_coverage, drift.max_metric_drop, drift.max_error_increase) == (0.5, 0.05, 0.2)
    assert drift.retrain_on_covariate_shift is False


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("6h", 21_600), ("1d", 86_400), (" 2w ", 1_209_600)])
def test_durations_are_read_in_minutes_hours_days_and_weeks(text, seconds):
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('name: churn\ndataset: churn\ntask: classification\ntarget: "la\\0bel"\n', "target"),
        ('name: churn\ndataset: churn\ntask: classification\ntarget: y\nfeatures: [a, "b\\0"]\n', "features.1"),
    ],
)
def test_a_spec_with_a_nul_character_is_refused_naming_the_field(body, field):
    with pytest.raises(InvalidInput, match="NUL") as caught:
        parse_spec(body, "application/yaml")

    assert caught.value.field == field
