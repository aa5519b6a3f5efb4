import pytest

from mloop_common.contracts import CHALLENGER, PRODUCTION
from mloop_common.errors import Conflict, InvalidInput
from mloop_common.events import CANARY, SHADOW
from mloop_common.spec import PromotionPolicy
from mloop_registry.policy import (
    canary_share,
    check_alias_name,
    check_clearable,
    governing_policy,
    initial_status,
    is_label,
    may_hold_alias,
    may_promote,
    move_reason,
    release_alias,
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
        (False, 0.5, True),
        (False, 10, True),
        (False, 100, True),
        (True, 0, False),
        (True, 10, False),
    ],
)
def test_new_version_is_auto_released_unless_it_waits_for_an_approver(require_approval, canary_percent, promoted):
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


@pytest.mark.parametrize("alias", [PRODUCTION, CANARY, SHADOW, CHALLENGER, "staging", "eu-2026", "a", "x" * 63])
def test_the_serving_aliases_and_lower_case_labels_are_aliases(alias):
    check_alias_name(alias)
    assert is_label(alias) == (alias not in (PRODUCTION, CANARY, SHADOW, CHALLENGER))


@pytest.mark.parametrize("alias", ["Staging", "2026", "-x", "x" * 64, "a b", "a/b", "a.b", "ünicode", ""])
def test_anything_else_is_refused_naming_the_field(alias):
    with pytest.raises(InvalidInput, match="a label of 1-63 lower-case") as refused:
        check_alias_name(alias)
    assert refused.value.field == "alias"


@pytest.mark.parametrize(
    "rules, champion, alias",
    [
        (PromotionPolicy(), 1, PRODUCTION),
        (PromotionPolicy(canary_percent=20), 1, CANARY),
        (PromotionPolicy(shadow=True), 1, SHADOW),
        (PromotionPolicy(canary_percent=20), None, PRODUCTION),
        (PromotionPolicy(shadow=True), None, PRODUCTION),
    ],
)
def test_a_released_version_goes_to_its_rollout_alias_beside_a_champion_else_to_production(rules, champion, alias):
    assert release_alias(rules, champion) == alias


def test_a_canary_takes_its_specs_share_and_other_aliases_none():
    assert canary_share(CANARY, PromotionPolicy(canary_percent=20)) == 20
    assert canary_share(SHADOW, PromotionPolicy(canary_percent=20)) == 0
    with pytest.raises(Conflict, match="canary_percent"):
        canary_share(CANARY, PromotionPolicy())


def test_only_rollout_aliases_can_be_cleared():
    check_clearable(CANARY)
    with pytest.raises(InvalidInput) as refused:
        check_clearable(PRODUCTION)
    assert refused.value.field == "alias"


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
