import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from mloop_common.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from mloop_drift.detector import DriftConfig, evaluate_window

from .profiles import categorical_entry, numeric_entry

PLAN_SHARES = {"basic": 0.5, "pro": 0.3, "team": 0.2}
CLASS_SHARES = {"0": 0.7, "1": 0.3}
REPORT_KEYS = {
    "n_rows",
    "features",
    "prediction",
    "performance",
    "drifted_features",
    "share_drifted",
    "min_drifted_features",
    "data_quality_issues",
    "cause",
    "drift_detected",
    "recommended_action",
    "summary",
}


def churn_profile(prediction: NumericProfile | CategoricalProfile | None = None) -> ReferenceProfile:
    rng = np.random.default_rng(100)
    return ReferenceProfile(
        rows=20_000,
        features={
            "age": numeric_entry(rng.normal(40.0, 10.0, 20_000)),
            "usage": numeric_entry(rng.normal(100.0, 20.0, 20_000)),
            "plan": categorical_entry(PLAN_SHARES),
        },
        prediction=prediction if prediction is not None else categorical_entry(CLASS_SHARES),
    )


def churn_rows(n: int = 1000, seed: int = 7, age_mean: float = 40.0, usage_mean: float = 100.0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    ages = rng.normal(age_mean, 10.0, n)
    usages = rng.normal(usage_mean, 20.0, n)
    plans = rng.choice(list(PLAN_SHARES), size=n, p=list(PLAN_SHARES.values()))
    return [{"age": float(a), "usage": float(u), "plan": str(p)} for a, u, p in zip(ages, usages, plans, strict=True)]


def class_predictions(n: int = 1000, seed: int = 8) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.choice([0, 1], size=n, p=[0.7, 0.3])]


def labels_with_accuracy(predictions: list[int], accuracy: float, seed: int = 9) -> list[int]:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(predictions)) >= accuracy
    return [1 - p if w else p for p, w in zip(predictions, wrong, strict=True)]


def test_window_like_the_training_data_reports_no_drift() -> None:
    report = evaluate_window(churn_profile(), churn_rows(), class_predictions(), task="classification")

    assert report.cause is None
    assert report.drift_detected is False
    assert report.recommended_action is None
    assert report.drifted_features == ()
    assert report.data_quality_issues == ()
    assert report.prediction is not None and report.prediction.drifted is False
    assert report.summary.startswith("No drift: 0 of 3 features drifted")


def test_shifted_features_are_a_covariate_shift_that_recommends_retraining() -> None:
    rows = churn_rows(age_mean=50.0, usage_mean=120.0)

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert report.cause == "covariate_shift"
    assert report.drift_detected is True
    assert report.recommended_action == "retrain"
    assert report.drifted_features == ("age", "usage")
    assert report.share_drifted == pytest.approx(2 / 3)
    assert report.data_quality_issues == ()
    assert report.summary.startswith("Covariate shift: 2 of 3 features drifted (age, usage)")


def test_lower_accuracy_on_unchanged_features_is_concept_drift() -> None:
    predictions = class_predictions()
    labels = labels_with_accuracy(predictions, 0.7)

    report = evaluate_window(
        churn_profile(),
        churn_rows(),
        predictions,
        labels=labels,
        task="classification",
        metric_baseline={"accuracy": 0.9, "roc_auc": 0.95},
    )

    assert report.cause == "concept_drift"
    assert report.recommended_action == "retrain"
    assert report.drifted_features == ()
    assert report.performance.degraded is True
    assert report.performance.n_labelled == 1000
    assert report.performance.metrics["accuracy"] == pytest.approx(0.7, abs=0.03)
    assert report.summary.startswith("Concept drift: accuracy")


def test_accuracy_within_the_allowed_drop_is_not_degraded() -> None:
    predictions = class_predictions()
    labels = labels_with_accuracy(predictions, 0.9)
    accuracy = float(np.mean([p == y for p, y in zip(predictions, labels, strict=True)]))

    report = evaluate_window(
        churn_profile(),
        churn_rows(),
        predictions,
        labels=labels,
        task="classification",
        metric_baseline={"accuracy": accuracy + 0.04},
    )

    assert report.performance.degraded is False
    assert report.cause is None


def test_a_missing_rate_jump_is_a_data_quality_problem_to_investigate() -> None:
    rows = churn_rows()
    for row in rows[:400]:
        row["age"] = None

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert report.cause == "data_quality"
    assert report.recommended_action == "investigate"
    assert [(i.feature, i.check) for i in report.data_quality_issues] == [("age", "missing_rate_jump")]
    age = report.features["age"]
    assert age.data_quality is not None and age.data_quality.missing_rate == pytest.approx(0.4)
    assert age.drifted is False  # the remaining 600 values still look like training data
    assert report.summary.startswith("Data quality problem: age missing rate 40% (reference 0%)")


def test_data_quality_takes_precedence_over_a_covariate_shift() -> None:
    rows = churn_rows(age_mean=50.0, usage_mean=120.0)
    for row in rows[:300]:
        row["plan"] = None

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert report.cause == "data_quality"
    assert report.drifted_features == ("age", "usage")


def test_a_feature_absent_from_the_rows_counts_as_missing() -> None:
    rows = churn_rows()
    for row in rows:
        del row["usage"]

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    usage = report.features["usage"]
    assert usage.data_quality is not None and usage.data_quality.missing_rate == 1.0
    assert all(t.statistic is None and not t.drifted for t in usage.tests)
    assert report.cause == "data_quality"


def test_extra_keys_in_the_rows_are_ignored() -> None:
    rows = [{**row, "session_id": "abc", "debug": [1, 2]} for row in churn_rows()]

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert set(report.features) == {"age", "usage", "plan"}
    assert report.cause is None


def test_non_numeric_values_in_a_numeric_feature_are_missing_and_flagged() -> None:
    rows = churn_rows()
    for row in rows[:50]:
        row["age"] = "forty"

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    quality = report.features["age"].data_quality
    assert quality is not None
    assert quality.invalid_share == pytest.approx(0.05)
    assert quality.missing_rate == pytest.approx(0.05)
    assert quality.flags == ("invalid_values",)
    assert report.cause == "data_quality"
    assert report.features["age"].tests[0].statistic is not None


def test_values_far_outside_the_training_range_are_flagged() -> None:
    rows = churn_rows()
    for row in rows[:100]:
        row["usage"] = 10_000.0

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    quality = report.features["usage"].data_quality
    assert quality is not None and quality.out_of_range_share == pytest.approx(0.1)
    assert ("usage", "out_of_range") in [(i.feature, i.check) for i in report.data_quality_issues]


def test_unseen_categories_above_five_percent_are_flagged() -> None:
    rows = churn_rows()
    for row in rows[:80]:
        row["plan"] = "student"

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    quality = report.features["plan"].data_quality
    assert quality is not None and quality.unseen_share == pytest.approx(0.08)
    assert quality.flags == ("unseen_categories",)
    assert report.cause == "data_quality"


def test_a_drifted_prediction_alone_is_reported_but_decides_no_cause() -> None:
    predictions = [1] * 600 + [0] * 400

    report = evaluate_window(churn_profile(), churn_rows(), predictions, task="classification")

    assert report.prediction is not None and report.prediction.drifted is True
    assert report.cause is None
    assert "predictions drifted" in report.summary


def test_regression_rmse_rising_more_than_twenty_percent_is_concept_drift() -> None:
    rng = np.random.default_rng(11)
    labels = rng.normal(100.0, 20.0, 1000)
    predictions = (labels + rng.normal(0.0, 13.0, 1000)).tolist()
    profile = churn_profile(prediction=numeric_entry(np.random.default_rng(12).normal(100.0, 20.0, 5000)))

    report = evaluate_window(
        profile, churn_rows(), predictions, labels=labels.tolist(), metric_baseline={"rmse": 10.0, "mae": 8.0}
    )

    assert report.performance.task == "regression"
    assert report.performance.metrics["rmse"] == pytest.approx(13.0, rel=0.05)
    assert report.performance.metrics["mae"] == pytest.approx(13.0 * math.sqrt(2 / math.pi), rel=0.05)
    assert report.performance.degraded is True
    assert report.cause == "concept_drift"


def test_regression_rmse_within_twenty_percent_is_not_degraded() -> None:
    rng = np.random.default_rng(11)
    labels = rng.normal(100.0, 20.0, 1000)
    predictions = (labels + rng.normal(0.0, 11.0, 1000)).tolist()

    report = evaluate_window(
        churn_profile(prediction=numeric_entry(rng.normal(100.0, 20.0, 5000))),
        churn_rows(),
        predictions,
        labels=labels.tolist(),
        metric_baseline={"rmse": 10.0},
    )

    assert report.performance.degraded is False
    assert report.cause is None


def test_too_few_labels_do_not_judge_performance() -> None:
    predictions = class_predictions()
    labels: list[int | None] = [None] * 1000
    labels[:10] = [1 - p for p in predictions[:10]]

    report = evaluate_window(
        churn_profile(), churn_rows(), predictions, labels=labels, metric_baseline={"accuracy": 0.9}
    )

    assert report.performance.n_labelled == 10
    assert report.performance.metrics["accuracy"] == 0.0
    assert report.performance.degraded is False
    assert report.performance.reason is not None and "at least 30" in report.performance.reason
    assert report.cause is None


def test_probabilities_without_labels_give_a_confidence_based_accuracy_estimate() -> None:
    probabilities = [[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], None] * 250

    report = evaluate_window(
        churn_profile(), churn_rows(), class_predictions(), probabilities=probabilities, task="classification"
    )

    assert report.performance.estimated_accuracy == pytest.approx((0.9 + 0.8 + 0.6) / 3)
    assert report.performance.n_labelled == 0
    assert report.performance.metrics == {}
    assert report.cause is None


def test_task_is_inferred_from_the_prediction_profile() -> None:
    predictions = class_predictions()

    report = evaluate_window(churn_profile(), churn_rows(), predictions, labels=predictions)

    assert report.performance.task == "classification"
    assert report.performance.metrics == {"accuracy": 1.0}


def test_one_drifted_feature_is_a_covariate_shift_in_a_model_with_few_features() -> None:
    full = churn_profile()
    profile = full.model_copy(update={"features": {"age": full.features["age"]}})

    report = evaluate_window(profile, churn_rows(age_mean=50.0), class_predictions(), task="classification")

    assert report.min_drifted_features == 1
    assert report.cause == "covariate_shift"


def test_one_drifted_feature_of_three_is_already_a_covariate_shift() -> None:
    report = evaluate_window(churn_profile(), churn_rows(age_mean=50.0), class_predictions(), task="classification")

    assert report.drifted_features == ("age",)
    assert report.min_drifted_features == 1
    assert report.cause == "covariate_shift"


@pytest.mark.parametrize(("features", "needed"), [(1, 1), (3, 1), (4, 2), (10, 3), (11, 4)])
def test_covariate_shift_needs_thirty_percent_of_the_features(features: int, needed: int) -> None:
    assert DriftConfig().min_drifted_features(features) == needed


def test_configured_methods_replace_the_defaults() -> None:
    config = DriftConfig(numeric_methods=("wasserstein",), categorical_methods=("jensen_shannon",))

    report = evaluate_window(churn_profile(), churn_rows(), class_predictions(), task="classification", config=config)

    assert [t.method for t in report.features["age"].tests] == ["wasserstein"]
    assert [t.method for t in report.features["plan"].tests] == ["jensen_shannon"]


def test_config_rejects_a_method_of_the_wrong_kind() -> None:
    with pytest.raises(ValueError, match="numeric"):
        DriftConfig(numeric_methods=("chi2",))


def test_default_tests_follow_the_window_size() -> None:
    report = evaluate_window(churn_profile(), churn_rows(n=100), class_predictions(n=100), task="classification")

    assert [t.method for t in report.features["age"].tests] == ["ks"]
    assert [t.method for t in report.features["plan"].tests] == ["chi2"]


def test_report_to_dict_is_plain_json() -> None:
    rows = churn_rows(age_mean=50.0)
    rows[0]["plan"] = None
    predictions = class_predictions()

    as_dict = evaluate_window(
        churn_profile(),
        rows,
        predictions,
        labels=predictions,
        probabilities=[[0.5, 0.5]] * 1000,
        metric_baseline={"accuracy": 0.9},
    ).to_dict()

    assert set(as_dict) == REPORT_KEYS
    assert json.loads(json.dumps(as_dict, allow_nan=False)) == as_dict
    assert set(as_dict["features"]["age"]) == {"kind", "drifted", "tests", "data_quality"}
    assert set(as_dict["performance"]) == {
        "task",
        "n_labelled",
        "metrics",
        "baseline",
        "degraded",
        "reason",
        "estimated_accuracy",
    }


def test_an_empty_window_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty window"):
        evaluate_window(churn_profile(), [], [], task="classification")


def test_predictions_must_match_the_rows() -> None:
    with pytest.raises(ValueError, match="predictions has 2 entries for 3 rows"):
        evaluate_window(churn_profile(), churn_rows(n=3), [0, 1], task="classification")


def test_rows_must_be_objects() -> None:
    with pytest.raises(ValueError, match="row 1"):
        evaluate_window(churn_profile(), [{"age": 1.0}, [1.0, 2.0]], [0, 1], task="classification")  # type: ignore[list-item]


def test_an_unknown_profile_version_is_rejected() -> None:
    stored = {**churn_profile().model_dump(mode="json"), "schema_version": 2}

    with pytest.raises(ValidationError, match="schema_version"):
        ReferenceProfile.model_validate(stored)


def test_a_profile_entry_of_an_unknown_kind_is_rejected() -> None:
    stored = churn_profile().model_dump(mode="json")
    stored["features"]["age"]["kind"] = "text"

    with pytest.raises(ValidationError, match="age"):
        ReferenceProfile.model_validate(stored)


def test_an_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="task"):
        evaluate_window(churn_profile(), churn_rows(n=3), [0, 0, 0], task="ranking")  # type: ignore[arg-type]
