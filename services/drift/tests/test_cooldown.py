import dataclasses

import pytest

from mloop_drift.cooldown import CooldownPolicy, CooldownState


def emitted_windows(policy: CooldownPolicy, drifts: list[bool]) -> list[int]:
    state = CooldownState()
    emitted = []
    for index, drift in enumerate(drifts):
        emit, state = policy.should_emit(state, drift, index)
        if emit:
            emitted.append(index)
    return emitted


def test_first_drift_emits_and_is_remembered() -> None:
    emit, state = CooldownPolicy(3).should_emit(CooldownState(), True, 0)

    assert emit is True
    assert state == CooldownState(last_emitted_window=0, suppressed=0)


def test_windows_without_drift_never_emit_and_leave_the_state_alone() -> None:
    state = CooldownState(last_emitted_window=2, suppressed=1)

    emit, after = CooldownPolicy(3).should_emit(state, False, 10)

    assert emit is False
    assert after == state


def test_the_next_cooldown_windows_cannot_emit_and_the_one_after_can() -> None:
    assert emitted_windows(CooldownPolicy(3), [True] * 10) == [0, 4, 8]


def test_a_flapping_signal_emits_once_per_cooldown() -> None:
    drifts = [True, False, True, True, False, True, True, True, False, True]

    assert emitted_windows(CooldownPolicy(3), drifts) == [0, 5, 9]


def test_suppressed_drifts_are_counted_until_the_next_emission() -> None:
    policy = CooldownPolicy(2)
    _, state = policy.should_emit(CooldownState(), True, 0)
    _, state = policy.should_emit(state, True, 1)
    _, state = policy.should_emit(state, True, 2)

    assert state.suppressed == 2
    emit, state = policy.should_emit(state, True, 3)
    assert emit is True and state.suppressed == 0


def test_zero_cooldown_emits_every_drifted_window() -> None:
    assert emitted_windows(CooldownPolicy(0), [True, True, False, True]) == [0, 1, 3]


def test_a_replayed_window_does_not_emit_again() -> None:
    policy = CooldownPolicy(1)
    _, state = policy.should_emit(CooldownState(), True, 7)

    assert policy.should_emit(state, True, 7)[0] is False
    assert policy.should_emit(state, True, 3)[0] is False
    assert policy.should_emit(state, True, 9)[0] is True


def test_in_cooldown_covers_exactly_the_windows_after_an_emission() -> None:
    policy = CooldownPolicy(2)
    state = CooldownState(last_emitted_window=5)

    assert [policy.in_cooldown(state, i) for i in (5, 6, 7, 8)] == [True, True, True, False]
    assert policy.in_cooldown(CooldownState(), 0) is False


def test_state_round_trips_through_a_dict() -> None:
    state = CooldownState(last_emitted_window=12, suppressed=2, last_retrain_window=10)

    assert state.to_dict() == {"last_emitted_window": 12, "suppressed": 2, "last_retrain_window": 10}
    assert CooldownState.from_dict(state.to_dict()) == state


def test_a_state_stored_before_retrain_cooldowns_existed_still_loads() -> None:
    assert CooldownState.from_dict({"last_emitted_window": 4, "suppressed": 1}) == CooldownState(4, 1, None)


def test_an_alert_does_not_hold_back_a_retrain_but_a_retrain_holds_back_both() -> None:
    policy = CooldownPolicy(cooldown_windows=3)

    alerted, state = policy.should_emit(CooldownState(), True, 1)
    escalated, state = policy.should_emit(state, True, 1, retrain=True)  # the same window, revised by its labels
    again, state = policy.should_emit(state, True, 1, retrain=True)
    alert_after, state = policy.should_emit(state, True, 3)
    retrain_after, state = policy.should_emit(state, True, 4, retrain=True)

    assert (alerted, escalated, again, alert_after, retrain_after) == (True, True, False, False, False)
    assert state == CooldownState(last_emitted_window=1, suppressed=3, last_retrain_window=1)
    assert policy.should_emit(state, True, 5, retrain=True)[0] is True


@pytest.mark.parametrize("stored", [None, {}])
def test_nothing_stored_is_the_initial_state(stored: dict | None) -> None:
    assert CooldownState.from_dict(stored) == CooldownState()


@pytest.mark.parametrize(
    "stored",
    [
        {"last_emitted_window": "3"},
        {"last_emitted_window": 1.5},
        {"suppressed": -1},
        {"suppressed": True},
        {"last_retrain_window": "2"},
    ],
)
def test_a_corrupt_stored_state_is_rejected(stored: dict) -> None:
    with pytest.raises(ValueError):
        CooldownState.from_dict(stored)


@pytest.mark.parametrize("windows", [-1, 1.5, True])
def test_cooldown_windows_must_be_a_non_negative_integer(windows: object) -> None:
    with pytest.raises(ValueError):
        CooldownPolicy(windows)  # type: ignore[arg-type]


def test_state_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CooldownState().suppressed = 3  # type: ignore[misc]
