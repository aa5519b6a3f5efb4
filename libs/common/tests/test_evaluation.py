import math

import numpy as np
import pandas as pd
import pytest

from mloop_common.evaluation import compute_metrics, slice_metrics


def test_binary_classification_reports_every_metric_as_plain_floats():
    y_true = ["no", "yes", "yes", "no", "yes"]
    y_pred = ["no", "yes", "no", "no", "yes"]
    proba = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3], [0.1, 0.9]]

    metrics = compute_metrics("classification", y_true, y_pred, proba, classes=["no", "yes"])

    assert set(metrics) == {"accuracy", "balanced_accuracy", "f1", "roc_auc", "log_loss", "brier"}
    assert all(type(v) is float for v in metrics.values())
    # mean of (0.1-0)^2, (0.8-1)^2, (0.4-1)^2, (0.3-0)^2, (0.9-1)^2
    assert metrics["brier"] == pytest.approx((0.01 + 0.04 + 0.36 + 0.09 + 0.01) / 5)
    assert metrics["accuracy"] == pytest.approx(0.8)
    assert metrics["f1"] == pytest.approx(0.8)  # positive class "yes": precision 1, recall 2/3
    assert metrics["roc_auc"] == pytest.approx(1.0)


def test_roc_auc_and_log_loss_need_probabilities():
    metrics = compute_metrics("classification", [0, 1, 1, 0], [0, 1, 0, 0])

    assert "roc_auc" not in metrics and "log_loss" not in metrics
    assert metrics["accuracy"] == pytest.approx(0.75)


def test_multiclass_brier_is_the_squared_distance_to_the_one_hot_truth():
    proba = [[1.0, 0.0, 0.0], [0.2, 0.5, 0.3]]
    metrics = compute_metrics("classification", ["a", "c"], ["a", "b"], proba, classes=["a", "b", "c"])

    # row 1 exact (0); row 2: 0.2^2 + 0.5^2 + 0.7^2 = 0.78
    assert metrics["brier"] == pytest.approx(0.78 / 2)


def test_one_dimensional_probabilities_are_the_positive_class():
    metrics = compute_metrics("classification", [0, 1, 1, 0], [0, 1, 1, 0], [0.2, 0.7, 0.9, 0.4], classes=[0, 1])

    assert metrics["roc_auc"] == pytest.approx(1.0)


def test_single_class_present_omits_undefined_metrics_instead_of_nan():
    metrics = compute_metrics(
        "classification", [1, 1, 1], [1, 0, 1], [[0.1, 0.9], [0.6, 0.4], [0.2, 0.8]], classes=[0, 1]
    )

    assert "roc_auc" not in metrics
    assert "balanced_accuracy" not in metrics
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert all(math.isfinite(v) for v in metrics.values())


def test_multiclass_roc_auc_is_one_vs_rest_weighted_by_support():
    y_true = np.array(["a", "a", "b", "b", "c", "c", "c", "a"])
    proba = np.array(
        [
            [0.8, 0.1, 0.1],
            [0.6, 0.3, 0.1],
            [0.2, 0.7, 0.1],
            [0.1, 0.8, 0.1],
            [0.1, 0.2, 0.7],
            [0.2, 0.2, 0.6],
            [0.3, 0.1, 0.6],
            [0.5, 0.4, 0.1],
        ]
    )
    y_pred = np.array(["a", "b", "c"])[proba.argmax(axis=1)]

    metrics = compute_metrics("classification", y_true, y_pred, proba, classes=["a", "b", "c"])

    assert metrics["roc_auc"] == pytest.approx(1.0)
    assert metrics["accuracy"] == pytest.approx(1.0)


def test_multiclass_roc_auc_survives_a_class_absent_from_the_sample():
    y_true = ["a", "b", "a", "b"]
    proba = [[0.7, 0.2, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]]

    metrics = compute_metrics("classification", y_true, ["a", "b", "a", "b"], proba, classes=["a", "b", "c"])

    assert metrics["roc_auc"] == pytest.approx(1.0)


def test_probability_columns_must_match_the_classes():
    with pytest.raises(ValueError, match="pass classes"):
        compute_metrics("classification", [0, 0], [0, 0], [[0.9, 0.1], [0.8, 0.2]])


def test_regression_reports_rmse_mae_r2():
    metrics = compute_metrics("regression", [1.0, 2.0, 3.0, 4.0], [1.5, 2.0, 2.5, 4.0])

    assert metrics["mae"] == pytest.approx(0.25)
    assert metrics["rmse"] == pytest.approx(math.sqrt(0.125))
    assert metrics["r2"] == pytest.approx(1 - 0.5 / 5.0)


def test_r2_is_omitted_for_a_constant_target():
    metrics = compute_metrics("regression", [2.0, 2.0, 2.0], [1.0, 2.0, 3.0])

    assert "r2" not in metrics
    assert metrics["mae"] == pytest.approx(2 / 3)


def test_empty_input_gives_no_metrics():
    assert compute_metrics("regression", [], []) == {}


def test_slice_metrics_per_category_with_row_counts():
    frame = pd.DataFrame({"plan": ["basic"] * 40 + ["pro"] * 40})
    y_true = np.array([0, 1] * 40)
    y_pred = np.concatenate([y_true[:40], 1 - y_true[40:]])  # perfect on basic, all wrong on pro

    slices = slice_metrics("classification", frame, ["plan"], y_true, y_pred, None, "accuracy")

    assert slices == {
        "plan": {"basic": {"rows": 40, "value": 1.0}, "pro": {"rows": 40, "value": 0.0}},
    }


def test_small_slices_report_rows_but_no_value():
    frame = pd.DataFrame({"plan": ["basic"] * 50 + ["rare"] * 5})
    y = np.zeros(55, dtype=int)
    y[::2] = 1

    slices = slice_metrics("classification", frame, ["plan"], y, y, None, "accuracy", min_rows=30)

    assert slices["plan"]["rare"] == {"rows": 5, "value": None}
    assert slices["plan"]["basic"]["value"] == 1.0


def test_missing_slice_values_form_their_own_slice():
    frame = pd.DataFrame({"plan": ["basic", None, "basic", None]})

    slices = slice_metrics(
        "regression", frame, ["plan"], [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0], None, "mae", min_rows=1
    )

    assert slices["plan"]["__missing__"] == {"rows": 2, "value": 0.5}


def test_many_valued_numeric_slice_is_cut_into_four_quantile_bins():
    age = np.arange(100, dtype=float)
    frame = pd.DataFrame({"age": age})
    y_true = age * 2
    y_pred = y_true + np.where(age >= 75, 10.0, 0.0)  # only the oldest quarter is off

    slices = slice_metrics("regression", frame, ["age"], y_true, y_pred, None, "mae", min_rows=10)

    assert len(slices["age"]) == 4
    assert all(entry["rows"] == 25 for entry in slices["age"].values())
    worst = max(slices["age"], key=lambda label: slices["age"][label]["value"])
    assert worst.startswith("(74.25") and slices["age"][worst]["value"] == pytest.approx(10.0)


def test_numeric_slice_with_few_values_is_kept_per_value():
    frame = pd.DataFrame({"tier": [1, 2, 3] * 20})
    y = np.arange(60, dtype=float)

    slices = slice_metrics("regression", frame, ["tier"], y, y, None, "rmse", min_rows=10)

    assert sorted(slices["tier"]) == ["1", "2", "3"]


def test_slice_metrics_use_probabilities_for_roc_auc():
    frame = pd.DataFrame({"plan": ["a"] * 40})
    y_true = np.array([0, 1] * 20)
    proba = np.column_stack([1 - y_true * 0.8, y_true * 0.8])

    slices = slice_metrics("classification", frame, ["plan"], y_true, y_true, proba, "roc_auc", classes=[0, 1])

    assert slices["plan"]["a"]["value"] == pytest.approx(1.0)


def test_unknown_slice_column_is_an_error():
    with pytest.raises(ValueError, match="region"):
        slice_metrics("regression", pd.DataFrame({"a": [1]}), ["region"], [1.0], [1.0], None, "mae")
