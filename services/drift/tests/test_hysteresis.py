"""Hysteresis of retrain alarms: the pure rules, window by window."""

from __future__ import annotations

import math

import pytest

from mloop_drift.cooldown import CooldownState
from mloop_drift.detector import ColumnReport
from mloop_drift.hysteresis import (
    PERFORMANCE,
    Hysteresis,
    Latch,
    Reading,
    column_level,
    performance_level,
)
from mloop_drift.performance import Performance
from mloop_drift.stats import TestResult


def alarms(levels: list[float | None], clear_fraction: float = 0.8, basis: str | None = "actual") -> list[int]:
    """The windows (1-based) that raise an alarm when one signal reads ``levels``: alarm at 1.0 or above."""
    policy = Hysteresis(clear_fraction)
    latched: dict[str, Latch] = {}
    raised = []
    for index, level in enumerate(levels, start=1):
        reading = Reading(level, basis)
        latched = policy.observe(latched, index, {PERFORMANCE: reading})
        if level is not None and level >= 1.0 and PERFORMANCE not in latched:
            raised.append(index)
            latched = policy.latch(latched, index, {PERFORMANCE: reading})
    return raised


def test_a_signal_oscillating_around_the_threshold_alarms_once() -> None:
    assert alarms([0.2, 1.1, 0.95, 1.05, 0.9, 1.2, 0.85, 1.01]) == [2]


def test_falling_below_the_clear_level_rearms_and_rising_again_alarms_again() -> None:
    assert alarms([1.3, 1.1, 0.79, 1.02, 0.5, 0.6, 1.4]) == [1, 4, 7]


def test_the_clear_level_itself_does_not_clear() -> None:
    assert alarms([1.0, 0.8, 1.0, 0.7999, 1.0]) == [1, 5]


def test_the_clear_fraction_is_configurable() -> None:
    assert alarms([1.2, 0.6, 1.2], clear_fraction=0.5) == [1]
    assert alarms([1.2, 0.99, 1.2], clear_fraction=1.0) == [1, 3]


def test_a_window_that_could_not_measure_the_signal_clears_nothing() -> None:
    assert alarms([1.2, None, None, 1.3]) == [1]


def test_a_latch_is_released_only_by_a_later_window() -> None:
    policy = Hysteresis()
    latched = {PERFORMANCE: Latch(window=5, basis="actual")}

    assert policy.observe(latched, 5, {PERFORMANCE: Reading(0.1, "actual")}) == latched  # its own window revised
    assert policy.observe(latched, 4, {PERFORMANCE: Reading(0.1, "actual")}) == latched  # an older one revised
    assert policy.observe(latched, 6, {PERFORMANCE: Reading(0.1, "actual")}) == {}


def test_performance_latched_on_labels_is_not_cleared_by_an_estimate() -> None:
    policy = Hysteresis()
    on_labels = {PERFORMANCE: Latch(window=1, basis="actual")}
    on_estimate = {PERFORMANCE: Latch(window=1, basis="estimated")}

    assert policy.observe(on_labels, 2, {PERFORMANCE: Reading(0.0, "estimated")}) == on_labels
    assert policy.observe(on_estimate, 2, {PERFORMANCE: Reading(0.0, "estimated")}) == {}
    assert policy.observe(on_estimate, 2, {PERFORMANCE: Reading(0.0, "actual")}) == {}


def test_signals_are_latched_and_released_independently() -> None:
    policy = Hysteresis()
    latched = policy.latch({}, 3, {"feature:x1": Reading(2.0), "feature:x2": Reading(1.5)})

    after = policy.observe(latched, 4, {"feature:x1": Reading(0.3), "feature:x2": Reading(0.9)})

    assert after == {"feature:x2": Latch(window=3)}


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, True])
def test_the_clear_fraction_must_be_in_zero_one(fraction: float) -> None:
    with pytest.raises(ValueError):
        Hysteresis(fraction)


def test_a_features_level_is_its_largest_statistic_over_its_threshold() -> None:
    column = ColumnReport(
        kind="numeric",
        tests=(
            TestResult("wasserstein", 0.05, 0.1, False),
            TestResult("psi", 0.3, 0.2, True),
            TestResult("ks", None, 0.1, False),
        ),
        drifted=True,
    )

    assert column_level(column) == pytest.approx(1.5)
    assert column_level(ColumnReport(kind="numeric", tests=(), drifted=False)) is None


def judged(metric: str, value: float, limit: float, baseline: float) -> Performance:
    return Performance(
        "classification",
        100,
        100,
        50,
        baseline={metric: baseline},
        basis="actual",
        metric=metric,
        value=value,
        limit=limit,
    )


def test_performance_level_is_the_drop_as_a_share_of_the_tolerance() -> None:
    assert performance_level(judged("accuracy", 0.95, 0.90, 0.95)) == pytest.approx(0.0)
    assert performance_level(judged("accuracy", 0.91, 0.90, 0.95)) == pytest.approx(0.8)
    assert performance_level(judged("accuracy", 0.85, 0.90, 0.95)) == pytest.approx(2.0)
    assert performance_level(judged("accuracy", 0.99, 0.90, 0.95)) < 0  # better than the baseline
    # errors: rmse 10 tolerated up to 12 (a 20 % rise)
    assert performance_level(judged("rmse", 11.0, 12.0, 10.0)) == pytest.approx(0.5)
    assert performance_level(judged("rmse", 13.0, 12.0, 10.0)) == pytest.approx(1.5)


def test_performance_not_judged_has_no_level_and_a_zero_tolerance_is_all_or_nothing() -> None:
    assert performance_level(Performance("regression", 100, 0, 50)) is None
    assert performance_level(judged("accuracy", 0.94, 0.95, 0.95)) == math.inf
    assert performance_level(judged("accuracy", 0.95, 0.95, 0.95)) == 0.0


def test_latches_are_kept_with_the_cooldown_state_and_old_states_still_load() -> None:
    state = CooldownState(3, 0, 3, {PERFORMANCE: Latch(3, "actual"), "feature:x1": Latch(3)})

    stored = state.to_dict()

    assert stored["latched"] == {
        PERFORMANCE: {"window": 3, "basis": "actual"},
        "feature:x1": {"window": 3, "basis": None},
    }
    assert CooldownState.from_dict(stored) == state
    assert CooldownState.from_dict({"last_emitted_window": 3}).latched == {}
    with pytest.raises(ValueError):
        CooldownState.from_dict({"latched": {PERFORMANCE: {"window": "3"}}})
