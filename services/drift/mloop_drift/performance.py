"""A window's model performance: measured from labels, or estimated without them, and judged against a baseline.

Measured metrics use `mloop_common.evaluation` (the validator's code), so the window and the baseline
are measured the same way. Without enough labels, a classifier's performance is estimated by
confidence-based performance estimation (CBPE): the version's held-out probabilities and labels (the
profile's evaluation set) calibrate its probabilities by isotonic regression, and the calibrated
probabilities give the expected accuracy and ROC AUC of a window, with a 95% sampling band.

A metric past the tolerance calls for retraining only when it is past it by more than its sampling
error: a window of a few hundred rows, judged against a baseline measured on a small held-out set,
misses the tolerance by chance often enough to retrain a model that never drifted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from mloop_common.evaluation import compute_metrics
from mloop_common.profile import EvaluationSet
from mloop_common.spec import metric_higher_is_better
from mloop_drift.stats import category_key, present_mask

Task = Literal["classification", "regression"]
Basis = Literal["actual", "estimated"]
FloatArray = NDArray[np.float64]

Z95 = 1.959964
# One-sided 95%: how many standard errors past the tolerance a metric must be to count as degraded.
Z95_ONE_SIDED = 1.644854
# Poisson-bootstrap resamples, and rows they draw on (the error of n rows is scaled from at most this many).
BOOTSTRAP_RESAMPLES = 200
BOOTSTRAP_ROWS = 2000
# Metrics CBPE can estimate from calibrated probabilities.
ESTIMABLE = ("accuracy", "roc_auc")
# Keeps a drop of exactly the allowed size from flagging through floating-point noise.
_EPS = 1e-12


@dataclass(frozen=True)
class PerformanceRules:
    """When labels count, and how far a metric may fall before the window calls for retraining."""

    min_label_coverage: float = 0.5
    min_labels: int = 30
    max_metric_drop: float = 0.05  # absolute, for scores (accuracy, roc_auc, f1, r2, ...)
    max_error_increase: float = 0.2  # relative, for errors (rmse, mae, log_loss)
    metric: str | None = None  # the spec's primary metric; the judged one when it can be measured
    # Standard errors a metric must be past the tolerance by before the window counts as degraded.
    confidence_z: float = Z95_ONE_SIDED

    def labels_needed(self, n: int) -> int:
        """Labelled rows a window of n rows needs before its measured performance counts."""
        return max(self.min_labels, math.ceil(self.min_label_coverage * n - 1e-9))

    def limit(self, metric: str, baseline: float) -> float:
        """The worst value of ``metric`` still within tolerance of ``baseline``."""
        if metric_higher_is_better(metric):
            return baseline - self.max_metric_drop
        return baseline * (1 + self.max_error_increase) if baseline > 0 else baseline + self.max_error_increase


@dataclass(frozen=True)
class Estimate:
    """An estimated metric with its 95% band."""

    value: float
    lower: float
    upper: float
    standard_error: float = 0.0

    def to_dict(self) -> dict[str, float]:
        """Plain JSON types."""
        return {"value": self.value, "lower": self.lower, "upper": self.upper, "standard_error": self.standard_error}


@dataclass(frozen=True)
class Performance:
    """A window's performance: what labels measured, what CBPE estimated, and the verdict on it.

    `basis` says which one was judged: "actual" once enough of the window is labelled, else
    "estimated" when an estimate exists, else None (`reason` then says what is missing).
    """

    task: Task | None
    n_rows: int
    n_labelled: int
    labels_needed: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    estimated: Mapping[str, Estimate] = field(default_factory=dict)
    baseline: Mapping[str, float] = field(default_factory=dict)
    basis: Basis | None = None
    metric: str | None = None
    value: float | None = None
    limit: float | None = None
    # How far past the limit the judged value must be (confidence_z standard errors of window and baseline).
    margin: float | None = None
    degraded: bool = False
    reason: str | None = None
    label_delay_seconds: Mapping[str, float] | None = None

    @property
    def coverage(self) -> float:
        """Share of the window's rows that are labelled."""
        return self.n_labelled / self.n_rows if self.n_rows else 0.0

    @property
    def holds(self) -> bool:
        """Whether a judged metric stayed within tolerance (False when nothing could be judged)."""
        return self.basis is not None and not self.degraded

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "task": self.task,
            "n_rows": self.n_rows,
            "n_labelled": self.n_labelled,
            "coverage": self.coverage,
            "labels_needed": self.labels_needed,
            "label_delay_seconds": dict(self.label_delay_seconds) if self.label_delay_seconds else None,
            "metrics": dict(self.metrics),
            "estimated": {name: e.to_dict() for name, e in self.estimated.items()},
            "baseline": dict(self.baseline),
            "basis": self.basis,
            "metric": self.metric,
            "value": self.value,
            "limit": self.limit,
            "margin": self.margin,
            "degraded": self.degraded,
            "reason": self.reason,
        }


# --- calibration ---------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Isotonic:
    """A non-decreasing step map fitted by pool-adjacent-violators; linear between steps, clipped at the ends."""

    x: FloatArray
    y: FloatArray

    @classmethod
    def fit(cls, x: FloatArray, y: FloatArray) -> Isotonic:
        """Fit y ~ x (y in [0, 1]) with ties in x pooled first."""
        unique_x, inverse = np.unique(x, return_inverse=True)
        weights = np.bincount(inverse).astype(np.float64)
        sums = np.bincount(inverse, weights=y)
        means: list[float] = []
        sizes: list[float] = []
        starts: list[int] = []
        for i in range(unique_x.size):
            mean, size, start = sums[i] / weights[i], weights[i], i
            while means and means[-1] > mean:
                previous_mean, previous_size = means.pop(), sizes.pop()
                start = starts.pop()
                mean = (previous_mean * previous_size + mean * size) / (previous_size + size)
                size += previous_size
            means.append(mean)
            sizes.append(size)
            starts.append(start)
        fitted = np.empty(unique_x.size)
        bounds = [*starts, unique_x.size]
        for block, mean in enumerate(means):
            fitted[bounds[block] : bounds[block + 1]] = mean
        return cls(unique_x, fitted)

    def __call__(self, x: FloatArray) -> FloatArray:
        """Calibrated values of x."""
        return np.interp(x, self.x, self.y)


@dataclass(frozen=True, eq=False)
class Calibration:
    """Per-class isotonic maps from a version's held-out probabilities to observed class frequencies."""

    classes: tuple[str, ...]
    maps: tuple[Isotonic, ...]

    @classmethod
    def fit(cls, evaluation: EvaluationSet) -> Calibration:
        """Fit one-vs-rest maps on the evaluation set (one map suffices for two classes)."""
        proba = np.asarray(evaluation.probabilities, dtype=np.float64)
        labels = np.asarray(evaluation.labels, dtype=object)
        if proba.ndim != 2 or proba.shape[0] != labels.size or proba.shape[1] != len(evaluation.classes):
            raise ValueError("the evaluation set's probabilities do not match its labels and classes")
        if labels.size == 0:
            raise ValueError("the evaluation set is empty")
        columns = [1] if len(evaluation.classes) == 2 else range(len(evaluation.classes))
        maps = tuple(Isotonic.fit(proba[:, c], (labels == evaluation.classes[c]).astype(np.float64)) for c in columns)
        return cls(tuple(evaluation.classes), maps)

    def __call__(self, proba: FloatArray) -> FloatArray:
        """Calibrated class probabilities (rows sum to one)."""
        if len(self.classes) == 2:
            positive = np.clip(self.maps[0](proba[:, 1]), 0.0, 1.0)
            return np.column_stack([1.0 - positive, positive])
        calibrated = np.column_stack([m(proba[:, c]) for c, m in enumerate(self.maps)])
        totals = calibrated.sum(axis=1, keepdims=True)
        # A row every map sends to 0 keeps its raw probabilities rather than dividing by zero.
        return np.where(totals > 0, calibrated / np.where(totals > 0, totals, 1.0), proba)


def estimate(calibration: Calibration, proba: FloatArray) -> dict[str, Estimate]:
    """CBPE on one window's probability rows (rows with NaN are left out): expected accuracy and ROC AUC."""
    usable = proba[np.all(np.isfinite(proba), axis=1)] if proba.size else proba
    if usable.shape[0] == 0 or usable.shape[1] != len(calibration.classes):
        return {}
    calibrated = calibration(usable)
    n = usable.shape[0]
    predicted = np.argmax(usable, axis=1)
    hit = calibrated[np.arange(n), predicted]  # P(the predicted class is right)
    accuracy = float(hit.mean())
    spread = Z95 * math.sqrt(float(np.sum(hit * (1 - hit)))) / n
    found = {"accuracy": _banded(accuracy, spread)}
    auc = _expected_auc(usable, calibrated)
    if auc is not None:
        found["roc_auc"] = auc
    return found


def _banded(value: float, spread: float) -> Estimate:
    return Estimate(value, max(0.0, value - spread), min(1.0, value + spread), spread / Z95)


def _expected_auc(raw: FloatArray, calibrated: FloatArray) -> Estimate | None:
    """Binary: AUC of the raw positive scores with calibrated probabilities as expected labels;
    multiclass: one-vs-rest weighted by expected support (as the validator weights by support)."""
    columns = [1] if raw.shape[1] == 2 else list(range(raw.shape[1]))
    values, spreads, weights = [], [], []
    for c in columns:
        result = _one_auc(raw[:, c], calibrated[:, c])
        if result is not None:
            values.append(result[0])
            spreads.append(result[1])
            weights.append(float(calibrated[:, c].sum()))
    if not values or (len(columns) > 2 and len(values) < 2):
        return None
    value = float(np.average(values, weights=weights))
    spread = float(np.average(spreads, weights=weights))
    return _banded(value, spread)


def _one_auc(score: FloatArray, positive: FloatArray) -> tuple[float, float] | None:
    expected_positives = float(positive.sum())
    expected_negatives = float((1 - positive).sum())
    if expected_positives < 1 or expected_negatives < 1:
        return None
    order = np.argsort(-score, kind="mergesort")
    ordered_score = score[order]
    true_positive = np.cumsum(positive[order])
    false_positive = np.cumsum(1 - positive[order])
    # Rows with tied scores move the ROC curve together: keep the last point of each tie.
    last_of_tie = np.append(ordered_score[1:] != ordered_score[:-1], True)
    tpr = np.concatenate([[0.0], true_positive[last_of_tie] / expected_positives])
    fpr = np.concatenate([[0.0], false_positive[last_of_tie] / expected_negatives])
    auc = float(np.sum((fpr[1:] - fpr[:-1]) * (tpr[1:] + tpr[:-1]) / 2))
    # The standard error with the expected class counts.
    return auc, Z95 * _hanley_mcneil(auc, expected_positives, expected_negatives)


def _hanley_mcneil(auc: float, positives: float, negatives: float) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC measured on these class counts."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)) / (
        positives * negatives
    )
    return math.sqrt(max(variance, 0.0))


# --- the window's performance ----------------------------------------------------------


def assess(
    task: Task | None,
    predictions: NDArray[np.object_],
    labels: NDArray[np.object_] | None,
    probabilities: FloatArray | None,
    baseline: Mapping[str, Any],
    rules: PerformanceRules,
    calibration: Calibration | None = None,
    label_delays: FloatArray | None = None,
    baseline_rows: int | None = None,
) -> Performance:
    """Measure and estimate a window's performance and judge it against the baseline.

    Classification labels and predictions are compared by category key, so 1, 1.0 and "1" agree.
    ``baseline_rows``: how many held-out rows the baseline was measured on, when known; its sampling
    error then widens the margin a drop must clear.
    """
    n = int(predictions.size)
    needed = rules.labels_needed(n)
    base = {str(k): float(v) for k, v in baseline.items() if _finite(v)}
    if task is None:
        return Performance(None, n, 0, needed, baseline=base, reason="the task is unknown")
    labelled = np.zeros(n, dtype=bool) if labels is None else present_mask(labels)
    n_labelled = int(labelled.sum())
    scored = _scored(task, predictions, labels, probabilities, labelled, calibration)
    metrics = scored.metrics() if scored is not None else {}
    estimated = estimate(calibration, probabilities) if calibration is not None and probabilities is not None else {}
    found = Performance(
        task,
        n,
        n_labelled,
        needed,
        metrics=metrics,
        estimated=estimated,
        baseline=base,
        label_delay_seconds=_delays(label_delays, labelled),
    )
    if n_labelled >= needed and metrics and scored is not None:
        metric = _judged_metric(task, rules.metric, metrics, base)
        value = metrics.get(metric)
        measured = scored
        return _judge(
            found,
            "actual",
            metric,
            value,
            rules,
            lambda: sampling_error(measured, metric, value),
            measured.truth.size,
            baseline_rows,
        )
    if estimated and probabilities is not None:
        metric = rules.metric if rules.metric in estimated and rules.metric in base else "accuracy"
        chosen = estimated[metric]
        rows = int(np.all(np.isfinite(probabilities), axis=1).sum())
        return _judge(
            found, "estimated", metric, chosen.value, rules, lambda: chosen.standard_error, rows, baseline_rows
        )
    if task == "regression":
        reason = f"needs labels: {n_labelled} of the {needed} labelled rows that performance counts on"
    elif calibration is None:
        reason = (
            f"needs labels: {n_labelled} of {needed} labelled rows, and no estimate without the version's "
            "held-out probabilities in its reference profile"
        )
    else:
        reason = f"needs labels: {n_labelled} of {needed} labelled rows, and the predictions carry no probabilities"
    return replace(found, reason=reason)


def _judge(
    found: Performance,
    basis: Basis,
    metric: str,
    value: float | None,
    rules: PerformanceRules,
    error: Callable[[], float | None],
    rows: int,
    baseline_rows: int | None,
) -> Performance:
    """Judge ``value`` against the tolerance; past it, a drop counts only beyond its sampling error.

    ``error`` is the standard error of the value on its ``rows`` (computed only when needed); the
    baseline's own error is taken as the same per-row spread measured on ``baseline_rows``.
    """
    reference = found.baseline.get(metric)
    judged = replace(found, basis=basis, metric=metric, value=value)
    if value is None or reference is None:
        reason = f"no {metric} baseline to compare with" if reference is None else f"{metric} is undefined here"
        return replace(judged, reason=reason)
    limit = rules.limit(metric, reference)
    higher = metric_higher_is_better(metric)
    word = "estimated " if basis == "estimated" else ""
    past = value < limit - _EPS if higher else value > limit + _EPS
    if not past:
        reason = f"{word}{metric} {value:.3g} holds (baseline {reference:.3g}, tolerated {limit:.3g})"
        return replace(judged, limit=limit, reason=reason)
    window_error = error() or 0.0
    baseline_error = window_error * math.sqrt(rows / baseline_rows) if baseline_rows and rows else 0.0
    # A relative tolerance scales the baseline's error into the limit's.
    scale = 1 + rules.max_error_increase if not higher and reference > 0 else 1.0
    margin = rules.confidence_z * math.hypot(window_error, scale * baseline_error)
    degraded = value < limit - margin - _EPS if higher else value > limit + margin + _EPS
    direction = "below" if higher else "above"
    reason = f"{word}{metric} {value:.3g} is {direction} the tolerated {limit:.3g} (baseline {reference:.3g})"
    if not degraded:
        reason += f", by less than its sampling error ({margin:.2g}): not a drop yet"
    return replace(judged, limit=limit, margin=margin, degraded=degraded, reason=reason)


def _judged_metric(task: Task, primary: str | None, metrics: Mapping[str, float], base: Mapping[str, float]) -> str:
    if primary is not None and primary in metrics and primary in base:
        return primary
    return "accuracy" if task == "classification" else "rmse"


@dataclass(frozen=True, eq=False)
class Scored:
    """A window's labelled rows as the metrics compare them: numbers (regression) or category keys."""

    task: Task
    truth: NDArray[Any]
    predicted: NDArray[Any]
    proba: FloatArray | None = None
    classes: Sequence[str] | None = None

    def metrics(self) -> dict[str, float]:
        """Every metric of the task, by `mloop_common.evaluation` (the validator's code)."""
        if self.truth.size == 0:
            return {}
        if self.proba is None:
            return compute_metrics(self.task, self.truth, self.predicted)
        return compute_metrics(self.task, self.truth, self.predicted, self.proba, classes=self.classes)


def _scored(
    task: Task,
    predictions: NDArray[np.object_],
    labels: NDArray[np.object_] | None,
    probabilities: FloatArray | None,
    labelled: NDArray[np.bool_],
    calibration: Calibration | None,
) -> Scored | None:
    if labels is None or not labelled.any():
        return None
    if task == "regression":
        truth = _floats(labels[labelled])
        predicted = _floats(predictions[labelled])
        usable = np.isfinite(truth) & np.isfinite(predicted)
        return Scored(task, truth[usable], predicted[usable])
    truth_keys = np.array([_key(v) for v in labels[labelled]], dtype=object).astype(str)
    predicted_keys = np.array([_key(v) for v in predictions[labelled]], dtype=object).astype(str)
    classes: Sequence[str] | None = calibration.classes if calibration is not None else None
    if classes is not None and probabilities is not None and probabilities.shape[1] == len(classes):
        rows = probabilities[labelled]
        complete = np.all(np.isfinite(rows), axis=1)
        known = np.isin(truth_keys, np.asarray(classes, dtype=str))
        if complete.all() and known.all():
            return Scored(task, truth_keys, predicted_keys, rows, classes)
    return Scored(task, truth_keys, predicted_keys)


def sampling_error(scored: Scored, metric: str, value: float | None = None) -> float | None:
    """The standard error of ``metric`` on these rows, or None when it cannot be told.

    ROC AUC: Hanley & McNeil from ``value`` and the class counts. Every other metric: a seeded Poisson
    bootstrap (each row weighted by a Poisson(1) draw per resample) of the metric written as weighted
    sums, on at most BOOTSTRAP_ROWS rows with the error scaled to all of them.
    """
    n = int(scored.truth.size)
    if n < 2:
        return None
    if metric == "roc_auc":
        return _auc_error(scored, value) if value is not None else None
    rows = np.arange(n)
    if n > BOOTSTRAP_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(n, size=BOOTSTRAP_ROWS, replace=False))
    weights = np.random.default_rng(1).poisson(1.0, size=(BOOTSTRAP_RESAMPLES, rows.size)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        values = _weighted_metric(scored, metric, rows, weights)
    if values is None:
        return None
    values = values[np.isfinite(values)]
    if values.size < BOOTSTRAP_RESAMPLES // 2:
        return None
    return float(np.std(values, ddof=1) * math.sqrt(rows.size / n))


def _weighted_metric(scored: Scored, metric: str, rows: NDArray[np.intp], weights: FloatArray) -> FloatArray | None:
    """``metric`` under each row of ``weights`` (resamples x rows); None for a metric not written here."""
    totals = weights.sum(axis=1)
    truth, predicted = scored.truth[rows], scored.predicted[rows]
    if scored.task == "regression":
        error = predicted - truth
        if metric == "rmse":
            return np.sqrt(weights @ error**2 / totals)
        if metric == "mae":
            return weights @ np.abs(error) / totals
        if metric == "r2":
            spread = weights @ truth**2 - (weights @ truth) ** 2 / totals
            return 1 - (weights @ error**2) / spread
        return None
    hit = (truth == predicted).astype(np.float64)
    if metric == "accuracy":
        return weights @ hit / totals
    classes = list(scored.classes) if scored.classes is not None else sorted(set(truth) | set(predicted))
    if metric == "balanced_accuracy":
        recalls = [(weights @ (hit * (truth == c))) / (weights @ (truth == c).astype(np.float64)) for c in classes]
        present = [r for c, r in zip(classes, recalls, strict=True) if (truth == c).any()]
        return np.nanmean(np.column_stack(present), axis=1) if len(present) >= 2 else None
    if metric == "f1":
        scores, supports = [], []
        for c in classes if len(classes) > 2 else classes[-1:]:
            actual = (truth == c).astype(np.float64)
            true_positive = weights @ (hit * actual)
            false_positive = weights @ ((1 - hit) * (predicted == c))
            false_negative = weights @ ((1 - hit) * actual)
            denominator = 2 * true_positive + false_positive + false_negative
            scores.append(np.where(denominator > 0, 2 * true_positive / np.where(denominator > 0, denominator, 1), 0))
            supports.append(weights @ actual)
        if len(scores) == 1:
            return scores[0]
        support = np.column_stack(supports)
        return (np.column_stack(scores) * support).sum(axis=1) / support.sum(axis=1)
    if metric == "log_loss" and scored.proba is not None and scored.classes is not None:
        column = {c: i for i, c in enumerate(scored.classes)}
        chosen = scored.proba[rows, [column[t] for t in truth]]
        loss = -np.log(np.clip(chosen, np.finfo(np.float64).eps, 1.0))
        return weights @ loss / totals
    return None


def _auc_error(scored: Scored, auc: float) -> float | None:
    """Hanley-McNeil for binary AUC; one-vs-rest weighted by support for more classes."""
    classes = list(scored.classes) if scored.classes is not None else sorted(set(scored.truth))
    n = int(scored.truth.size)
    counts = [int((scored.truth == c).sum()) for c in (classes[-1:] if len(classes) == 2 else classes)]
    errors = [(_hanley_mcneil(auc, k, n - k), k) for k in counts if 0 < k < n]
    if not errors:
        return None
    return float(np.average([e for e, _ in errors], weights=[k for _, k in errors]))


def _key(value: Any) -> str:
    key = category_key(value)
    return "" if key is None else key


def _floats(values: NDArray[np.object_]) -> FloatArray:
    out = np.full(values.size, np.nan)
    for i, value in enumerate(values.tolist()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[i] = float(value)
        elif isinstance(value, str):
            try:
                out[i] = float(value)
            except ValueError:
                pass
    return out


def _delays(label_delays: FloatArray | None, labelled: NDArray[np.bool_]) -> dict[str, float] | None:
    if label_delays is None:
        return None
    known = label_delays[labelled & np.isfinite(label_delays)] if label_delays.size == labelled.size else label_delays
    if known.size == 0:
        return None
    return {"median": float(np.median(known)), "p90": float(np.quantile(known, 0.9)), "max": float(known.max())}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
