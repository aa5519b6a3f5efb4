"""Metrics shared by the trainer (reports), validator (decisions) and drift service (real performance)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

MISSING_LABEL = "__missing__"
_MAX_DISTINCT_BEFORE_BINNING = 10
_QUANTILE_BINS = 4


def compute_metrics(
    task: str,
    y_true: Any,
    y_pred: Any,
    y_proba: Any = None,
    classes: Sequence[Any] | None = None,
) -> dict[str, float]:
    """Every metric of the task that can be computed; undefined ones are left out, never NaN."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if len(y_true) == 0:
        return {}
    if task == "regression":
        candidates: dict[str, Callable[[], float]] = {
            "rmse": lambda: math.sqrt(skm.mean_squared_error(y_true, y_pred)),
            "mae": lambda: skm.mean_absolute_error(y_true, y_pred),
            # force_finite=False: a constant target has no defined R², not the 0.0 sklearn would invent.
            "r2": lambda: skm.r2_score(y_true, y_pred, force_finite=False) if len(y_true) >= 2 else math.nan,
        }
    elif task == "classification":
        candidates = _classification_metrics(y_true, y_pred, y_proba, classes)
    else:
        raise ValueError(f"unknown task {task!r}")
    results: dict[str, float] = {}
    for name, compute in candidates.items():
        value = _safely(compute)
        if value is not None:
            results[name] = value
    return results


def _classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, y_proba: Any, classes: Sequence[Any] | None
) -> dict[str, Callable[[], float]]:
    present = np.unique(y_true)
    labels = np.asarray(classes) if classes is not None else np.unique(np.concatenate([y_true, y_pred]))
    binary = len(labels) == 2

    def f1() -> float:
        if binary:
            # The positive class is the second label, as in predict_proba's column order.
            return skm.f1_score(y_true, y_pred, average="binary", pos_label=labels[1], zero_division=0)
        return skm.f1_score(y_true, y_pred, average="weighted", labels=labels, zero_division=0)

    candidates: dict[str, Callable[[], float]] = {
        "accuracy": lambda: skm.accuracy_score(y_true, y_pred),
        "balanced_accuracy": lambda: skm.balanced_accuracy_score(y_true, y_pred) if len(present) >= 2 else math.nan,
        "f1": f1,
    }
    if y_proba is not None:
        proba = np.asarray(y_proba, dtype=float)
        if proba.ndim == 1:
            proba = np.column_stack([1.0 - proba, proba])
        if proba.shape[1] != len(labels):
            raise ValueError(
                f"y_proba has {proba.shape[1]} columns but {len(labels)} classes are known; "
                "pass classes in predict_proba column order"
            )
        candidates["roc_auc"] = lambda: _roc_auc(y_true, proba, labels)
        candidates["log_loss"] = lambda: skm.log_loss(y_true, proba, labels=labels)
        candidates["brier"] = lambda: _brier(y_true, proba, labels)
    return candidates


def _brier(y_true: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    """Binary: mean squared error of the positive class's probability (0 best, 1 worst).
    Multiclass: mean over rows of the squared distance to the one-hot truth (0 best, 2 worst)."""
    if len(labels) == 2:
        return float(np.mean((proba[:, 1] - (y_true == labels[1])) ** 2))
    truth = (y_true[:, None] == labels[None, :]).astype(float)
    return float(np.mean(np.sum((proba - truth) ** 2, axis=1)))


def _roc_auc(y_true: np.ndarray, proba: np.ndarray, labels: np.ndarray) -> float:
    """Binary AUC of the positive column, or one-vs-rest AUC weighted by support."""
    if len(labels) == 2:
        return skm.roc_auc_score(y_true == labels[1], proba[:, 1]) if len(np.unique(y_true)) == 2 else math.nan
    # Computed per class so that a class absent from this sample (weight 0) does not
    # make the whole metric undefined, as sklearn's multiclass path would.
    scores, weights = [], []
    for column, label in enumerate(labels):
        positives = y_true == label
        support = int(positives.sum())
        if 0 < support < len(y_true):
            scores.append(skm.roc_auc_score(positives, proba[:, column]))
            weights.append(support)
    if len(scores) < 2:
        return math.nan
    return float(np.average(scores, weights=weights))


def _safely(compute: Callable[[], float]) -> float | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = float(compute())
        except ValueError:
            return None
    return value if math.isfinite(value) else None


def slice_labels(series: pd.Series) -> pd.Series:
    """The slice each row falls in: its value as text, or a quantile bin for many-valued numbers."""
    if (
        pd.api.types.is_numeric_dtype(series)
        and not pd.api.types.is_bool_dtype(series)
        and series.nunique(dropna=True) > _MAX_DISTINCT_BEFORE_BINNING
    ):
        bins = pd.qcut(series, q=_QUANTILE_BINS, duplicates="drop")
        labels = bins.astype(object).map(lambda v: MISSING_LABEL if pd.isna(v) else str(v))
    else:
        labels = series.astype(object).map(lambda v: MISSING_LABEL if pd.isna(v) else str(v))
    return labels.reset_index(drop=True)


def slice_metrics(
    task: str,
    frame: pd.DataFrame,
    slice_columns: Sequence[str],
    y_true: Any,
    y_pred: Any,
    y_proba: Any,
    metric: str,
    min_rows: int = 30,
    classes: Sequence[Any] | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per slice column and value: {"rows": n, "value": metric or None if too few rows/undefined}."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    proba = None if y_proba is None else np.asarray(y_proba)
    if len(frame) != len(y_true):
        raise ValueError(f"frame has {len(frame)} rows but y_true has {len(y_true)}")
    if task == "classification" and classes is None:
        classes = list(np.unique(np.concatenate([y_true, y_pred])))
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for column in slice_columns:
        if column not in frame.columns:
            raise ValueError(f"slice column {column!r} is not in the data")
        labels = slice_labels(frame[column]).to_numpy()
        per_value: dict[str, dict[str, Any]] = {}
        for label in sorted(set(labels)):
            mask = labels == label
            rows = int(mask.sum())
            value = None
            if rows >= min_rows:
                metrics = compute_metrics(
                    task,
                    y_true[mask],
                    y_pred[mask],
                    None if proba is None else proba[mask],
                    classes=classes,
                )
                value = metrics.get(metric)
            per_value[label] = {"rows": rows, "value": value}
        result[column] = per_value
    return result


def calibration(y_true: Any, y_proba: Any, classes: Sequence[Any], bins: int = 10) -> dict[str, Any]:
    """Reliability curve and expected calibration error (ECE) of predicted probabilities.

    Binary: the positive class's (``classes[1]``) probability against how often it occurred.
    Multiclass: the top class's probability (confidence) against how often the top class was right.
    The curve has one point per non-empty equal-width bin: mean predicted, observed frequency, rows.
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(y_proba, dtype=float)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    labels = np.asarray(classes)
    if len(labels) == 2:
        predicted, occurred = proba[:, 1], (y_true == labels[1]).astype(float)
    else:
        top = proba.argmax(axis=1)
        predicted, occurred = proba[np.arange(len(proba)), top], (labels[top] == y_true).astype(float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1], right=True), 0, bins - 1)
    curve, error = [], 0.0
    for index in range(bins):
        mask = which == index
        rows = int(mask.sum())
        if rows == 0:
            continue
        mean_predicted, observed = float(predicted[mask].mean()), float(occurred[mask].mean())
        error += rows / len(predicted) * abs(observed - mean_predicted)
        curve.append({"predicted": mean_predicted, "observed": observed, "rows": rows})
    return {"ece": float(error), "curve": curve}


def perturb(frame: pd.DataFrame, features: Sequence[str], *, seed: int, noise: float, swap_rate: float) -> pd.DataFrame:
    """A copy of ``frame`` with small, seeded changes to its features.

    Numeric features get Gaussian noise of ``noise`` times their standard deviation; categorical
    ones have a ``swap_rate`` share of their values replaced by another value seen in the column.
    Missing values stay missing.
    """
    rng = np.random.default_rng(seed)
    changed = frame.copy()
    for column in features:
        values = frame[column]
        present = values.notna().to_numpy()
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            spread = float(values.std(skipna=True)) if present.sum() > 1 else 0.0
            if not math.isfinite(spread) or spread == 0.0:
                continue
            shifted = values.to_numpy(dtype=float, na_value=np.nan) + rng.normal(0.0, noise * spread, len(values))
            changed[column] = np.where(present, shifted, np.nan)
        else:
            seen = values[present].unique()
            if len(seen) < 2:
                continue
            swap = present & (rng.random(len(values)) < swap_rate)
            replacement = seen[rng.integers(0, len(seen), int(swap.sum()))]
            column_values = values.to_numpy(dtype=object).copy()
            column_values[swap] = replacement
            changed[column] = column_values
    return changed


def fairness_gaps(
    frame: pd.DataFrame,
    slice_columns: Sequence[str],
    y_true: Any,
    y_pred: Any,
    positive: Any,
    min_rows: int = 30,
) -> dict[str, dict[str, Any]]:
    """Per slice column: each slice's positive-prediction rate and true-positive rate, and the largest gaps.

    Slices with fewer than ``min_rows`` rows (or, for the TPR, fewer than ``min_rows`` positives)
    are reported but left out of the gaps, so one tiny slice cannot decide them.
    """
    y_true = np.asarray(y_true) == positive
    y_pred = np.asarray(y_pred) == positive
    result: dict[str, dict[str, Any]] = {}
    for column in slice_columns:
        labels = slice_labels(frame[column]).to_numpy()
        positive_rate: dict[str, float] = {}
        tpr: dict[str, float | None] = {}
        rates, tprs = [], []
        for label in sorted(set(labels)):
            mask = labels == label
            positive_rate[label] = float(y_pred[mask].mean())
            actual = mask & y_true
            tpr[label] = float(y_pred[actual].mean()) if actual.sum() else None
            if mask.sum() >= min_rows:
                rates.append(positive_rate[label])
            if actual.sum() >= min_rows:
                tprs.append(y_pred[actual].mean())
        result[column] = {
            "positive_rate": positive_rate,
            "tpr": tpr,
            "positive_rate_gap": float(max(rates) - min(rates)) if len(rates) >= 2 else None,
            "tpr_gap": float(max(tprs) - min(tprs)) if len(tprs) >= 2 else None,
        }
    return result
