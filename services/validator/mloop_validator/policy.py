"""The release gate: should a freshly trained candidate be registered next to the champion?

Every rule of the spec's promotion policy is a named check with its measured value and bound,
so a rejection says exactly which checks failed. Checks against the champion (improvements,
slice regressions) need one; on a model's first candidate they are skipped and the absolute
bounds (floors, robustness, calibration, fairness, latency, size, the clean-process load) apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mloop_common.spec import MetricGate, PromotionPolicy, metric_higher_is_better

Slices = dict[str, dict[str, dict[str, Any]]]

# Scores are floats from different runs; a tie must not fail on rounding noise.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Check:
    """One rule of the policy applied to the candidate: its name, outcome, value, bound and a sentence."""

    name: str
    passed: bool
    message: str
    value: float | None = None
    bound: float | None = None


@dataclass(frozen=True)
class Measured:
    """What was measured of the candidate besides its metrics; None where it was not measured."""

    flip_rate: float | None = None
    calibration_error: float | None = None
    # Per slice column: {"positive_rate_gap": float | None, "tpr_gap": float | None, ...}.
    fairness: dict[str, dict[str, Any]] = field(default_factory=dict)
    p99_latency_ms: float | None = None
    artifact_mb: float | None = None
    # Whether the artifact was loaded in a clean process, and what went wrong there (None: nothing).
    infra_checked: bool = False
    infra_error: str | None = None


@dataclass(frozen=True)
class Decision:
    """Register or not, why (one sentence per check), the primary-metric gain and every check."""

    register: bool
    reasons: list[str] = field(default_factory=list)
    improvement: float | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


def decide(
    metric: str,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    candidate_slices: Slices | None,
    champion_slices: Slices | None,
    policy: PromotionPolicy,
    min_rows: int = 30,
    measured: Measured | None = None,
) -> Decision:
    """Apply the promotion policy to the candidate (and the champion, measured on the same holdout)."""
    score = candidate.get(metric)
    if score is None:
        check = Check(f"metric.{metric}", False, f"The candidate has no {metric} value, so it cannot be judged.")
        return Decision(False, [check.message], None, [check])
    checks: list[Check] = []
    improvement = None
    if champion is None:
        checks.append(
            Check("champion", True, f"There is no champion yet; the candidate ({metric} {score:.4f}) is registered.")
        )
    elif champion.get(metric) is None:
        checks.append(
            Check(
                "champion",
                True,
                f"The champion has no {metric} value to compare with; the candidate ({metric} {score:.4f}) "
                "is registered.",
            )
        )
    else:
        gates = {metric: MetricGate(min_improvement=policy.min_improvement), **policy.improvements}
        for name, gate in gates.items():
            check, gain = _improvement(name, gate, candidate, champion)
            checks.append(check)
            if name == metric:
                improvement = gain
        checks.extend(_slice_regressions(metric, candidate_slices or {}, champion_slices or {}, policy, min_rows))
    checks.extend(_floors(candidate, policy))
    checks.extend(_measured_checks(measured or Measured(), policy))
    return Decision(all(c.passed for c in checks), [c.message for c in checks], improvement, checks)


def _improvement(
    metric: str, gate: MetricGate, candidate: dict[str, float], champion: dict[str, float]
) -> tuple[Check, float | None]:
    """The candidate's gain over the champion on ``metric`` against the gate, in the metric's direction."""
    name = f"improvement.{metric}"
    score, baseline = candidate.get(metric), champion.get(metric)
    if baseline is None:
        return Check(name, True, f"The champion has no {metric} value to compare with."), None
    if score is None:
        return Check(name, False, f"The candidate has no {metric} value to compare with the champion's."), None
    gain = score - baseline if metric_higher_is_better(metric) else baseline - score
    required = gate.min_improvement * abs(baseline) if gate.relative else gate.min_improvement
    how = f" ({gate.min_improvement:+.2%} of the champion's)" if gate.relative else ""
    passed = gain + _TOLERANCE >= required
    verdict = "meeting" if passed else "short of"
    return (
        Check(
            name,
            passed,
            f"The candidate's {metric} is {score:.4f} against the champion's {baseline:.4f}: "
            f"an improvement of {gain:+.4f}, {verdict} the required {required:+.4f}{how}.",
            value=gain,
            bound=required,
        ),
        gain,
    )


def _floors(candidate: dict[str, float], policy: PromotionPolicy) -> list[Check]:
    checks = []
    for metric, floor in policy.floors.items():
        value = candidate.get(metric)
        higher = metric_higher_is_better(metric)
        name = f"floor.{metric}"
        if value is None:
            checks.append(Check(name, False, f"The candidate has no {metric} value to hold to its bound {floor:.4f}."))
            continue
        passed = value + _TOLERANCE >= floor if higher else value - _TOLERANCE <= floor
        side = "at least" if higher else "at most"
        outcome = "meets" if passed else "misses"
        checks.append(
            Check(
                name,
                passed,
                f"The candidate's {metric} is {value:.4f}; it must be {side} {floor:.4f} and {outcome} it.",
                value=value,
                bound=floor,
            )
        )
    return checks


def _slice_regressions(
    metric: str, candidate_slices: Slices, champion_slices: Slices, policy: PromotionPolicy, min_rows: int
) -> list[Check]:
    """A failed check per slice where the candidate is worse than the champion beyond the bound, else one pass."""
    higher_is_better = metric_higher_is_better(metric)
    failed = []
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
                failed.append(
                    Check(
                        f"slice.{column}={value}",
                        False,
                        f"On slice {column}={value} ({mine['rows']} rows) the candidate's {metric} is "
                        f"{mine['value']:.4f} against the champion's {other['value']:.4f}: worse by "
                        f"{worse_by:.4f}, more than the allowed {policy.max_slice_regression:.4f}.",
                        value=worse_by,
                        bound=policy.max_slice_regression,
                    )
                )
    if failed or not policy.slices:
        return failed
    return [
        Check(
            "slices",
            True,
            f"No slice of {', '.join(policy.slices)} regresses by more than {policy.max_slice_regression:.4f}.",
            bound=policy.max_slice_regression,
        )
    ]


def _bounded(name: str, value: float | None, bound: float | None, sentence: str) -> list[Check]:
    """A check that ``value`` is at most ``bound``; none when the policy sets no bound or nothing was measured."""
    if bound is None or value is None:
        return []
    passed = value <= bound + _TOLERANCE
    outcome = "within" if passed else "over"
    return [Check(name, passed, f"{sentence} {value:.4g}, {outcome} the allowed {bound:.4g}.", value, bound)]


def _measured_checks(measured: Measured, policy: PromotionPolicy) -> list[Check]:
    checks = [
        *_bounded(
            "flip_rate",
            measured.flip_rate,
            policy.max_flip_rate,
            "Under small perturbations the share of predictions that flip is",
        ),
        *_bounded(
            "calibration",
            measured.calibration_error,
            policy.max_calibration_error,
            "The expected calibration error of the predicted probabilities is",
        ),
        *_bounded(
            "latency_p99",
            measured.p99_latency_ms,
            policy.max_p99_latency_ms,
            "The 99th percentile latency of a single-row prediction (ms) is",
        ),
        *_bounded("artifact_size", measured.artifact_mb, policy.max_artifact_mb, "The artifact's size (MB) is"),
    ]
    for column, gaps in sorted(measured.fairness.items()):
        for gap in ("positive_rate_gap", "tpr_gap"):
            what = "positive-prediction rate" if gap == "positive_rate_gap" else "true-positive rate"
            checks.extend(
                _bounded(
                    f"fairness.{column}.{gap}",
                    gaps.get(gap),
                    policy.max_fairness_gap,
                    f"The largest gap in {what} across the slices of {column} is",
                )
            )
    if measured.infra_checked and measured.infra_error is None:
        checks.append(Check("infra", True, "The artifact loads and predicts alike in a clean process."))
    elif measured.infra_error is not None:
        checks.append(
            Check(
                "infra",
                False,
                f"The artifact does not load and predict alike in a clean process: {measured.infra_error}",
            )
        )
    return checks


def decide_pinned(
    where: str,
    metric: str,
    candidate: dict[str, float],
    champion: dict[str, float] | None,
    candidate_slices: Slices | None,
    champion_slices: Slices | None,
    policy: PromotionPolicy,
    *,
    champion_problem: str | None = None,
) -> list[Check]:
    """The policy's comparisons (improvements, slice regressions) and floors, measured on the pinned evaluation set.

    They come on top of the holdout's checks: a candidate must pass both (docs/api.md). ``where`` names the set in
    the sentences; ``champion_problem`` says why a champion could not be measured on it (then its comparisons there
    are skipped and stay on the holdout).
    """
    judged = decide(metric, candidate, champion, candidate_slices, champion_slices, policy)
    checks = []
    for check in judged.checks:
        if check.name == "champion" and champion_problem is not None:
            check = Check("champion", True, f"The champion cannot be measured on it ({champion_problem}).")
        elif check.name == "champion":
            continue  # the holdout's checks already say there is no champion
        checks.append(
            Check(f"pinned.{check.name}", check.passed, f"On {where}: {check.message}", check.value, check.bound)
        )
    return checks
