import pytest

from mloop_common.spec import MetricGate, PromotionPolicy
from mloop_validator.policy import Measured, decide


def slices(**per_value):
    """slices(plan={"basic": (0.9, 100)}) -> the slice_metrics shape."""
    return {
        column: {value: {"rows": rows, "value": score} for value, (score, rows) in values.items()}
        for column, values in per_value.items()
    }


def test_first_model_is_registered_when_there_is_no_champion():
    decision = decide("roc_auc", {"roc_auc": 0.71}, None, None, None, PromotionPolicy(min_improvement=0.05))

    assert decision.register
    assert decision.improvement is None
    assert "no champion" in decision.reasons[0]


def test_candidate_beating_the_champion_by_the_margin_is_registered():
    decision = decide(
        "roc_auc", {"roc_auc": 0.90}, {"roc_auc": 0.85}, None, None, PromotionPolicy(min_improvement=0.02)
    )

    assert decision.register
    assert decision.improvement == pytest.approx(0.05)
    assert "0.9000" in decision.reasons[0] and "0.8500" in decision.reasons[0]


def test_candidate_short_of_the_margin_is_rejected():
    decision = decide(
        "roc_auc", {"roc_auc": 0.86}, {"roc_auc": 0.85}, None, None, PromotionPolicy(min_improvement=0.02)
    )

    assert not decision.register
    assert decision.improvement == pytest.approx(0.01)
    assert "short of the required +0.0200" in decision.reasons[0]


def test_a_tie_is_enough_when_no_improvement_is_required():
    decision = decide("accuracy", {"accuracy": 0.8}, {"accuracy": 0.8}, None, None, PromotionPolicy())

    assert decision.register


def test_for_lower_is_better_metrics_a_smaller_value_is_an_improvement():
    policy = PromotionPolicy(min_improvement=1.0)

    better = decide("rmse", {"rmse": 40.0}, {"rmse": 42.5}, None, None, policy)
    worse = decide("rmse", {"rmse": 45.0}, {"rmse": 42.5}, None, None, policy)

    assert better.register and better.improvement == pytest.approx(2.5)
    assert not worse.register and worse.improvement == pytest.approx(-2.5)


def test_a_slice_that_regresses_past_the_bound_rejects_and_is_named():
    policy = PromotionPolicy(slices=["plan"], max_slice_regression=0.02)

    decision = decide(
        "roc_auc",
        {"roc_auc": 0.92},
        {"roc_auc": 0.88},
        slices(plan={"basic": (0.93, 400), "pro": (0.80, 120)}),
        slices(plan={"basic": (0.89, 400), "pro": (0.86, 120)}),
        policy,
    )

    assert not decision.register
    assert decision.improvement == pytest.approx(0.04)
    slice_reasons = [r for r in decision.reasons if "slice" in r]
    assert len(slice_reasons) == 1
    assert "plan=pro" in slice_reasons[0] and "0.8000" in slice_reasons[0] and "0.0600" in slice_reasons[0]


def test_a_slice_regression_within_the_bound_is_tolerated():
    policy = PromotionPolicy(slices=["plan"], max_slice_regression=0.02)

    decision = decide(
        "roc_auc",
        {"roc_auc": 0.92},
        {"roc_auc": 0.88},
        slices(plan={"pro": (0.85, 120)}),
        slices(plan={"pro": (0.86, 120)}),
        policy,
    )

    assert decision.register
    assert any("No slice of plan regresses" in r for r in decision.reasons)


def test_slice_direction_follows_the_metric():
    policy = PromotionPolicy(slices=["region"], max_slice_regression=1.0)

    decision = decide(
        "mae",
        {"mae": 10.0},
        {"mae": 11.0},
        slices(region={"north": (14.0, 50)}),
        slices(region={"north": (12.0, 50)}),
        policy,
    )

    assert not decision.register
    assert "region=north" in decision.reasons[-1]


@pytest.mark.parametrize(
    ("candidate_slice", "champion_slice"),
    [
        ({"pro": (0.50, 10)}, {"pro": (0.90, 10)}),  # too few rows to judge
        ({"pro": (None, 100)}, {"pro": (0.90, 100)}),  # metric undefined on the slice
        ({"team": (0.50, 100)}, {"pro": (0.90, 100)}),  # slice value only on one side
    ],
)
def test_slices_that_cannot_be_compared_are_skipped(candidate_slice, champion_slice):
    policy = PromotionPolicy(slices=["plan"])

    decision = decide(
        "roc_auc",
        {"roc_auc": 0.9},
        {"roc_auc": 0.8},
        slices(plan=candidate_slice),
        slices(plan=champion_slice),
        policy,
    )

    assert decision.register


def test_slices_not_in_the_policy_are_ignored():
    decision = decide(
        "roc_auc",
        {"roc_auc": 0.9},
        {"roc_auc": 0.8},
        slices(region={"north": (0.1, 500)}),
        slices(region={"north": (0.9, 500)}),
        PromotionPolicy(slices=["plan"]),
    )

    assert decision.register


def test_margin_and_slice_failures_are_all_reported():
    policy = PromotionPolicy(min_improvement=0.05, slices=["plan"], max_slice_regression=0.0)

    decision = decide(
        "accuracy",
        {"accuracy": 0.80},
        {"accuracy": 0.79},
        slices(plan={"basic": (0.70, 60), "pro": (0.75, 60)}),
        slices(plan={"basic": (0.72, 60), "pro": (0.80, 60)}),
        policy,
    )

    assert not decision.register
    assert len(decision.reasons) == 3
    assert all(reason.endswith(".") for reason in decision.reasons)


def test_candidate_without_the_primary_metric_is_rejected():
    decision = decide("roc_auc", {"accuracy": 0.9}, {"roc_auc": 0.8}, None, None, PromotionPolicy())

    assert not decision.register
    assert "no roc_auc value" in decision.reasons[0]


def test_champion_without_the_primary_metric_does_not_block_the_candidate():
    decision = decide("roc_auc", {"roc_auc": 0.9}, {"accuracy": 0.8}, None, None, PromotionPolicy())

    assert decision.register
    assert decision.improvement is None


# --- more gates: per-metric improvements, floors, measured bounds ----------------------------


def test_a_relative_improvement_follows_the_direction_of_each_metric():
    policy = PromotionPolicy(
        improvements={"rmse": MetricGate(min_improvement=0.05, relative=True), "mae": MetricGate(min_improvement=0.0)}
    )

    enough = decide("rmse", {"rmse": 9.4, "mae": 5.0}, {"rmse": 10.0, "mae": 5.0}, None, None, policy)
    short = decide("rmse", {"rmse": 9.6, "mae": 5.0}, {"rmse": 10.0, "mae": 5.0}, None, None, policy)

    assert enough.register and enough.improvement == pytest.approx(0.6)
    assert not short.register and [c.name for c in short.failed] == ["improvement.rmse"]
    assert short.failed[0].bound == pytest.approx(0.5)


def test_a_secondary_metric_may_not_get_worse_than_its_gate_allows():
    policy = PromotionPolicy(improvements={"log_loss": MetricGate(min_improvement=-0.01)})

    decision = decide(
        "roc_auc", {"roc_auc": 0.91, "log_loss": 0.40}, {"roc_auc": 0.90, "log_loss": 0.35}, None, None, policy
    )

    assert not decision.register and [c.name for c in decision.failed] == ["improvement.log_loss"]


def test_floors_bound_scores_from_below_and_errors_from_above_even_for_a_first_model():
    policy = PromotionPolicy(floors={"accuracy": 0.8})

    assert decide("accuracy", {"accuracy": 0.81}, None, None, None, policy).register
    low = decide("accuracy", {"accuracy": 0.79}, None, None, None, policy)
    assert not low.register and [c.name for c in low.failed] == ["floor.accuracy"]
    errors = PromotionPolicy(floors={"rmse": 5.0})
    assert decide("rmse", {"rmse": 4.0}, None, None, None, errors).register
    assert not decide("rmse", {"rmse": 6.0}, None, None, None, errors).register


def test_measured_bounds_reject_a_candidate_that_beats_the_champion():
    policy = PromotionPolicy(
        max_flip_rate=0.05,
        max_calibration_error=0.1,
        max_fairness_gap=0.2,
        max_p99_latency_ms=5.0,
        max_artifact_mb=10.0,
    )
    measured = Measured(
        flip_rate=0.2,
        calibration_error=0.05,
        fairness={"plan": {"positive_rate_gap": 0.3, "tpr_gap": 0.1}},
        p99_latency_ms=7.5,
        artifact_mb=2.0,
        infra_checked=True,
        infra_error="ModuleNotFoundError: No module named 'sklearn'",
    )

    decision = decide("accuracy", {"accuracy": 0.95}, {"accuracy": 0.9}, None, None, policy, measured=measured)

    assert not decision.register
    assert [c.name for c in decision.failed] == ["flip_rate", "latency_p99", "fairness.plan.positive_rate_gap", "infra"]
    assert {c.name for c in decision.checks if c.passed} == {
        "improvement.accuracy",
        "calibration",
        "artifact_size",
        "fairness.plan.tpr_gap",
    }


def test_unbounded_measurements_are_reported_but_never_reject():
    measured = Measured(flip_rate=0.9, calibration_error=0.5, p99_latency_ms=1000.0, artifact_mb=500.0)

    decision = decide("accuracy", {"accuracy": 0.9}, None, None, None, PromotionPolicy(), measured=measured)

    assert decision.register and decision.failed == []
