import pytest

from mloop_common.contracts import CHALLENGER, PRODUCTION
from mloop_common.errors import InvalidInput
from mloop_common.spec import PromotionPolicy
from mloop_registry.policy import (
    check_alias_name,
    governing_policy,
    initial_status,
    may_hold_alias,
    may_promote,
    move_reason,
)


def policy(require_approval=False, canary_percent=0):
    return PromotionPolicy(require_approval=require_approval, canary_percent=canary_percent)


def test_version_needing_approval_starts_pending():
    assert initial_status(policy(require_approval=True)) == "pending_approval"
    assert initial_status(policy(require_approval=True, canary_percent=10)) == "pending_approval"


def test_version_without_approval_starts_registered():
    assert initial_status(policy()) == "registered"
    assert initial_status(policy(canary_percent=25)) == "registered"


def test_default_policy_promotes_a_registered_version_straight_away():
    default = PromotionPolicy()

    assert may_promote(initial_status(default), default)


@pytest.mark.parametrize(
    "require_approval, canary_percent, promoted",
    [
        (False, 0, True),
        (False, 0.5, False),
        (False, 10, False),
        (False, 100, False),
        (True, 0, False),
        (True, 10, False),
    ],
)
def test_new_version_is_auto_promoted_only_without_approval_or_canary(require_approval, canary_percent, promoted):
    rules = policy(require_approval, canary_percent)

    assert may_promote(initial_status(rules), rules) is promoted


@pytest.mark.parametrize("status", ["pending_approval", "approved", "rejected"])
def test_version_that_is_not_registered_is_never_auto_promoted(status):
    assert may_promote(status, policy()) is False


def test_approval_requirement_blocks_promotion_even_of_a_registered_version():
    assert may_promote("registered", policy(require_approval=True)) is False


@pytest.mark.parametrize(
    "status, allowed", [("registered", True), ("approved", True), ("pending_approval", False), ("rejected", False)]
)
def test_only_versions_not_waiting_for_or_refused_by_an_approver_may_hold_an_alias(status, allowed):
    assert may_hold_alias(status) is allowed


@pytest.mark.parametrize(
    "current, target, reason", [(None, 1, "manual"), (1, 2, "manual"), (3, 2, "rollback"), (2, 2, "manual")]
)
def test_moving_an_alias_back_to_an_older_version_is_a_rollback(current, target, reason):
    assert move_reason(current, target) == reason


def test_only_production_and_challenger_are_aliases():
    check_alias_name(PRODUCTION)
    check_alias_name(CHALLENGER)
    with pytest.raises(InvalidInput, match="'production' or 'challenger'"):
        check_alias_name("staging")


@pytest.mark.parametrize(
    "run, current, expected",
    [
        ((False, 0), (False, 0), (False, 0)),
        ((False, 0), (True, 0), (True, 0)),
        ((True, 0), (False, 0), (True, 0)),
        ((False, 20), (False, 5), (False, 20)),
        ((False, 0), (False, 5), (False, 5)),
    ],
)
def test_the_governing_policy_is_the_stricter_of_the_runs_and_the_current_spec(run, current, expected):
    governing = governing_policy(policy(*run), policy(*current))

    assert (governing.require_approval, governing.canary_percent) == expected
