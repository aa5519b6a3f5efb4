"""Registry policy: what state a new version starts in, and when and why an alias may move."""

from __future__ import annotations

import re
from typing import Literal

from mloop_common.contracts import VersionStatus
from mloop_common.errors import Conflict, InvalidInput
from mloop_common.events import CANARY, CHALLENGER, PRODUCTION, SHADOW
from mloop_common.spec import PromotionPolicy

MoveReason = Literal["manual", "rollback"]
# Aliases serving hosts beside production: canary takes a share of traffic, shadow scores a copy of every
# request, challenger answers only requests that address it.
ROLLOUT_ALIASES: tuple[str, ...] = (CANARY, SHADOW, CHALLENGER)
ALIASES: tuple[str, ...] = (PRODUCTION, *ROLLOUT_ALIASES)


def governing_policy(run: PromotionPolicy, current: PromotionPolicy) -> PromotionPolicy:
    """The release rules a new version is held to: the stricter of its run's spec and the model's current spec.

    Taking the current spec closes two ways around an approver: a registration naming an older spec
    version that needed none, and a run that started before the spec began to require one. Keeping
    the run's own rules means dropping approval from the spec does not wave through a candidate
    that was trained (and judged) under a spec demanding it.
    """
    return current.model_copy(
        update={
            "require_approval": run.require_approval or current.require_approval,
            "canary_percent": max(run.canary_percent, current.canary_percent),
            "shadow": run.shadow or current.shadow,
        }
    )


def initial_status(policy: PromotionPolicy) -> VersionStatus:
    """A version that needs a human starts as pending_approval; others are registered."""
    return "pending_approval" if policy.require_approval else "registered"


def may_promote(status: VersionStatus, policy: PromotionPolicy) -> bool:
    """Auto-promote (to production, or to the rollout alias) registered versions that need no approver."""
    return status == "registered" and not policy.require_approval


def release_alias(policy: PromotionPolicy, champion: int | None) -> str:
    """Where a version cleared for release goes: its rollout alias beside a champion, else production.

    With no champion there is nothing to compare with nor to fall back on, so the first version goes
    straight to production whatever the rollout.
    """
    if champion is None:
        return PRODUCTION
    if policy.canary_percent > 0:
        return CANARY
    return SHADOW if policy.shadow else PRODUCTION


def canary_share(alias: str, policy: PromotionPolicy) -> float:
    """The traffic share a version under ``alias`` takes; a canary with no share in its spec is refused."""
    if alias != CANARY:
        return 0.0
    if policy.canary_percent <= 0:
        raise Conflict("the model's spec sets no promotion.canary_percent: a canary would take no traffic")
    return policy.canary_percent


def check_clearable(alias: str) -> None:
    """Rollout aliases and labels can be cleared; production is moved (rolled back), never removed."""
    check_alias_name(alias)
    if alias == PRODUCTION:
        raise InvalidInput("production cannot be cleared: roll back by moving it to an older version", field="alias")


def may_hold_alias(status: VersionStatus) -> bool:
    """A version still waiting for its approver, or turned down by one, cannot be served under an alias."""
    return status not in ("pending_approval", "rejected")


def move_reason(current: int | None, target: int) -> MoveReason:
    """Moving an alias back to an older version is a rollback; any other move is a manual promotion."""
    return "rollback" if current is not None and target < current else "manual"


# A label of the user's choosing ("stable", "eu-2026"): lower case, it fits the alias column (63).
_LABEL = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def check_alias_name(alias: str) -> None:
    """The serving aliases, or a label that names a version for people and tools (serving never hosts it)."""
    if alias not in ALIASES and not _LABEL.match(alias):
        raise InvalidInput(
            f"bad alias {alias!r}: one of {', '.join(ALIASES)}, or a label of 1-63 lower-case letters, digits, "
            "'-' and '_' starting with a letter",
            field="alias",
        )


def is_label(alias: str) -> bool:
    """A free-form alias: moved and cleared in the registry only, announced to nobody."""
    return alias not in ALIASES
