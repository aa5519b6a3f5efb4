"""Registry policy: what state a new version starts in, and when and why an alias may move."""

from __future__ import annotations

from typing import Literal

from mloop_common.contracts import ALIASES, VersionStatus
from mloop_common.errors import InvalidInput
from mloop_common.spec import PromotionPolicy

MoveReason = Literal["manual", "rollback"]


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
        }
    )


def initial_status(policy: PromotionPolicy) -> VersionStatus:
    """A version that needs a human starts as pending_approval; others are registered."""
    return "pending_approval" if policy.require_approval else "registered"


def may_promote(status: VersionStatus, policy: PromotionPolicy) -> bool:
    """Auto-promote only registered versions that need neither an approver nor a canary phase."""
    return status == "registered" and not policy.require_approval and policy.canary_percent == 0


def may_hold_alias(status: VersionStatus) -> bool:
    """A version still waiting for its approver, or turned down by one, cannot be served under an alias."""
    return status not in ("pending_approval", "rejected")


def move_reason(current: int | None, target: int) -> MoveReason:
    """Moving an alias back to an older version is a rollback; any other move is a manual promotion."""
    return "rollback" if current is not None and target < current else "manual"


def check_alias_name(alias: str) -> None:
    """Only the known aliases can be moved."""
    if alias not in ALIASES:
        raise InvalidInput(f"unknown alias {alias!r}: use {' or '.join(repr(a) for a in ALIASES)}", field="alias")
