"""The release gate's probes of a candidate: calibration, seeded perturbations and fairness gaps."""

import numpy as np
import pandas as pd
import pytest

from mloop_common.evaluation import calibration, fairness_gaps, perturb


def test_probabilities_that_match_the_frequencies_have_no_calibration_error():
    y = ["yes"] * 80 + ["no"] * 20 + ["yes"] * 20 + ["no"] * 80
    proba = [[0.2, 0.8]] * 100 + [[0.8, 0.2]] * 100

    result = calibration(y, proba, ["no", "yes"])

    assert result["ece"] == pytest.approx(0.0)
    assert [(p["predicted"], p["observed"], p["rows"]) for p in result["curve"]] == [
        pytest.approx((0.2, 0.2, 100)),
        pytest.approx((0.8, 0.8, 100)),
    ]


def test_certainty_that_is_right_half_the_time_is_a_calibration_error_of_one_half():
    y = np.array(["yes", "no"] * 50)
    proba = np.tile([0.0, 1.0], (100, 1))

    assert calibration(y, proba, ["no", "yes"])["ece"] == pytest.approx(0.5)


def test_multiclass_calibration_compares_the_top_class_confidence_with_its_accuracy():
    y = ["a", "b", "c", "a"]
    proba = [[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.05, 0.9], [0.9, 0.05, 0.05]]

    result = calibration(y, proba, ["a", "b", "c"])

    assert result["ece"] == pytest.approx(0.9 - 0.75)  # one bin: confidence 0.9, three of four right


def rows(n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    amount = rng.normal(100.0, 10.0, n)
    amount[:10] = np.nan
    return pd.DataFrame({"amount": amount, "plan": rng.choice(["basic", "pro", "team"], n), "label": 1})


def test_perturbations_are_seeded_small_and_leave_missing_values_and_the_input_alone():
    frame = rows()
    original = frame.copy()

    once = perturb(frame, ["amount", "plan"], seed=3, noise=0.1, swap_rate=0.2)
    again = perturb(frame, ["amount", "plan"], seed=3, noise=0.1, swap_rate=0.2)
    other = perturb(frame, ["amount", "plan"], seed=4, noise=0.1, swap_rate=0.2)

    pd.testing.assert_frame_equal(frame, original)
    pd.testing.assert_frame_equal(once, again)
    assert not once.equals(other)
    shift = (once["amount"] - frame["amount"]).dropna()
    assert shift.std() == pytest.approx(0.1 * frame["amount"].std(), rel=0.1)
    assert once["amount"].isna().sum() == 10 and (once["label"] == 1).all()
    changed = (once["plan"] != frame["plan"]).mean()
    assert 0.1 < changed < 0.2  # a fifth are swapped, a third of those to the value they had
    assert set(once["plan"]) == {"basic", "pro", "team"}


def test_fairness_gaps_compare_positive_and_true_positive_rates_across_slices():
    frame = pd.DataFrame({"plan": ["basic"] * 100 + ["pro"] * 100 + ["team"] * 10})
    y_true = [1] * 50 + [0] * 50 + [1] * 50 + [0] * 50 + [1] * 10
    # basic: every positive found; pro: half of them; team (too small to count): none.
    y_pred = [1] * 50 + [0] * 50 + [1] * 25 + [0] * 75 + [0] * 10

    [gaps] = fairness_gaps(frame, ["plan"], y_true, y_pred, positive=1).values()

    assert gaps["positive_rate"] == {"basic": 0.5, "pro": 0.25, "team": 0.0}
    assert gaps["tpr"] == {"basic": 1.0, "pro": 0.5, "team": 0.0}
    assert gaps["positive_rate_gap"] == pytest.approx(0.25) and gaps["tpr_gap"] == pytest.approx(0.5)
