import numpy as np
import pytest

from mloop_common.profile import EvaluationSet
from mloop_drift.performance import (
    Calibration,
    Isotonic,
    PerformanceRules,
    Scored,
    assess,
    estimate,
    sampling_error,
)


def test_isotonic_pools_adjacent_violators() -> None:
    fitted = Isotonic.fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 1.0, 0.0, 1.0]))

    assert fitted.y.tolist() == [0.0, 0.5, 0.5, 1.0]
    assert fitted(np.array([0.0, 2.5, 9.0])).tolist() == [0.0, 0.5, 1.0]  # clipped at the ends


def perfect_set() -> EvaluationSet:
    # the model says 0.8 for the positive class and is right 80% of the time, and likewise for 0.2
    probabilities = [[0.2, 0.8]] * 10 + [[0.8, 0.2]] * 10
    labels = ["1"] * 8 + ["0"] * 2 + ["0"] * 8 + ["1"] * 2
    return EvaluationSet(classes=["0", "1"], probabilities=probabilities, labels=labels)


def test_cbpe_expected_accuracy_is_the_mean_calibrated_probability_of_the_predicted_class() -> None:
    calibration = Calibration.fit(perfect_set())

    found = estimate(calibration, np.array([[0.2, 0.8]] * 50 + [[0.8, 0.2]] * 50))

    assert found["accuracy"].value == pytest.approx(0.8)
    spread = 1.959964 * np.sqrt(100 * 0.8 * 0.2) / 100
    assert found["accuracy"].lower == pytest.approx(0.8 - spread)


def test_cbpe_expected_auc_of_two_score_levels() -> None:
    calibration = Calibration.fit(perfect_set())

    found = estimate(calibration, np.array([[0.2, 0.8]] * 50 + [[0.8, 0.2]] * 50))

    # positives expected 40 high + 10 low, negatives 10 high + 40 low:
    # P(positive outscores negative) + half the ties = 0.8 * 0.8 + 0.5 * (0.8 * 0.2 + 0.2 * 0.8)
    assert found["roc_auc"].value == pytest.approx(0.8)


def test_a_multiclass_calibration_gives_rows_that_sum_to_one() -> None:
    evaluation = EvaluationSet(
        classes=["a", "b", "c"],
        probabilities=[[0.7, 0.2, 0.1], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7]] * 20,
        labels=["a", "b", "c"] * 20,
    )

    calibrated = Calibration.fit(evaluation)(np.array([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]))

    assert calibrated.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_rows_without_probabilities_are_left_out_of_the_estimate() -> None:
    calibration = Calibration.fit(perfect_set())

    found = estimate(calibration, np.array([[0.2, 0.8], [np.nan, np.nan]]))

    assert found["accuracy"].value == pytest.approx(0.8)


def test_an_error_metric_tolerates_a_relative_rise_and_a_score_an_absolute_drop() -> None:
    rules = PerformanceRules(max_metric_drop=0.05, max_error_increase=0.2)

    assert rules.limit("rmse", 10.0) == pytest.approx(12.0)
    assert rules.limit("roc_auc", 0.9) == pytest.approx(0.85)


def test_coverage_and_the_minimum_both_gate_the_labels() -> None:
    rules = PerformanceRules(min_label_coverage=0.5, min_labels=30)

    assert rules.labels_needed(1000) == 500 and rules.labels_needed(40) == 30


def test_without_a_task_nothing_is_judged() -> None:
    found = assess(None, np.array([1, 0], dtype=object), None, None, {}, PerformanceRules())

    assert found.basis is None and found.reason == "the task is unknown"


# --- a drop counts beyond its sampling error ---------------------------------------------


def window_with_accuracy(n: int, accuracy: float) -> tuple[np.ndarray, np.ndarray]:
    """n binary predictions, exactly ``accuracy`` of them right."""
    predictions = np.array([i % 2 for i in range(n)], dtype=object)
    right = round(n * accuracy)
    labels = np.array([p if i < right else 1 - p for i, p in enumerate(predictions)], dtype=object)
    return predictions, labels


@pytest.mark.parametrize(("rows", "degraded"), [(100, False), (5000, True)])
def test_an_accuracy_just_past_the_tolerance_is_a_drop_only_when_the_window_is_large_enough(
    rows: int, degraded: bool
) -> None:
    predictions, labels = window_with_accuracy(rows, 0.83)  # tolerated: 0.85; sampling error at 100 rows: ~0.038

    found = assess("classification", predictions, labels, None, {"accuracy": 0.9}, PerformanceRules())

    assert found.basis == "actual" and found.value == pytest.approx(0.83)
    assert found.degraded is degraded
    assert found.margin is not None and found.margin == pytest.approx(1.645 * (0.83 * 0.17 / rows) ** 0.5, rel=0.2)
    if not degraded:
        assert "by less than its sampling error" in (found.reason or "")


def test_a_baseline_measured_on_few_rows_widens_the_margin() -> None:
    predictions, labels = window_with_accuracy(1000, 0.82)

    def judged(baseline_rows: int | None) -> bool:
        rules = PerformanceRules()
        return assess(
            "classification", predictions, labels, None, {"accuracy": 0.9}, rules, baseline_rows=baseline_rows
        ).degraded

    assert judged(None) is True and judged(5000) is True
    assert judged(40) is False  # a baseline of 40 held-out rows is itself uncertain by ~0.05


def test_a_clear_drop_is_degraded_on_a_small_window_too() -> None:
    predictions, labels = window_with_accuracy(100, 0.5)

    found = assess("classification", predictions, labels, None, {"accuracy": 0.9}, PerformanceRules(), baseline_rows=50)

    assert found.degraded is True and found.reason == "accuracy 0.5 is below the tolerated 0.85 (baseline 0.9)"


def test_the_bootstrap_error_of_accuracy_matches_the_binomial_one() -> None:
    truth = np.array(["1"] * 300 + ["0"] * 700)
    predicted = np.array(["1"] * 200 + ["0"] * 100 + ["0"] * 600 + ["1"] * 100)  # 80% right

    error = sampling_error(Scored("classification", truth, predicted), "accuracy")

    assert error == pytest.approx((0.8 * 0.2 / 1000) ** 0.5, rel=0.15)


def test_the_bootstrap_error_of_rmse_matches_the_delta_method_and_scales_past_its_row_cap() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(0.0, 1.0, 20_000)
    predicted = truth + rng.normal(0.0, 2.0, truth.size)
    squared = (predicted - truth) ** 2
    expected = squared.std() / np.sqrt(truth.size) / (2 * np.sqrt(squared.mean()))

    error = sampling_error(Scored("regression", truth, predicted), "rmse")

    assert error == pytest.approx(expected, rel=0.2)


def test_the_error_of_a_binary_auc_is_hanley_mcneil() -> None:
    truth = np.array(["1"] * 50 + ["0"] * 50)
    auc = 0.8
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    expected = ((auc * (1 - auc) + 49 * (q1 - auc**2) + 49 * (q2 - auc**2)) / 2500) ** 0.5

    error = sampling_error(Scored("classification", truth, truth, classes=["0", "1"]), "roc_auc", auc)

    assert error == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["balanced_accuracy", "f1", "mae", "r2", "log_loss"])
def test_every_judged_metric_has_a_sampling_error(metric: str) -> None:
    rng = np.random.default_rng(4)
    if metric in ("mae", "r2"):
        truth = rng.normal(0.0, 1.0, 500)
        scored = Scored("regression", truth, truth + rng.normal(0.0, 0.5, 500))
    else:
        truth = rng.choice(["a", "b", "c"], 500)
        predicted = np.where(rng.random(500) < 0.7, truth, "a")
        proba = np.full((500, 3), 0.2)
        proba[np.arange(500), ["abc".index(p) for p in predicted]] = 0.6
        scored = Scored("classification", truth, predicted, proba, ["a", "b", "c"])

    error = sampling_error(scored, metric)

    assert error is not None and 0.001 < error < 0.2


def test_an_estimate_within_its_band_of_the_tolerance_is_not_a_drop() -> None:
    calibration = Calibration.fit(perfect_set())
    few = np.array([[0.2, 0.8]] * 20 + [[0.5, 0.5]] * 20)  # estimated accuracy ~0.65 on 40 rows
    predictions = np.array([1] * 40, dtype=object)

    found = assess("classification", predictions, None, few, {"accuracy": 0.72}, PerformanceRules(), calibration)

    assert found.basis == "estimated" and found.value is not None and found.value < 0.67
    assert found.degraded is False and found.margin is not None and found.margin > 0.1
