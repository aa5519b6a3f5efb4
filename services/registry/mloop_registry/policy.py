"""Registry policy: what state a new version starts in and whether it goes straight to production."""

from __future__ import annotations

from mloop_common.spec import PromotionPolicy


def initial_status(policy: PromotionPolicy) -> str:
    """A version that needs a human starts as pending_approval; others are registered."""
    return "pending_approval" if policy.require_approval else "registered"


def may_promote(status: str, policy: PromotionPolicy) -> bool:
    """Auto-promote only registered versions that need neither an approver nor a canary phase."""
    return status == "registered" and not policy.require_approval and policy.canary_percent == 0
