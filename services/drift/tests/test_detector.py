import json
import math
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from mloop_common.datacontract import ColumnContract, DatasetContract, Declared, ValueRange
from mloop_common.profile import CategoricalProfile, EvaluationSet, NumericProfile, ReferenceProfile
from mloop_common.spec import DRIFT_METHODS, DriftPolicy, FeatureConstraint
from mloop_drift import detector
from mloop_drift.detector import DriftConfig, Verdict, evaluate_window, triage
from mloop_drift.performance import PerformanceRules
from mloop_drift.stats import METHODS, Significance, UpperBound

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
    "quarantined",
    "summary",
}


def churn_profile(
    prediction: NumericProfile | CategoricalProfile | None = None, evaluation: EvaluationSet | None = None
) -> ReferenceProfile:
    rng = np.random.default_rng(100)
    return ReferenceProfile(
        rows=20_000,
        features={
            "age": numeric_entry(rng.normal(40.0, 10.0, 20_000)),
            "usage": numeric_entry(rng.normal(100.0, 20.0, 20_000)),
            "plan": categorical_entry(PLAN_SHARES),
        },
        prediction=prediction if prediction is not None else categorical_entry(CLASS_SHARES),
        evaluation=evaluation,
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


def issues_of(report: Any) -> list[tuple[str, str]]:
    return [(i.feature, i.check) for i in report.data_quality_issues]


# --- the decision table, row by row ------------------------------------------------------


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        (
            {"data_quality_issues": 1, "drifted_features": 0, "performance_degraded": False},
            ("data_quality", "investigate"),
        ),
        (
            {"data_quality_issues": 1, "drifted_features": 3, "performance_degraded": True},
            ("data_quality", "investigate"),
        ),
        (
            {"data_quality_issues": 0, "drifted_features": 2, "performance_degraded": True},
            ("performance_drop", "retrain"),
        ),
        ({"data_quality_issues": 0, "drifted_features": 0, "performance_degraded": True}, ("concept_drift", "retrain")),
        (
            {"data_quality_issues": 0, "drifted_features": 2, "performance_degraded": False},
            ("covariate_shift", "investigate"),
        ),
        ({"data_quality_issues": 0, "drifted_features": 0, "performance_degraded": False}, (None, None)),
    ],
)
def test_the_decision_table(evidence: dict[str, Any], expected: tuple[str | None, str | None]) -> None:
    verdict = triage(min_drifted_features=1, **evidence)

    assert (verdict.cause, verdict.action) == expected
    assert verdict.quarantined is (expected[0] == "data_quality")


def test_a_covariate_shift_recommends_retraining_only_when_the_policy_says_so() -> None:
    verdict = triage(
        data_quality_issues=0,
        drifted_features=2,
        min_drifted_features=1,
        performance_degraded=False,
        retrain_on_covariate_shift=True,
    )

    assert verdict == Verdict("covariate_shift", "retrain")


def test_fewer_drifted_features_than_needed_are_no_covariate_shift() -> None:
    verdict = triage(data_quality_issues=0, drifted_features=1, min_drifted_features=2, performance_degraded=False)

    assert verdict.cause is None


# --- no drift and covariate shift ----------------------------------------------------------


def test_window_like_the_training_data_reports_no_drift() -> None:
    report = evaluate_window(churn_profile(), churn_rows(), class_predictions(), task="classification")

    assert report.cause is None
    assert report.drift_detected is False
    assert report.recommended_action is None
    assert report.drifted_features == ()
    assert report.data_quality_issues == ()
    assert report.prediction is not None and report.prediction.drifted is False
    assert report.summary.startswith("No drift: 0 of 3 features drifted")


def test_a_large_window_judged_on_several_cores_gets_the_same_report(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = churn_rows(age_mean=50.0, usage_mean=120.0)
    one_core = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    monkeypatch.setattr(detector, "PARALLEL_MIN_VALUES", 1)
    several = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert several.to_dict() == one_core.to_dict()
    assert several.drifted_features == ("age", "usage")


def test_each_profile_is_measured_against_its_own_reference_though_fits_are_reused() -> None:
    rows = churn_rows(age_mean=50.0)
    old = churn_profile()
    first = evaluate_window(old, rows, class_predictions(), task="classification")
    # A newer version trained on older customers: the same window is no shift for it.
    newer = old.model_copy(
        update={"features": {**old.features, "age": numeric_entry(np.random.default_rng(5).normal(50.0, 10.0, 20_000))}}
    )
    second = evaluate_window(newer, rows, class_predictions(), task="classification")
    again = evaluate_window(old, rows, class_predictions(), task="classification")

    assert first.drifted_features == ("age",) and second.drifted_features == ()
    assert again.to_dict() == first.to_dict()


def test_shifted_features_with_performance_unknown_are_a_covariate_shift_to_investigate() -> None:
    rows = churn_rows(age_mean=50.0, usage_mean=120.0)

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert (report.cause, report.recommended_action) == ("covariate_shift", "investigate")
    assert report.drifted_features == ("age", "usage")
    assert report.share_drifted == pytest.approx(2 / 3)
    assert report.data_quality_issues == ()
    assert report.performance.basis is None
    assert report.summary.startswith("Covariate shift: 2 of 3 features drifted (age, usage)")
    assert "performance unknown (needs labels" in report.summary


def test_shifted_features_with_performance_holding_are_a_covariate_shift_to_investigate() -> None:
    predictions = class_predictions()
    labels = labels_with_accuracy(predictions, 0.9)

    report = evaluate_window(
        churn_profile(),
        churn_rows(age_mean=50.0),
        predictions,
        labels=labels,
        task="classification",
        metric_baseline={"accuracy": 0.9},
    )

    assert (report.cause, report.recommended_action) == ("covariate_shift", "investigate")
    assert report.performance.basis == "actual" and report.performance.degraded is False
    assert "performance accuracy 0.9" in report.summary


def test_a_season_never_seen_in_training_is_covariate_shift_not_broken_data() -> None:
    # every value beyond the training maximum: the model extrapolates; nothing breaks the contract
    rows = churn_rows(age_mean=120.0)

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    age = report.features["age"].data_quality
    assert age is not None and age.out_of_range_share == pytest.approx(1.0, abs=0.01)
    assert report.data_quality_issues == ()
    assert report.cause == "covariate_shift"
    assert "outside the training range: age 100%" in report.summary


def test_unseen_categories_are_covariate_shift_evidence_not_a_data_quality_problem() -> None:
    rows = churn_rows()
    for row in rows[:300]:
        row["plan"] = "student"

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    quality = report.features["plan"].data_quality
    assert quality is not None and quality.unseen_share == pytest.approx(0.3) and quality.flags == ()
    assert report.drifted_features == ("plan",)
    assert report.cause == "covariate_shift"


# --- performance: measured, estimated, judged against the tolerance -------------------------------


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
    assert report.performance.degraded is True and report.performance.basis == "actual"
    assert report.performance.n_labelled == 1000
    assert report.performance.metrics["accuracy"] == pytest.approx(0.7, abs=0.03)
    assert report.summary.startswith("Concept drift: accuracy")


def test_lower_accuracy_on_shifted_features_is_a_performance_drop_to_retrain_on() -> None:
    predictions = class_predictions()
    labels = labels_with_accuracy(predictions, 0.7)

    report = evaluate_window(
        churn_profile(),
        churn_rows(age_mean=120.0),
        predictions,
        labels=labels,
        task="classification",
        metric_baseline={"accuracy": 0.9},
    )

    assert (report.cause, report.recommended_action) == ("performance_drop", "retrain")
    assert report.summary.startswith("Performance drop: accuracy 0.69")


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


def test_the_spec_primary_metric_is_judged_with_the_spec_tolerance() -> None:
    predictions = class_predictions()
    labels = labels_with_accuracy(predictions, 0.85)
    config = DriftConfig(performance=PerformanceRules(metric="balanced_accuracy", max_metric_drop=0.01))

    report = evaluate_window(
        churn_profile(),
        churn_rows(),
        predictions,
        labels=labels,
        task="classification",
        metric_baseline={"accuracy": 0.85, "balanced_accuracy": 0.95},
        config=config,
    )

    assert report.performance.metric == "balanced_accuracy"
    assert report.performance.limit == pytest.approx(0.94)
    assert report.cause == "concept_drift"


def test_labels_below_the_coverage_do_not_count() -> None:
    predictions = class_predictions()
    wrong = [1 - p for p in predictions]
    few: list[int | None] = [None] * 1000
    few[:400] = wrong[:400]  # 40% labelled, all wrong: still not judged at the default 50% coverage

    report = evaluate_window(churn_profile(), churn_rows(), predictions, labels=few, metric_baseline={"accuracy": 0.9})

    assert report.performance.n_labelled == 400 and report.performance.coverage == pytest.approx(0.4)
    assert report.performance.metrics["accuracy"] == 0.0  # measured and shown ...
    assert report.performance.basis is None and report.performance.degraded is False  # ... but not judged
    assert report.performance.reason is not None and "400 of 500 labelled rows" in report.performance.reason
    assert report.cause is None

    few[400:600] = wrong[400:600]
    report = evaluate_window(churn_profile(), churn_rows(), predictions, labels=few, metric_baseline={"accuracy": 0.9})

    assert report.performance.basis == "actual" and report.cause == "concept_drift"


def test_label_delays_are_summarised_over_the_labelled_rows() -> None:
    predictions = class_predictions(n=100)
    labels: list[int | None] = [*predictions[:60], *([None] * 40)]
    delays: list[float | None] = [*([60.0] * 30), *([600.0] * 30), *([None] * 40)]

    report = evaluate_window(
        churn_profile(), churn_rows(n=100), predictions, labels=labels, task="classification", label_delays=delays
    )

    assert report.performance.label_delay_seconds == {"median": 330.0, "p90": 600.0, "max": 600.0}


def test_labels_and_predictions_of_mixed_types_are_compared_as_categories() -> None:
    predictions: list[Any] = [1, 0, "1", 0.0] * 250
    labels: list[Any] = ["1", 0.0, 1, "0"] * 250

    report = evaluate_window(churn_profile(), churn_rows(), predictions, labels=labels, task="classification")

    assert report.performance.metrics["accuracy"] == 1.0


def test_task_is_inferred_from_the_prediction_profile() -> None:
    predictions = class_predictions()

    report = evaluate_window(churn_profile(), churn_rows(), predictions, labels=predictions)

    assert report.performance.task == "classification"
    assert report.performance.metrics["accuracy"] == 1.0


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


def test_regression_without_labels_says_it_needs_labels() -> None:
    profile = churn_profile(prediction=numeric_entry(np.random.default_rng(12).normal(100.0, 20.0, 5000)))

    report = evaluate_window(profile, churn_rows(age_mean=50.0), [100.0] * 1000, metric_baseline={"rmse": 10.0})

    assert report.performance.basis is None
    assert report.performance.reason == "needs labels: 0 of the 500 labelled rows that performance counts on"
    assert report.cause == "covariate_shift" and report.recommended_action == "investigate"


def calibrated_evaluation(n: int = 5000, seed: int = 3) -> EvaluationSet:
    """Held-out probabilities of an over-confident binary classifier: it says p**0.5 when the truth is p."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 1, n)
    labels = (rng.random(n) < truth).astype(int)
    said = np.where(truth > 0.5, truth**0.5, 1 - (1 - truth) ** 0.5)
    return EvaluationSet(
        classes=["0", "1"], probabilities=np.column_stack([1 - said, said]).tolist(), labels=[str(v) for v in labels]
    )


def overconfident_window(n: int, seed: int, low: float, high: float) -> tuple[list[list[float]], list[int], list[int]]:
    """Probabilities the over-confident model gives when the true positive rate is uniform on [low, high]."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(low, high, n)
    labels = (rng.random(n) < truth).astype(int).tolist()
    said = np.where(truth > 0.5, truth**0.5, 1 - (1 - truth) ** 0.5)
    proba = np.column_stack([1 - said, said])
    return proba.tolist(), proba.argmax(axis=1).tolist(), labels


def test_the_estimate_on_a_calibrated_model_matches_the_accuracy_labels_later_measure() -> None:
    profile = churn_profile(evaluation=calibrated_evaluation())
    proba, predictions, labels = overconfident_window(2000, seed=5, low=0.0, high=1.0)
    actual = float(np.mean(np.asarray(predictions) == np.asarray(labels)))

    report = evaluate_window(profile, churn_rows(n=2000), predictions, probabilities=proba, task="classification")

    estimated = report.performance.estimated["accuracy"]
    assert estimated.lower <= actual <= estimated.upper
    assert estimated.value == pytest.approx(0.75, abs=0.02)  # E[max(p, 1-p)] for p uniform on [0, 1]
    naive = float(np.mean(np.max(proba, axis=1)))
    assert naive - estimated.value > 0.05  # the raw confidences alone would have overstated it
    auc = report.performance.estimated["roc_auc"]
    assert auc.lower <= 0.833 <= auc.upper  # the AUC of labels drawn with p uniform on [0, 1] is 5/6


def test_an_estimated_drop_without_labels_recommends_retraining() -> None:
    profile = churn_profile(evaluation=calibrated_evaluation())
    # traffic where the model is unsure: true rates between 0.35 and 0.65, accuracy about 0.57
    proba, predictions, _ = overconfident_window(1000, seed=6, low=0.35, high=0.65)

    report = evaluate_window(
        profile,
        churn_rows(age_mean=120.0),
        predictions,
        probabilities=proba,
        task="classification",
        metric_baseline={"accuracy": 0.75},
    )

    performance = report.performance
    assert performance.basis == "estimated" and performance.metric == "accuracy"
    assert performance.value == pytest.approx(0.57, abs=0.04) and performance.degraded is True
    assert (report.cause, report.recommended_action) == ("performance_drop", "retrain")
    assert report.summary.startswith("Performance drop: estimated accuracy 0.5")


def test_once_labels_arrive_the_report_shows_the_estimate_next_to_the_measured_value() -> None:
    profile = churn_profile(evaluation=calibrated_evaluation())
    proba, predictions, labels = overconfident_window(1000, seed=7, low=0.0, high=1.0)

    report = evaluate_window(
        profile,
        churn_rows(),
        predictions,
        labels=labels,
        probabilities=proba,
        task="classification",
        metric_baseline={"accuracy": 0.75, "roc_auc": 0.83},
        config=DriftConfig(performance=PerformanceRules(metric="roc_auc")),
    )

    performance = report.performance.to_dict()
    assert performance["basis"] == "actual" and performance["metric"] == "roc_auc"
    assert performance["metrics"]["roc_auc"] == pytest.approx(performance["estimated"]["roc_auc"]["value"], abs=0.05)
    assert performance["metrics"]["accuracy"] == pytest.approx(performance["estimated"]["accuracy"]["value"], abs=0.05)


def test_without_an_evaluation_set_a_classifier_needs_labels() -> None:
    report = evaluate_window(
        churn_profile(), churn_rows(), class_predictions(), probabilities=[[0.5, 0.5]] * 1000, task="classification"
    )

    assert report.performance.estimated == {}
    assert report.performance.reason is not None and "held-out probabilities" in report.performance.reason


# --- data quality: the contract ----------------------------------------------------------------


def test_nulls_where_training_had_none_are_a_data_quality_problem() -> None:
    rows = churn_rows()
    for row in rows[:400]:
        row["age"] = None

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert (report.cause, report.recommended_action) == ("data_quality", "investigate")
    assert report.verdict.quarantined is True
    assert issues_of(report) == [("age", "unexpected_nulls")]
    age = report.features["age"]
    assert age.data_quality is not None and age.data_quality.missing_rate == pytest.approx(0.4)
    assert age.drifted is False  # the remaining 600 values still look like training data
    assert report.summary.startswith("Data quality problem: age is missing in 40% of rows where training had none")
    assert "retraining is blocked" in report.summary


def test_a_few_nulls_are_tolerated() -> None:
    rows = churn_rows()
    for row in rows[:5]:
        row["age"] = None

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert report.data_quality_issues == ()


def test_a_jump_in_the_missing_rate_of_a_nullable_feature_is_a_data_quality_problem() -> None:
    full = churn_profile()
    age = full.features["age"].model_copy(update={"missing_rate": 0.05})
    profile = full.model_copy(update={"features": {**full.features, "age": age}})
    rows = churn_rows()
    for row in rows[:100]:
        row["age"] = None  # 10%: within 0.1 of the training 5%
    assert evaluate_window(profile, rows, class_predictions(), task="classification").data_quality_issues == ()

    for row in rows[:200]:
        row["age"] = None

    report = evaluate_window(profile, rows, class_predictions(), task="classification")
    assert issues_of(report) == [("age", "missing_rate_jump")]


def test_a_data_quality_problem_blocks_retraining_even_when_performance_drops() -> None:
    rows = churn_rows(age_mean=50.0, usage_mean=120.0)
    for row in rows[:300]:
        row["plan"] = None
    predictions = class_predictions()

    report = evaluate_window(
        churn_profile(),
        rows,
        predictions,
        labels=labels_with_accuracy(predictions, 0.6),
        task="classification",
        metric_baseline={"accuracy": 0.9},
    )

    assert (report.cause, report.recommended_action) == ("data_quality", "investigate")
    assert report.performance.degraded is True
    assert report.drifted_features == ("age", "usage")
    assert "retraining is blocked until the feed is fixed (window quarantined), although accuracy" in report.summary


def test_a_feature_not_sent_is_a_schema_mismatch() -> None:
    rows = churn_rows()
    for row in rows:
        del row["usage"]

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    usage = report.features["usage"]
    assert usage.data_quality is not None and usage.data_quality.missing_rate == 1.0
    assert usage.data_quality.absent_share == 1.0
    assert all(t.statistic is None and not t.drifted for t in usage.tests)
    assert issues_of(report) == [("usage", "schema_mismatch")]
    assert "usage is not sent in 100% of requests" in report.summary


@pytest.mark.parametrize("bad", ["forty", "40.5", True, [40]])
def test_values_of_the_wrong_type_in_a_numeric_feature_are_a_data_quality_problem(bad: Any) -> None:
    rows = churn_rows()
    for row in rows[:50]:
        row["age"] = bad

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    quality = report.features["age"].data_quality
    assert quality is not None and quality.wrong_type_share == pytest.approx(0.05)
    assert quality.flags == ("wrong_type",)
    assert report.cause == "data_quality"
    assert report.features["age"].tests[0].statistic is not None


def test_a_whole_numeric_column_arriving_as_text_is_still_measured_but_flagged() -> None:
    rows = [{**row, "age": str(row["age"])} for row in churn_rows(age_mean=50.0)]

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert issues_of(report) == [("age", "wrong_type")]
    assert report.drifted_features == ("age",)  # the text still parses, so the shift is seen too


def test_a_feature_gone_constant_is_a_data_quality_problem() -> None:
    countries = {f"c{i}": 1 / 40 for i in range(40)}
    full = churn_profile()
    profile = full.model_copy(update={"features": {**full.features, "country": categorical_entry(countries)}})
    rows = [{**row, "usage": 0.0, "country": "c3"} for row in churn_rows()]

    report = evaluate_window(profile, rows, class_predictions(), task="classification")

    assert set(issues_of(report)) == {("usage", "gone_constant"), ("country", "gone_constant")}


def test_a_feature_of_few_levels_holding_one_of_them_is_not_a_data_quality_problem() -> None:
    # Time-ordered traffic: a summer window holds one season, an off-season one no home game, a
    # customer segment one plan. Training had few levels, so one of them for a while is the data.
    rng = np.random.default_rng(5)
    full = churn_profile()
    features = {**full.features, "season": numeric_entry(rng.integers(1, 5, 5000).astype(float))}
    profile = full.model_copy(update={"features": features})
    rows = [{**row, "season": 3.0, "plan": "pro"} for row in churn_rows()]

    report = evaluate_window(profile, rows, class_predictions(), task="classification")

    assert report.data_quality_issues == ()
    assert report.cause != "data_quality"


def test_a_zero_inflated_feature_holding_its_usual_zero_is_not_flagged_but_stuck_elsewhere_is() -> None:
    # Chicago's daily snow share: 0 on most training days, varied on the others; a summer window is all 0.
    rng = np.random.default_rng(11)
    snow = np.where(rng.random(5000) < 0.8, 0.0, rng.uniform(0.01, 1.0, 5000))
    full = churn_profile()
    profile = full.model_copy(update={"features": {**full.features, "snow": numeric_entry(snow)}})
    summer = [{**row, "snow": 0.0} for row in churn_rows(n=200)]
    stuck = [{**row, "snow": 0.37} for row in churn_rows(n=200)]

    held = evaluate_window(profile, summer, class_predictions(n=200), task="classification")
    broken = evaluate_window(profile, stuck, class_predictions(n=200), task="classification")

    assert ("snow", "gone_constant") not in issues_of(held)
    assert ("snow", "gone_constant") in issues_of(broken)


def test_a_constant_window_of_a_feature_that_is_usually_one_value_is_not_flagged() -> None:
    full = churn_profile()
    profile = full.model_copy(
        update={"features": {**full.features, "plan": categorical_entry({"basic": 0.99, "pro": 0.01})}}
    )
    rows = [{**row, "plan": "basic"} for row in churn_rows(n=200)]

    report = evaluate_window(profile, rows, class_predictions(n=200), task="classification")

    assert report.data_quality_issues == ()


def test_values_outside_a_declared_range_are_a_data_quality_problem() -> None:
    rows = churn_rows()
    for row in rows[:30]:
        row["age"] = -5.0
    config = DriftConfig(constraints={"age": FeatureConstraint(min=0, max=130)})

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification", config=config)

    assert issues_of(report) == [("age", "outside_declared_range")]
    assert "age has 3% values outside its declared range" in report.summary


def test_values_outside_declared_categories_are_a_data_quality_problem() -> None:
    rows = churn_rows()
    for row in rows[:30]:
        row["plan"] = "???"
    config = DriftConfig(constraints={"plan": FeatureConstraint(categories=["basic", "pro", "team"])})

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification", config=config)

    assert issues_of(report) == [("plan", "undeclared_category")]


def test_a_feature_declared_nullable_may_have_nulls() -> None:
    rows = churn_rows()
    for row in rows[:50]:
        row["age"] = None
    config = DriftConfig(constraints={"age": FeatureConstraint(nullable=True)})

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification", config=config)

    assert report.data_quality_issues == ()


def test_an_all_missing_window_gives_a_clear_report() -> None:
    rows = [{"age": None, "usage": math.nan, "plan": None} for _ in range(200)]

    report = evaluate_window(churn_profile(), rows, class_predictions(n=200), task="classification")

    assert set(issues_of(report)) == {
        ("age", "unexpected_nulls"),
        ("usage", "unexpected_nulls"),
        ("plan", "unexpected_nulls"),
    }
    assert all(t.statistic is None for f in report.features.values() for t in f.tests)
    json.dumps(report.to_dict(), allow_nan=False)


# --- the rest of the evidence -------------------------------------------------------------------


def test_extra_keys_in_the_rows_are_ignored() -> None:
    rows = [{**row, "session_id": "abc", "debug": [1, 2]} for row in churn_rows()]

    report = evaluate_window(churn_profile(), rows, class_predictions(), task="classification")

    assert set(report.features) == {"age", "usage", "plan"}
    assert report.cause is None


def test_a_drifted_prediction_alone_is_reported_but_decides_no_cause() -> None:
    predictions = [1] * 600 + [0] * 400

    report = evaluate_window(churn_profile(), churn_rows(), predictions, task="classification")

    assert report.prediction is not None and report.prediction.drifted is True
    assert report.cause is None
    assert "predictions drifted" in report.summary


def test_one_drifted_feature_is_a_covariate_shift_in_a_model_with_few_features() -> None:
    full = churn_profile()
    profile = full.model_copy(update={"features": {"age": full.features["age"]}})

    report = evaluate_window(profile, churn_rows(age_mean=50.0), class_predictions(), task="classification")

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


def test_a_spec_drift_policy_becomes_the_detector_configuration() -> None:
    policy = DriftPolicy(
        thresholds={"psi": 0.3, "ks": 0.2},
        numeric_tests=["psi"],
        min_label_coverage=0.8,
        max_metric_drop=0.1,
        drift_share=0.5,
        retrain_on_covariate_shift=True,
        constraints={"age": FeatureConstraint(min=0)},
    )

    config = DriftConfig.from_policy(policy, metric="roc_auc")

    assert config.thresholds == {"psi": UpperBound(0.3), "ks": Significance(alpha=0.05, min_effect=0.2)}
    assert config.numeric_methods == ("psi",) and config.categorical_methods is None
    assert config.performance == PerformanceRules(min_label_coverage=0.8, max_metric_drop=0.1, metric="roc_auc")
    assert config.drift_share_threshold == 0.5 and config.retrain_on_covariate_shift is True
    assert config.constraints["age"].min == 0


def churn_contract(**age: Any) -> DatasetContract:
    """ingest's contract of the churn data: observed ranges for every column, declarations only where given."""
    return DatasetContract(
        target="churned",
        columns=[
            ColumnContract(
                name="age",
                type="numeric",
                physical_type="double",
                nullable=False,
                missing_rate=0.0,
                observed_range=ValueRange(min=18, max=90),
                declared=Declared(**age) if age else None,
            ),
            ColumnContract(
                name="usage",
                type="numeric",
                physical_type="double",
                nullable=False,
                missing_rate=0.0,
                observed_range=ValueRange(min=0, max=300),
            ),
        ],
    )


def test_the_publishers_declared_bounds_are_drifts_data_quality_bar_under_the_specs_own() -> None:
    policy = DriftPolicy(constraints={"age": FeatureConstraint(max=120), "usage": FeatureConstraint(min=0)})

    config = DriftConfig.from_policy(policy, contract=churn_contract(min=0, max=130, nullable=False))

    assert config.constraints["age"] == FeatureConstraint(min=0, max=120, nullable=False)  # the spec's max wins
    assert config.constraints["usage"] == FeatureConstraint(min=0)
    # Observed ranges are not declarations: without any, the contract adds nothing.
    assert DriftConfig.from_policy(DriftPolicy(), contract=churn_contract()).constraints == {}


def test_values_outside_the_declared_physical_range_of_the_dataset_are_broken_data() -> None:
    rows = churn_rows()
    for row in rows[:30]:
        row["age"] = -5.0
    contract = churn_contract(min=0, max=130)

    declared = evaluate_window(
        churn_profile(),
        rows,
        class_predictions(),
        task="classification",
        config=DriftConfig.from_policy(DriftPolicy(), contract=contract),
    )
    observed_only = evaluate_window(
        churn_profile(),
        rows,
        class_predictions(),
        task="classification",
        config=DriftConfig.from_policy(DriftPolicy(), contract=churn_contract()),
    )

    assert issues_of(declared) == [("age", "outside_declared_range")]
    assert issues_of(observed_only) == []


def test_the_spec_names_exactly_the_registered_drift_tests() -> None:
    assert DRIFT_METHODS == {name: method.kind for name, method in METHODS.items()}


def test_report_to_dict_is_plain_json() -> None:
    rows = churn_rows(age_mean=50.0)
    rows[0]["plan"] = None
    predictions = class_predictions()

    as_dict = evaluate_window(
        churn_profile(evaluation=calibrated_evaluation(200)),
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
        "n_rows",
        "n_labelled",
        "coverage",
        "labels_needed",
        "label_delay_seconds",
        "metrics",
        "estimated",
        "baseline",
        "basis",
        "metric",
        "value",
        "limit",
        "margin",
        "degraded",
        "reason",
    }
    assert set(as_dict["performance"]["estimated"]) == {"accuracy", "roc_auc"}


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
