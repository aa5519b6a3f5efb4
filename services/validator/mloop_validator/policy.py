"""The promotion policy: should a freshly trained candidate be registered next to the champion?"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mloop_common.spec import PromotionPolicy, metric_higher_is_better

Slices = dict[str, dict[str, dict[str, Any]]]

# Scores are floats from different runs; a tie must not fail on rounding noise.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Decision:
    """Register or not, why (human-readable sentences), and the primary-metric gain over the champion."""

    register: bool
    reasons: list[str] = field(default_factory=list)
    improvement: float | None = None


def decide(
    metric: str,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    candidate_slices: Slices | None,
    champion_slices: Slices | None,
    policy: PromotionPolicy,
    min_rows: int = 30,
) -> Decision:
    """Apply the promotion policy to candidate and champion metrics measured on the same holdout."""
    higher_is_better = metric_higher_is_better(metric)
    score = candidate.get(metric)
    if score is None:
        return Decision(False, [f"The candidate has no {metric} value, so it cannot be judged."])
    if champion is None:
        return Decision(True, [f"There is no champion yet; the candidate ({metric} {score:.4f}) is registered."])
    baseline = champion.get(metric)
    if baseline is None:
        return Decision(
            True,
            [
                f"The champion has no {metric} value to compare with; the candidate ({metric} {score:.4f}) "
                "is registered."
            ],
        )

    improvement = score - baseline if higher_is_better else baseline - score
    reasons: list[str] = []
    register = True
    if improvement + _TOLERANCE >= policy.min_improvement:
        reasons.append(
            f"The candidate's {metric} is {score:.4f} against the champion's {baseline:.4f}: "
            f"an improvement of {improvement:+.4f}, meeting the required {policy.min_improvement:+.4f}."
        )
    else:
        register = False
        reasons.append(
            f"The candidate's {metric} is {score:.4f} against the champion's {baseline:.4f}: "
            f"an improvement of {improvement:+.4f}, short of the required {policy.min_improvement:+.4f}."
        )

    regressions = _slice_regressions(
        metric, higher_is_better, candidate_slices or {}, champion_slices or {}, policy, min_rows
    )
    if regressions:
        register = False
        reasons.extend(regressions)
    elif policy.slices:
        reasons.append(
            f"No slice of {', '.join(policy.slices)} regresses by more than {policy.max_slice_regression:.4f}."
        )
    return Decision(register, reasons, improvement)


def _slice_regressions(
    metric: str,
    higher_is_better: bool,
    candidate_slices: Slices,
    champion_slices: Slices,
    policy: PromotionPolicy,
    min_rows: int,
) -> list[str]:
    """One sentence per slice where the candidate is worse than the champion beyond the bound."""
    reasons = []
    for column in policy.slices:
        ours, theirs = candidate_slices.get(column, {}), champion_slices.get(column, {})
        for value in sorted(set(ours) & set(theirs)):
            mine, other = ours[value], theirs[value]
            if mine.get("value") is None or other.get("value") is None:
                continue
            if min(mine.get("rows", 0), other.get("rows", 0)) < min_rows:
                continue
            worse_by = other["value"] - mine["value"] if higher_is_better else mine["value"] - other["value"]
            if worse_by > policy.max_slice_regression + _TOLERANCE:
                reasons.append(
                    f"On slice {column}={value} ({mine['rows']} rows) the candidate's {metric} is "
                    f"{mine['value']:.4f} against the champion's {other['value']:.4f}: worse by "
                    f"{worse_by:.4f}, more than the allowed {policy.max_slice_regression:.4f}."
                )
    return reasons
