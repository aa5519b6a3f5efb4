"""The verdict on one window of logged predictions against a model version's reference profile.

Decision rules (all thresholds live in `DriftConfig`):

* a feature drifts when any of its tests drifts (`stats.default_methods` picks the tests
  from the column type and the window size unless the config names them);
* data quality flags per feature: the missing rate rises more than 0.1 above the
  reference's; more than 1% of a numeric column is not a finite number; more than 5%
  of numeric values fall outside the reference range widened by 10% of its width on
  each side; more than 5% of categorical values are categories the reference does not
  list (beyond the share the reference itself folded into "__other__");
* performance degrades when, on at least `min_labels` labelled rows, accuracy falls
  more than 0.05 below the baseline (classification) or rmse rises more than 20% above
  it (regression);
* cause, first match wins: "data_quality" (any flag: retraining on a broken feed would
  bake the fault into the model), "covariate_shift" (at least
  max(1, ceil(0.3 * number of features)) features drifted, so one feature in a model
  of up to three), "concept_drift" (performance degraded with fewer features drifted),
  else no drift. Prediction drift and the confidence-based accuracy estimate are
  evidence only: neither decides a cause on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from mloop_common.profile import CategoricalProfile, FeatureKind, NumericProfile, ReferenceProfile
from mloop_drift.stats import (
    METHODS,
    CategoryCounts,
    CategoryIndex,
    NumericValues,
    ProfileEntry,
    TestResult,
    Threshold,
    category_key,
    default_methods,
    fit_method,
    parse_numeric,
)

Task = Literal["classification", "regression"]
Cause = Literal["data_quality", "covariate_shift", "concept_drift"]
Action = Literal["retrain", "investigate"]

MISSING_RATE_JUMP = "missing_rate_jump"
INVALID_VALUES = "invalid_values"
OUT_OF_RANGE = "out_of_range"
UNSEEN_CATEGORIES = "unseen_categories"

# Keeps a drop of exactly the allowed size from flagging through floating-point noise.
_EPS = 1e-12


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds for the window verdict; the defaults are the documented policy."""

    drift_share_threshold: float = 0.3
    missing_rate_jump: float = 0.1
    invalid_share: float = 0.01
    out_of_range_margin: float = 0.1
    out_of_range_share: float = 0.05
    unseen_share: float = 0.05
    accuracy_drop: float = 0.05
    rmse_increase: float = 0.2
    min_labels: int = 30
    numeric_methods: tuple[str, ...] | None = None
    categorical_methods: tuple[str, ...] | None = None
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, names in (("numeric", self.numeric_methods), ("categorical", self.categorical_methods)):
            for name in names or ():
                if name not in METHODS or METHODS[name].kind != kind:
                    raise ValueError(f"{name!r} is not a registered {kind} drift method")
        if not 0 < self.drift_share_threshold <= 1:
            raise ValueError("drift_share_threshold must be in (0, 1]")

    def min_drifted_features(self, n_features: int) -> int:
        """How many drifted features make a covariate shift."""
        return max(1, math.ceil(self.drift_share_threshold * n_features - 1e-9))

    def methods_for(self, kind: FeatureKind, n: int, categories: int) -> tuple[str, ...]:
        """Configured tests for a column type, or the defaults for its window size."""
        chosen = self.numeric_methods if kind == "numeric" else self.categorical_methods
        return chosen or default_methods(kind, n, categories=categories)


@dataclass(frozen=True)
class DataQuality:
    """Data-quality measurements of one feature in one window; `flags` names the checks that failed."""

    missing_rate: float
    reference_missing_rate: float
    invalid_share: float | None = None
    out_of_range_share: float | None = None
    unseen_share: float | None = None
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "missing_rate": self.missing_rate,
            "reference_missing_rate": self.reference_missing_rate,
            "invalid_share": self.invalid_share,
            "out_of_range_share": self.out_of_range_share,
            "unseen_share": self.unseen_share,
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
class Performance:
    """Measured (labels) or estimated (probabilities) model performance on the window."""

    task: Task | None
    n_labelled: int
    metrics: Mapping[str, float]
    baseline: Mapping[str, float]
    degraded: bool
    reason: str | None = None
    estimated_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "task": self.task,
            "n_labelled": self.n_labelled,
            "metrics": dict(self.metrics),
            "baseline": dict(self.baseline),
            "degraded": self.degraded,
            "reason": self.reason,
            "estimated_accuracy": self.estimated_accuracy,
        }


@dataclass(frozen=True)
class DataQualityIssue:
    """One failed data-quality check."""

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
    cause: Cause | None
    drift_detected: bool
    recommended_action: Action | None
    summary: str

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
) -> DriftReport:
    """Compare one window of inputs, predictions and (optional) labels with the reference profile.

    `labels[i]` and `probabilities[i]` belong to `rows[i]`; a None label means its feedback
    has not arrived. `task` defaults to what the profile's prediction entry implies
    (categorical: classification, numeric: regression).
    """
    config = config or DriftConfig()
    prediction_entry = profile.prediction
    if not rows:
        raise ValueError("cannot evaluate an empty window: it has no rows")
    n = len(rows)
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"row {i} is {type(row).__name__}, expected an object of feature values")
    _same_length("predictions", predictions, n)
    if labels is not None:
        _same_length("labels", labels, n)
    if probabilities is not None:
        _same_length("probabilities", probabilities, n)
    task = _resolve_task(task, prediction_entry, labels is not None or probabilities is not None)

    reports: dict[str, ColumnReport] = {}
    issues: list[DataQualityIssue] = []
    for name, entry in profile.features.items():
        values = [row.get(name) for row in rows]
        report = _column(entry, values, config, with_quality=True)
        reports[name] = report
        issues.extend(_issues(name, report.data_quality, config))

    prediction = (
        _column(prediction_entry, list(predictions), config, with_quality=False)
        if prediction_entry is not None
        else None
    )
    performance = _performance(task, predictions, labels, probabilities, metric_baseline or {}, config)

    drifted = tuple(name for name, report in reports.items() if report.drifted)
    share = len(drifted) / len(reports) if reports else 0.0
    needed = config.min_drifted_features(len(reports))
    cause: Cause | None
    if issues:
        cause = "data_quality"
    elif reports and len(drifted) >= needed:
        cause = "covariate_shift"
    elif performance.degraded:
        cause = "concept_drift"
    else:
        cause = None
    action: Action | None = None if cause is None else "investigate" if cause == "data_quality" else "retrain"
    summary = _summary(cause, action, reports, drifted, issues, prediction, performance)
    return DriftReport(
        n_rows=n,
        features=reports,
        prediction=prediction,
        performance=performance,
        drifted_features=drifted,
        share_drifted=share,
        min_drifted_features=needed,
        data_quality_issues=tuple(issues),
        cause=cause,
        drift_detected=cause is not None,
        recommended_action=action,
        summary=summary,
    )


def _same_length(what: str, values: Sequence[Any], n: int) -> None:
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} entries for {n} rows")


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


def _column(entry: ProfileEntry, values: list[Any], config: DriftConfig, *, with_quality: bool) -> ColumnReport:
    quality: DataQuality
    if isinstance(entry, CategoricalProfile):
        index = CategoryIndex(entry.frequencies)
        tally = index.count(values)
        present, categories = tally.present, len(index.categories)
        quality = _categorical_quality(entry, tally, index, config)
    else:
        parsed = parse_numeric(values)
        present, categories = int(parsed.values.size), 0
        quality = _numeric_quality(entry, parsed, config)
    names = config.methods_for(entry.kind, present, categories)
    tests = tuple(fit_method(name, entry, config.thresholds.get(name)).score(values) for name in names)
    return ColumnReport(
        kind=entry.kind,
        tests=tests,
        drifted=any(t.drifted for t in tests),
        data_quality=quality if with_quality else None,
    )


def _reference_missing_rate(entry: ProfileEntry) -> float:
    rate = _finite(entry.missing_rate)
    return rate if rate is not None else 0.0


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _numeric_quality(entry: NumericProfile, parsed: NumericValues, config: DriftConfig) -> DataQuality:
    total = parsed.total
    reference_missing = _reference_missing_rate(entry)
    # Garbage in a numeric column reaches the model as a missing value.
    missing_rate = (parsed.missing + parsed.invalid) / total
    invalid_share = parsed.invalid / total
    out_of_range: float | None = None
    low, high = _finite(entry.min), _finite(entry.max)
    if low is not None and high is not None and parsed.values.size:
        width = high - low
        # A constant training column has no width: take the margin from its magnitude instead.
        margin = config.out_of_range_margin * (width if width > 0 else max(abs(low), 1.0))
        outside = (parsed.values < low - margin) | (parsed.values > high + margin)
        out_of_range = float(outside.mean())
    flags: list[str] = []
    if missing_rate - reference_missing > config.missing_rate_jump:
        flags.append(MISSING_RATE_JUMP)
    if invalid_share > config.invalid_share:
        flags.append(INVALID_VALUES)
    if out_of_range is not None and out_of_range > config.out_of_range_share:
        flags.append(OUT_OF_RANGE)
    return DataQuality(missing_rate, reference_missing, invalid_share, out_of_range, None, tuple(flags))


def _categorical_quality(
    entry: CategoricalProfile, tally: CategoryCounts, index: CategoryIndex, config: DriftConfig
) -> DataQuality:
    reference_missing = _reference_missing_rate(entry)
    missing_rate = tally.missing / (tally.missing + tally.present)
    unseen: float | None = None
    if tally.present:
        # Categories the profile folded into "__other__" look unlisted too; only the excess over
        # the reference's own "__other__" share is new.
        unseen = max(0.0, tally.unlisted / tally.present - index.other_share)
    flags: list[str] = []
    if missing_rate - reference_missing > config.missing_rate_jump:
        flags.append(MISSING_RATE_JUMP)
    if unseen is not None and unseen > config.unseen_share:
        flags.append(UNSEEN_CATEGORIES)
    return DataQuality(missing_rate, reference_missing, None, None, unseen, tuple(flags))


def _issues(feature: str, quality: DataQuality | None, config: DriftConfig) -> list[DataQualityIssue]:
    if quality is None:
        return []
    found: list[DataQualityIssue] = []
    for flag in quality.flags:
        if flag == MISSING_RATE_JUMP:
            found.append(
                DataQualityIssue(
                    feature, flag, quality.missing_rate, config.missing_rate_jump, quality.reference_missing_rate
                )
            )
        elif flag == INVALID_VALUES:
            found.append(DataQualityIssue(feature, flag, quality.invalid_share or 0.0, config.invalid_share))
        elif flag == OUT_OF_RANGE:
            found.append(DataQualityIssue(feature, flag, quality.out_of_range_share or 0.0, config.out_of_range_share))
        elif flag == UNSEEN_CATEGORIES:
            found.append(DataQualityIssue(feature, flag, quality.unseen_share or 0.0, config.unseen_share))
    return found


def _performance(
    task: Task | None,
    predictions: Sequence[Any],
    labels: Sequence[Any] | None,
    probabilities: Sequence[Sequence[float] | None] | None,
    metric_baseline: Mapping[str, Any],
    config: DriftConfig,
) -> Performance:
    baseline = {k: v for k, v in ((str(k), _finite(v)) for k, v in metric_baseline.items()) if v is not None}
    metrics: dict[str, float] = {}
    n_labelled = 0
    if labels is not None and task == "classification":
        pairs = [(category_key(p), category_key(y)) for p, y in zip(predictions, labels, strict=True)]
        # A row without a usable prediction but with a label counts as a wrong answer.
        hits = [p == y for p, y in pairs if y is not None]
        n_labelled = len(hits)
        if hits:
            metrics["accuracy"] = float(np.mean(hits))
    elif labels is not None and task == "regression":
        pairs_r = [(_number_or_nan(p), _number_or_nan(y)) for p, y in zip(predictions, labels, strict=True)]
        errors = np.array([p - y for p, y in pairs_r if math.isfinite(p) and math.isfinite(y)], dtype=np.float64)
        n_labelled = int(errors.size)
        if errors.size:
            metrics["rmse"] = float(np.sqrt(np.mean(errors**2)))
            metrics["mae"] = float(np.mean(np.abs(errors)))
    estimated = _estimated_accuracy(probabilities) if task == "classification" and probabilities else None
    degraded, reason = _degradation(task, metrics, baseline, n_labelled, config)
    return Performance(task, n_labelled, metrics, baseline, degraded, reason, estimated)


def _number_or_nan(value: Any) -> float:
    parsed = parse_numeric([value])
    return float(parsed.values[0]) if parsed.values.size else math.nan


def _estimated_accuracy(probabilities: Sequence[Sequence[float] | None]) -> float | None:
    # Confidence-based estimate: for a calibrated classifier the expected accuracy on a
    # window is the mean probability of the predicted (most probable) class.
    confidences: list[float] = []
    for vector in probabilities:
        if vector is None or isinstance(vector, str | bytes):
            continue
        parsed = parse_numeric(vector)
        if parsed.values.size and not parsed.missing and not parsed.invalid:
            confidences.append(float(parsed.values.max()))
    return float(np.mean(confidences)) if confidences else None


def _degradation(
    task: Task | None, metrics: Mapping[str, float], baseline: Mapping[str, float], n_labelled: int, config: DriftConfig
) -> tuple[bool, str | None]:
    if not metrics:
        return False, None
    if n_labelled < config.min_labels:
        return False, f"only {n_labelled} labelled rows; at least {config.min_labels} are needed to judge performance"
    if task == "classification":
        base = baseline.get("accuracy")
        if base is None:
            return False, "no accuracy baseline to compare with"
        accuracy = metrics["accuracy"]
        if base - accuracy > config.accuracy_drop + _EPS:
            return True, f"accuracy {accuracy:.3f} is more than {config.accuracy_drop:g} below the baseline {base:.3f}"
        return False, None
    base = baseline.get("rmse")
    if base is None or base <= 0:
        return False, "no rmse baseline to compare with"
    rmse = metrics["rmse"]
    if rmse > base * (1 + config.rmse_increase) + _EPS:
        return True, f"rmse {rmse:.4g} is more than {config.rmse_increase:.0%} above the baseline {base:.4g}"
    return False, None


def _summary(
    cause: Cause | None,
    action: Action | None,
    reports: Mapping[str, ColumnReport],
    drifted: Sequence[str],
    issues: Sequence[DataQualityIssue],
    prediction: ColumnReport | None,
    performance: Performance,
) -> str:
    counted = f"{len(drifted)} of {len(reports)} features drifted"
    if drifted:
        counted += f" ({_listing(drifted)})"
    if prediction is None:
        predicted = ""
    else:
        predicted = ", predictions drifted" if prediction.drifted else ", predictions stable"
    perf = _performance_phrase(performance)
    if cause == "data_quality":
        described = _listing([_describe(issue) for issue in issues])
        return f"Data quality problem: {described}; recommended action: {action}."
    if cause == "covariate_shift":
        return f"Covariate shift: {counted}{predicted}{perf}; recommended action: {action}."
    if cause == "concept_drift":
        return f"Concept drift: {performance.reason} while {counted}{predicted}; recommended action: {action}."
    return f"No drift: {counted}{predicted}{perf}."


def _performance_phrase(performance: Performance) -> str:
    parts = [f"{name} {value:.3g}" for name, value in performance.metrics.items()]
    phrase = f", {' and '.join(parts)} on {performance.n_labelled} labelled rows" if parts else ""
    if performance.estimated_accuracy is not None:
        phrase += f", estimated accuracy {performance.estimated_accuracy:.3g}"
    return phrase


def _describe(issue: DataQualityIssue) -> str:
    if issue.check == MISSING_RATE_JUMP:
        return f"{issue.feature} missing rate {issue.value:.0%} (reference {issue.reference or 0.0:.0%})"
    if issue.check == INVALID_VALUES:
        return f"{issue.feature} has {issue.value:.0%} non-numeric values"
    if issue.check == OUT_OF_RANGE:
        return f"{issue.feature} has {issue.value:.0%} values outside the training range"
    return f"{issue.feature} has {issue.value:.0%} unseen categories"


def _listing(items: Sequence[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown} and {len(items) - limit} more"
