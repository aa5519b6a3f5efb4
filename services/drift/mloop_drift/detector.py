"""The verdict on one window of production traffic against a model version's reference profile.

Triage by evidence (docs/drift.md has the decision table and every default):

1. data_quality: the window breaks the feature contract the version was trained under: values of
   the wrong type, nulls where training had none (or a jump in the missing rate), a feature that is
   not sent at all, a feature gone constant, values outside declared ranges or categories. Retraining
   is blocked (the window is quarantined) whatever the performance says: a model retrained on a
   broken feed learns the fault. Action: investigate.
2. performance drop: performance, measured from labels once enough of the window is labelled or else
   estimated (CBPE), is worse than the baseline by more than the tolerance. Cause "performance_drop"
   when features drifted too, "concept_drift" when they did not. Action: retrain.
3. covariate_shift: enough features drifted (values outside the training range are evidence of this,
   never data quality by themselves) while performance holds or cannot be judged yet. Action:
   investigate, or retrain when the policy says so.
4. otherwise no drift.

Prediction drift is reported as evidence and decides nothing on its own.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from mloop_common.datacontract import DatasetContract
from mloop_common.profile import CategoricalProfile, FeatureKind, NumericProfile, ReferenceProfile
from mloop_common.spec import DriftPolicy, FeatureConstraint
from mloop_drift.performance import Calibration, Performance, PerformanceRules, Task, assess
from mloop_drift.stats import (
    METHODS,
    CategoryIndex,
    ChiSquare,
    DriftMethod,
    JensenShannon,
    KolmogorovSmirnov,
    PopulationStabilityIndex,
    ProfileEntry,
    Significance,
    TestResult,
    Threshold,
    UpperBound,
    Wasserstein,
    default_methods,
    fit_method,
    present_mask,
)
from mloop_drift.window import CategoricalColumn, Column, NumericColumn, Window, categorical_column, numeric_column

Cause = Literal["data_quality", "performance_drop", "concept_drift", "covariate_shift"]
Action = Literal["retrain", "investigate"]

# Data-quality checks (violations of the feature contract).
WRONG_TYPE = "wrong_type"
UNEXPECTED_NULLS = "unexpected_nulls"
MISSING_RATE_JUMP = "missing_rate_jump"
SCHEMA_MISMATCH = "schema_mismatch"
GONE_CONSTANT = "gone_constant"
OUTSIDE_DECLARED_RANGE = "outside_declared_range"
UNDECLARED_CATEGORY = "undeclared_category"


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds for the window verdict; the defaults are the documented policy (docs/drift.md)."""

    drift_share_threshold: float = 0.3
    # Share of a window's values that may break the contract before it is a data-quality problem.
    violation_share: float = 0.01
    missing_rate_jump: float = 0.1
    # A feature counts as gone constant when a window of at least this many present values holds one
    # value, and the reference makes that less likely than `constant_probability`.
    constant_min_rows: int = 30
    constant_probability: float = 1e-6
    # ... and only a feature with at least this many distinct values in training: one with few levels
    # (a flag, a weekday, a month, a season, a plan) holds one of them for a while in time-ordered
    # traffic (an off-season, a summer), which is the data, not a broken feed.
    constant_min_levels: int = 20
    retrain_on_covariate_shift: bool = False
    performance: PerformanceRules = PerformanceRules()
    numeric_methods: tuple[str, ...] | None = None
    categorical_methods: tuple[str, ...] | None = None
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)
    constraints: Mapping[str, FeatureConstraint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, names in (("numeric", self.numeric_methods), ("categorical", self.categorical_methods)):
            for name in names or ():
                if name not in METHODS or METHODS[name].kind != kind:
                    raise ValueError(f"{name!r} is not a registered {kind} drift method")
        if not 0 < self.drift_share_threshold <= 1:
            raise ValueError("drift_share_threshold must be in (0, 1]")

    @classmethod
    def from_policy(
        cls, policy: DriftPolicy, metric: str | None = None, contract: DatasetContract | None = None
    ) -> DriftConfig:
        """The configuration a model spec's drift policy asks for (``metric``: the spec's primary metric),
        with the bounds the training dataset's publisher declared (``contract``) under the spec's own."""
        thresholds: dict[str, Threshold] = {}
        for name, bound in policy.thresholds.items():
            default = METHODS[name].default_threshold
            thresholds[name] = (
                Significance(alpha=default.alpha, min_effect=bound)
                if isinstance(default, Significance)
                else UpperBound(bound)
            )
        return cls(
            drift_share_threshold=policy.drift_share,
            retrain_on_covariate_shift=policy.retrain_on_covariate_shift,
            performance=PerformanceRules(
                min_label_coverage=policy.min_label_coverage,
                min_labels=policy.min_labels,
                max_metric_drop=policy.max_metric_drop,
                max_error_increase=policy.max_error_increase,
                metric=metric,
            ),
            numeric_methods=tuple(policy.numeric_tests) if policy.numeric_tests else None,
            categorical_methods=tuple(policy.categorical_tests) if policy.categorical_tests else None,
            thresholds=thresholds,
            constraints=merged_constraints(declared_constraints(contract), policy.constraints),
        )

    def min_drifted_features(self, n_features: int) -> int:
        """How many drifted features make a covariate shift."""
        return max(1, math.ceil(self.drift_share_threshold * n_features - 1e-9))

    def methods_for(self, kind: FeatureKind, n: int, categories: int) -> tuple[str, ...]:
        """Configured tests for a column type, or the defaults for its window size."""
        chosen = self.numeric_methods if kind == "numeric" else self.categorical_methods
        return chosen or default_methods(kind, n, categories=categories)


@dataclass(frozen=True)
class DataQuality:
    """Measurements of one feature in one window; `flags` names the contract checks that failed.

    `out_of_range_share` (outside the training range) and `unseen_share` (categories training never
    had, beyond its own "__other__" share) are covariate-shift evidence, not flags.
    """

    missing_rate: float
    reference_missing_rate: float
    absent_share: float = 0.0
    wrong_type_share: float | None = None
    out_of_range_share: float | None = None
    unseen_share: float | None = None
    outside_declared_share: float | None = None
    distinct_values: int | None = None  # numeric features: 0, 1, or 2 meaning "more than one"
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "missing_rate": self.missing_rate,
            "reference_missing_rate": self.reference_missing_rate,
            "absent_share": self.absent_share,
            "wrong_type_share": self.wrong_type_share,
            "out_of_range_share": self.out_of_range_share,
            "unseen_share": self.unseen_share,
            "outside_declared_share": self.outside_declared_share,
            "distinct_values": self.distinct_values,
            "flags": list(self.flags),
        }


@dataclass(frozen=True)
class ColumnReport:
    """Drift tests of one column (a feature or the prediction) and, for features, its data quality."""

    kind: FeatureKind
    tests: tuple[TestResult, ...]
    drifted: bool
    data_quality: DataQuality | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        out: dict[str, Any] = {
            "kind": self.kind,
            "drifted": self.drifted,
            "tests": [t.to_dict() for t in self.tests],
        }
        if self.data_quality is not None:
            out["data_quality"] = self.data_quality.to_dict()
        return out


@dataclass(frozen=True)
class DataQualityIssue:
    """One failed contract check: what was measured, and the bound it broke."""

    feature: str
    check: str
    value: float
    threshold: float
    reference: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "feature": self.feature,
            "check": self.check,
            "value": self.value,
            "threshold": self.threshold,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class Verdict:
    """The decision-table outcome: the cause, the action, and whether retraining is blocked."""

    cause: Cause | None
    action: Action | None
    quarantined: bool = False

    @property
    def drift_detected(self) -> bool:
        """Whether anything calls for attention."""
        return self.cause is not None


def triage(
    *,
    data_quality_issues: int,
    drifted_features: int,
    min_drifted_features: int,
    performance_degraded: bool,
    retrain_on_covariate_shift: bool = False,
) -> Verdict:
    """The decision table: evidence in, cause and action out (first matching row wins)."""
    if data_quality_issues:
        return Verdict("data_quality", "investigate", quarantined=True)
    shifted = drifted_features >= min_drifted_features and drifted_features > 0
    if performance_degraded:
        return Verdict("performance_drop" if shifted else "concept_drift", "retrain")
    if shifted:
        return Verdict("covariate_shift", "retrain" if retrain_on_covariate_shift else "investigate")
    return Verdict(None, None)


@dataclass(frozen=True)
class DriftReport:
    """Everything decided about one window, with its evidence."""

    n_rows: int
    features: Mapping[str, ColumnReport]
    prediction: ColumnReport | None
    performance: Performance
    drifted_features: tuple[str, ...]
    share_drifted: float
    min_drifted_features: int
    data_quality_issues: tuple[DataQualityIssue, ...]
    verdict: Verdict
    summary: str

    @property
    def cause(self) -> Cause | None:
        """The likely cause, or None when nothing drifted."""
        return self.verdict.cause

    @property
    def recommended_action(self) -> Action | None:
        """retrain, investigate or None."""
        return self.verdict.action

    @property
    def drift_detected(self) -> bool:
        """Whether anything calls for attention."""
        return self.verdict.drift_detected

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (no NaN, no numpy scalars)."""
        return {
            "n_rows": self.n_rows,
            "features": {name: report.to_dict() for name, report in self.features.items()},
            "prediction": self.prediction.to_dict() if self.prediction else None,
            "performance": self.performance.to_dict(),
            "drifted_features": list(self.drifted_features),
            "share_drifted": self.share_drifted,
            "min_drifted_features": self.min_drifted_features,
            "data_quality_issues": [issue.to_dict() for issue in self.data_quality_issues],
            "cause": self.cause,
            "drift_detected": self.drift_detected,
            "recommended_action": self.recommended_action,
            "quarantined": self.verdict.quarantined,
            "summary": self.summary,
        }


def evaluate_window(
    profile: ReferenceProfile,
    rows: Sequence[Mapping[str, Any]],
    predictions: Sequence[Any],
    labels: Sequence[Any] | None = None,
    probabilities: Sequence[Sequence[float] | None] | None = None,
    task: Task | None = None,
    metric_baseline: Mapping[str, float] | None = None,
    config: DriftConfig | None = None,
    label_delays: Sequence[float | None] | None = None,
) -> DriftReport:
    """`evaluate` on rows of JSON objects (turned into columns once)."""
    if not rows:
        raise ValueError("cannot evaluate an empty window: it has no rows")
    kinds = {name: entry.kind for name, entry in profile.features.items()}
    window = Window.from_rows(kinds, rows, predictions, labels, probabilities, label_delays)
    return evaluate(profile, window, task, metric_baseline, config)


def evaluate(
    profile: ReferenceProfile,
    window: Window,
    task: Task | None = None,
    metric_baseline: Mapping[str, float] | None = None,
    config: DriftConfig | None = None,
    calibration: Calibration | None = None,
) -> DriftReport:
    """Compare one window (columns of features, predictions, labels, probabilities) with the reference profile.

    `task` defaults to what the profile's prediction entry implies (categorical: classification,
    numeric: regression). `calibration` defaults to one fitted on the profile's evaluation set;
    pass one in to fit it once per model version.
    """
    config = config or DriftConfig()
    if window.n == 0:
        raise ValueError("cannot evaluate an empty window: it has no rows")
    prediction_entry = profile.prediction
    needed = window.labels is not None or window.probabilities is not None
    task = _resolve_task(task, prediction_entry, needed)

    def feature_report(name: str) -> ColumnReport:
        entry = profile.features[name]
        column = window.features.get(name)
        if column is None:
            column = _absent_column(entry.kind, window.n)
        return _column(entry, column, config, constraint=config.constraints.get(name))

    names = list(profile.features)
    reports = dict(zip(names, _map_columns(feature_report, names, window.n), strict=True))
    issues: list[DataQualityIssue] = []
    for name, report in reports.items():
        issues.extend(_issues(name, report.data_quality, config))

    prediction = None
    if prediction_entry is not None:
        prediction_column = (
            categorical_column(window.predictions)
            if prediction_entry.kind == "categorical"
            else numeric_column(window.predictions)
        )
        prediction = _column(prediction_entry, prediction_column, config, constraint=None, with_quality=False)
    if calibration is None and task == "classification" and profile.evaluation is not None:
        calibration = Calibration.fit(profile.evaluation)
    performance = assess(
        task,
        window.predictions,
        window.labels,
        window.probabilities if task == "classification" else None,
        metric_baseline or {},
        config.performance,
        calibration,
        window.label_delays,
        # The baseline was measured on the held-out rows the profile keeps (classifiers); else taken as exact.
        baseline_rows=len(profile.evaluation.labels) if profile.evaluation is not None else None,
    )

    drifted = tuple(name for name, report in reports.items() if report.drifted)
    share = len(drifted) / len(reports) if reports else 0.0
    min_drifted = config.min_drifted_features(len(reports))
    verdict = triage(
        data_quality_issues=len(issues),
        drifted_features=len(drifted),
        min_drifted_features=min_drifted,
        performance_degraded=performance.degraded,
        retrain_on_covariate_shift=config.retrain_on_covariate_shift,
    )
    summary = _summary(verdict, reports, drifted, issues, prediction, performance)
    return DriftReport(
        n_rows=window.n,
        features=reports,
        prediction=prediction,
        performance=performance,
        drifted_features=drifted,
        share_drifted=share,
        min_drifted_features=min_drifted,
        data_quality_issues=tuple(issues),
        verdict=verdict,
        summary=summary,
    )


# Below this many values (rows x features) handing columns to threads costs more than it saves.
PARALLEL_MIN_VALUES = 200_000
_column_pool: ThreadPoolExecutor | None = None


def _map_columns(work: Callable[[str], ColumnReport], names: list[str], rows: int) -> list[ColumnReport]:
    """Each feature's report, in order; large windows on several cores (numpy's sorts and sums release the GIL)."""
    global _column_pool
    workers = min(4, os.cpu_count() or 1)
    if workers < 2 or len(names) < 2 or rows * len(names) < PARALLEL_MIN_VALUES:
        return [work(name) for name in names]
    if _column_pool is None:
        _column_pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="drift-columns")
    return list(_column_pool.map(work, names))


_FITTED_MAX = 4096
_fitted_methods: OrderedDict[tuple[int, str, Threshold | None], tuple[ProfileEntry, DriftMethod]] = OrderedDict()
_fitted_lock = threading.Lock()


def _fitted(name: str, entry: ProfileEntry, threshold: Threshold | None) -> DriftMethod:
    """The method fitted on this profile entry, fitted once: every window of a model version is measured
    against the same entry, and fitting (parsing and sorting the reference sample) is a share of the work."""
    key = (id(entry), name, threshold)
    with _fitted_lock:
        hit = _fitted_methods.get(key)
        if hit is not None and hit[0] is entry:  # the id of an entry since freed may have been reused
            _fitted_methods.move_to_end(key)
            return hit[1]
    method = fit_method(name, entry, threshold)
    with _fitted_lock:
        _fitted_methods[key] = (entry, method)  # holding the entry keeps its id from being reused
        if len(_fitted_methods) > _FITTED_MAX:
            _fitted_methods.popitem(last=False)
    return method


def _absent_column(kind: FeatureKind, n: int) -> Column:
    if kind == "numeric":
        return NumericColumn(np.zeros(0), n, n, 0, absent=n)
    return CategoricalColumn(np.full(n, None, dtype=object), n, n, absent=n)


def _resolve_task(task: Task | None, prediction_entry: ProfileEntry | None, needed: bool) -> Task | None:
    if task is not None:
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        return task
    if prediction_entry is not None:
        return "classification" if prediction_entry.kind == "categorical" else "regression"
    if needed:
        raise ValueError("task is required when labels or probabilities are given and the profile has no prediction")
    return None


def _column(
    entry: ProfileEntry,
    column: Column,
    config: DriftConfig,
    *,
    constraint: FeatureConstraint | None,
    with_quality: bool = True,
) -> ColumnReport:
    quality: DataQuality | None = None
    if isinstance(entry, CategoricalProfile):
        assert isinstance(column, CategoricalColumn)
        index = CategoryIndex(entry.frequencies)
        tally = index.count_keys(column.keys)
        names = config.methods_for(entry.kind, tally.present, len(index.categories))
        tests = []
        for name in names:
            method = _fitted(name, entry, config.thresholds.get(name))
            # Both categorical tests score the tally counted once above.
            assert isinstance(method, ChiSquare | JensenShannon)
            tests.append(method.score_tally(tally))
        if with_quality:
            quality = _categorical_quality(entry, column, tally.unlisted, tally.present, index, config, constraint)
    else:
        assert isinstance(column, NumericColumn)
        names = config.methods_for(entry.kind, int(column.values.size), 0)
        ordered = np.sort(column.values)  # once per column; every numeric test works on it
        tests = []
        for name in names:
            method = _fitted(name, entry, config.thresholds.get(name))
            assert isinstance(method, KolmogorovSmirnov | PopulationStabilityIndex | Wasserstein)
            tests.append(method.score_sorted(ordered))
        if with_quality:
            quality = _numeric_quality(entry, column, ordered, config, constraint)
    return ColumnReport(
        kind=entry.kind,
        tests=tuple(tests),
        drifted=any(t.drifted for t in tests),
        data_quality=quality,
    )


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _null_flags(
    missing_rate: float,
    reference: float,
    absent_share: float,
    constraint: FeatureConstraint | None,
    config: DriftConfig,
) -> list[str]:
    if absent_share > config.violation_share:
        return [SCHEMA_MISMATCH]  # its nulls are the missing key, not a second problem
    nullable = constraint.nullable if constraint is not None and constraint.nullable is not None else reference > 0
    if not nullable and missing_rate > config.violation_share:
        return [UNEXPECTED_NULLS]
    if nullable and missing_rate - reference > config.missing_rate_jump:
        return [MISSING_RATE_JUMP]
    return []


def _share_outside(ordered: NDArray[np.float64], low: float | None, high: float | None) -> float:
    """The share of sorted values below `low` or above `high` (either may be open), by binary search."""
    below = int(np.searchsorted(ordered, low, side="left")) if low is not None else 0
    above = ordered.size - int(np.searchsorted(ordered, high, side="right")) if high is not None else 0
    return (below + above) / ordered.size


def _numeric_quality(
    entry: NumericProfile,
    column: NumericColumn,
    ordered: NDArray[np.float64],
    config: DriftConfig,
    constraint: FeatureConstraint | None,
) -> DataQuality:
    """The column's data quality; `ordered` is its finite values sorted (done once for the tests too)."""
    total = column.total or 1
    reference_missing = _finite(entry.missing_rate) or 0.0
    missing_rate = column.missing / total
    absent_share = column.absent / total
    wrong_type = column.wrong_type / total
    flags = _null_flags(missing_rate, reference_missing, absent_share, constraint, config)
    if wrong_type > config.violation_share:
        flags.append(WRONG_TYPE)
    out_of_range: float | None = None
    low, high = _finite(entry.min), _finite(entry.max)
    if low is not None and high is not None and ordered.size:
        out_of_range = _share_outside(ordered, low, high)
    outside_declared: float | None = None
    if constraint is not None and (constraint.min is not None or constraint.max is not None) and ordered.size:
        outside_declared = _share_outside(ordered, constraint.min, constraint.max)
        if outside_declared > config.violation_share:
            flags.append(OUTSIDE_DECLARED_RANGE)
    distinct = 0 if not ordered.size else 1 if ordered[0] == ordered[-1] else 2
    if (
        distinct == 1
        and not _is_mass_point(entry, float(ordered[0]))
        and _implausibly_constant(_top_share_numeric(entry, config), ordered.size, config)
    ):
        flags.append(GONE_CONSTANT)
    return DataQuality(
        missing_rate=missing_rate,
        reference_missing_rate=reference_missing,
        absent_share=absent_share,
        wrong_type_share=wrong_type,
        out_of_range_share=out_of_range,
        outside_declared_share=outside_declared,
        distinct_values=distinct,
        flags=tuple(flags),
    )


def _top_share_numeric(entry: NumericProfile, config: DriftConfig) -> float | None:
    std = _finite(entry.std)
    if std is not None and std == 0:
        return None  # constant in training too: a constant window is what it always was
    if not entry.sample:
        return None
    _, counts = np.unique(np.asarray(entry.sample, dtype=np.float64), return_counts=True)
    if counts.size < config.constant_min_levels:
        return None  # few levels: holding one of them is no sign of a broken feed
    return float(counts.max() / counts.sum())


def _is_mass_point(entry: NumericProfile, value: float) -> bool:
    """Whether ``value`` is the training data's most common value and repeats there, like 0 for snowfall.

    Such a zero-inflated feature holds that value for whole seasons or dry spells: its values come in runs,
    so the independent-draws bound of `_implausibly_constant` does not apply to a window of it.
    """
    if not entry.sample:
        return False
    levels, counts = np.unique(np.asarray(entry.sample, dtype=np.float64), return_counts=True)
    top = counts.max()
    return bool(top > 1 and np.any(levels[counts == top] == value))


def _implausibly_constant(top_share: float | None, n: int, config: DriftConfig) -> bool:
    """Whether n equal values are less likely than `constant_probability` under the reference."""
    if top_share is None or n < config.constant_min_rows or top_share >= 1:
        return False
    return n * math.log(max(top_share, 1e-300)) < math.log(config.constant_probability)


def _categorical_quality(
    entry: CategoricalProfile,
    column: CategoricalColumn,
    unlisted: int,
    present: int,
    index: CategoryIndex,
    config: DriftConfig,
    constraint: FeatureConstraint | None,
) -> DataQuality:
    total = column.total or 1
    reference_missing = _finite(entry.missing_rate) or 0.0
    missing_rate = column.missing / total
    absent_share = column.absent / total
    flags = _null_flags(missing_rate, reference_missing, absent_share, constraint, config)
    unseen: float | None = None
    if present:
        # Categories the profile folded into "__other__" look unlisted too; only the excess over
        # the reference's own "__other__" share is new.
        unseen = max(0.0, unlisted / present - index.other_share)
    keys = column.keys[present_mask(column.keys)]
    outside_declared: float | None = None
    if constraint is not None and constraint.categories is not None and keys.size:
        allowed = np.asarray(constraint.categories, dtype=object)
        outside_declared = float(np.mean(~np.isin(keys.astype(str), allowed.astype(str))))
        if outside_declared > config.violation_share:
            flags.append(UNDECLARED_CATEGORY)
    distinct = int(np.unique(keys.astype(str)).size) if keys.size else 0
    shares = [v for v in entry.frequencies.values() if v > 0]
    top_share = max(shares) if len(shares) >= max(2, config.constant_min_levels) else None
    if distinct == 1 and _implausibly_constant(top_share, int(keys.size), config):
        flags.append(GONE_CONSTANT)
    return DataQuality(
        missing_rate=missing_rate,
        reference_missing_rate=reference_missing,
        absent_share=absent_share,
        unseen_share=unseen,
        outside_declared_share=outside_declared,
        distinct_values=distinct,
        flags=tuple(flags),
    )


def _issues(feature: str, quality: DataQuality | None, config: DriftConfig) -> list[DataQualityIssue]:
    if quality is None:
        return []
    found: list[DataQualityIssue] = []
    for flag in quality.flags:
        if flag == SCHEMA_MISMATCH:
            found.append(DataQualityIssue(feature, flag, quality.absent_share, config.violation_share))
        elif flag == UNEXPECTED_NULLS:
            found.append(
                DataQualityIssue(
                    feature, flag, quality.missing_rate, config.violation_share, quality.reference_missing_rate
                )
            )
        elif flag == MISSING_RATE_JUMP:
            found.append(
                DataQualityIssue(
                    feature, flag, quality.missing_rate, config.missing_rate_jump, quality.reference_missing_rate
                )
            )
        elif flag == WRONG_TYPE:
            found.append(DataQualityIssue(feature, flag, quality.wrong_type_share or 0.0, config.violation_share))
        elif flag in (OUTSIDE_DECLARED_RANGE, UNDECLARED_CATEGORY):
            found.append(DataQualityIssue(feature, flag, quality.outside_declared_share or 0.0, config.violation_share))
        elif flag == GONE_CONSTANT:
            found.append(DataQualityIssue(feature, flag, float(quality.distinct_values or 0), 1.0))
    return found


def _summary(
    verdict: Verdict,
    reports: Mapping[str, ColumnReport],
    drifted: Sequence[str],
    issues: Sequence[DataQualityIssue],
    prediction: ColumnReport | None,
    performance: Performance,
) -> str:
    counted = f"{len(drifted)} of {len(reports)} features drifted"
    if drifted:
        counted += f" ({_listing(drifted)})"
    extrapolated = _extrapolation(reports, drifted)
    if extrapolated:
        counted += f"; {extrapolated}"
    if prediction is not None:
        counted += ", predictions drifted" if prediction.drifted else ", predictions stable"
    perf = _performance_phrase(performance)
    cause, action = verdict.cause, verdict.action
    if cause == "data_quality":
        described = _listing([_describe(issue) for issue in issues])
        blocked = "retraining is blocked until the feed is fixed (window quarantined)"
        if performance.degraded:
            blocked += f", although {performance.reason}"
        return f"Data quality problem: {described}; {blocked}; recommended action: {action}."
    if cause == "performance_drop":
        return f"Performance drop: {performance.reason}; {counted}; recommended action: {action}."
    if cause == "concept_drift":
        return f"Concept drift: {performance.reason} while {counted}; recommended action: {action}."
    if cause == "covariate_shift":
        return f"Covariate shift: {counted}; {perf}; recommended action: {action}."
    return f"No drift: {counted}; {perf}."


def _extrapolation(reports: Mapping[str, ColumnReport], drifted: Sequence[str]) -> str:
    """Drifted features with many values outside the training range: the model extrapolates there."""
    parts = []
    for name in drifted:
        quality = reports[name].data_quality
        share = quality.out_of_range_share if quality is not None else None
        if share is not None and share >= 0.05:
            parts.append(f"{name} {share:.0%}")
    return f"outside the training range: {_listing(parts)}" if parts else ""


def _performance_phrase(performance: Performance) -> str:
    if performance.basis is None:
        return f"performance unknown ({performance.reason})" if performance.reason else "performance unknown"
    return f"performance {performance.reason}"


def _describe(issue: DataQualityIssue) -> str:
    if issue.check == SCHEMA_MISMATCH:
        return f"{issue.feature} is not sent in {issue.value:.0%} of requests"
    if issue.check == UNEXPECTED_NULLS:
        return f"{issue.feature} is missing in {issue.value:.0%} of rows where training had none"
    if issue.check == MISSING_RATE_JUMP:
        return f"{issue.feature} missing rate {issue.value:.0%} (training {issue.reference or 0.0:.0%})"
    if issue.check == WRONG_TYPE:
        return f"{issue.feature} has {issue.value:.0%} values of the wrong type"
    if issue.check == OUTSIDE_DECLARED_RANGE:
        return f"{issue.feature} has {issue.value:.0%} values outside its declared range"
    if issue.check == UNDECLARED_CATEGORY:
        return f"{issue.feature} has {issue.value:.0%} values outside its declared categories"
    return f"{issue.feature} has gone constant"


def _listing(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"


def declared_constraints(contract: DatasetContract | None) -> dict[str, FeatureConstraint]:
    """What the dataset's publisher declared per column (physical bounds, nullability) as drift constraints.

    Only declarations count: the ranges and categories a version happened to hold are evidence of covariate
    shift when production leaves them, never broken data.
    """
    if contract is None:
        return {}
    found: dict[str, FeatureConstraint] = {}
    for column in contract.columns:
        declared = column.declared
        if declared is None or (declared.min, declared.max, declared.nullable) == (None, None, None):
            continue
        with contextlib.suppress(ValidationError):  # ingest validated them; a bad one is ignored, not fatal
            found[column.name] = FeatureConstraint(min=declared.min, max=declared.max, nullable=declared.nullable)
    return found


def merged_constraints(
    declared: Mapping[str, FeatureConstraint], spec: Mapping[str, FeatureConstraint]
) -> dict[str, FeatureConstraint]:
    """The dataset's declarations with the spec's constraints over them, field by field (the spec wins)."""
    merged = dict(declared)
    for name, own in spec.items():
        base = merged.get(name)
        if base is None:
            merged[name] = own
            continue
        fields = {key: value for key, value in own.model_dump().items() if value is not None}
        try:
            merged[name] = FeatureConstraint.model_validate({**base.model_dump(), **fields})
        except ValidationError:  # e.g. the spec's max below the declared min: the spec alone decides
            merged[name] = own
    return merged
