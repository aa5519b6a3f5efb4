"""Measuring one model on the held-out data (no I/O; runs in a worker thread).

Both candidate and champion are scored the same way on the same rows; the candidate alone is also
probed: robustness under seeded perturbations, calibration, fairness gaps over the declared slices
and its prediction latency.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import pandas as pd

from mloop_common.evaluation import calibration, compute_metrics, fairness_gaps, perturb, slice_metrics
from mloop_common.spec import PromotionPolicy

# Perturbation rounds (each with its own seed) whose flip rates and metric changes are averaged.
_ROUNDS = 3
# Timed single-row predictions (enough for a 99th percentile) and 1,000-row batches.
_SINGLE_ROWS = 200
_BATCHES = 5
_BATCH = 1000


def labelled(holdout: pd.DataFrame, target: str, features: list[str]) -> pd.DataFrame:
    """The holdout rows that have a label; ValueError when the model's features are not all there."""
    missing = [f for f in features if f not in holdout.columns]
    if missing:
        raise ValueError(f"holdout lacks the model's features {missing}")
    return holdout[holdout[target].notna()]


def unusable_evaluation_set(frame: pd.DataFrame, features: list[str], target: str) -> str | None:
    """Why a pinned evaluation set cannot measure a model of ``features`` and ``target``; None when it can."""
    missing = [column for column in (*features, target) if column not in frame.columns]
    if missing:
        return f"it lacks the column(s) {', '.join(missing)} of the model's features and target"
    if not frame[target].notna().any():
        return f"none of its {len(frame)} rows has a label ({target})"
    return None


def _probabilities(model: Any, x: pd.DataFrame, task: str) -> Any:
    return model.predict_proba(x) if task == "classification" and hasattr(model, "predict_proba") else None


def score_model(
    model: Any, holdout: pd.DataFrame, *, features: list[str], target: str, task: str, metric: str, slices: list[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """All metrics of ``task`` on the holdout, plus per-slice values of the primary metric."""
    frame = labelled(holdout, target, features)
    x, y = frame[features], frame[target]
    predictions = model.predict(x)
    probabilities = _probabilities(model, x, task)
    classes = list(getattr(model, "classes_", [])) or None
    metrics = compute_metrics(task, y, predictions, probabilities, classes=classes)
    per_slice = (
        slice_metrics(task, frame, [s for s in slices if s in frame.columns], y, predictions, probabilities, metric)
        if slices
        else {}
    )
    return metrics, per_slice


def probe_candidate(
    model: Any,
    holdout: pd.DataFrame,
    *,
    features: list[str],
    target: str,
    task: str,
    metric: str,
    policy: PromotionPolicy,
    seed: int,
) -> dict[str, Any]:
    """The candidate's report beyond its metrics: robustness, calibration, fairness and latency."""
    frame = labelled(holdout, target, features)
    x, y = frame[features], frame[target]
    predictions = model.predict(x)
    probabilities = _probabilities(model, x, task)
    classes = list(getattr(model, "classes_", [])) or None
    report: dict[str, Any] = {"robustness": _robustness(model, frame, y, features, task, metric, policy, seed)}
    if probabilities is not None and classes is not None:
        report["calibration"] = calibration(y, probabilities, classes)
    slices = [s for s in policy.slices if s in frame.columns]
    if task == "classification" and classes is not None and len(classes) == 2 and slices:
        report["fairness"] = fairness_gaps(frame, slices, y, predictions, positive=classes[1])
    report["latency"] = _latency(model, x)
    return report


def _robustness(
    model: Any,
    frame: pd.DataFrame,
    y: pd.Series,
    features: list[str],
    task: str,
    metric: str,
    policy: PromotionPolicy,
    seed: int,
) -> dict[str, Any]:
    """Flip rate (classifiers) and primary-metric change under seeded perturbations of the features."""
    predictions = model.predict(frame[features])
    classes = list(getattr(model, "classes_", [])) or None
    clean = compute_metrics(task, y, predictions, _probabilities(model, frame[features], task), classes=classes)
    flips, changes = [], []
    for round_ in range(_ROUNDS):
        x = perturb(
            frame[features],
            features,
            seed=seed + round_,
            noise=policy.perturbation_noise,
            swap_rate=policy.perturbation_swap_rate,
        )
        moved = model.predict(x)
        if task == "classification":
            flips.append(float((moved != predictions).mean()))
        shaken = compute_metrics(task, y, moved, _probabilities(model, x, task), classes=classes)
        if metric in shaken and metric in clean:
            changes.append(shaken[metric] - clean[metric])
    return {
        "noise": policy.perturbation_noise,
        "swap_rate": policy.perturbation_swap_rate,
        "rounds": _ROUNDS,
        "flip_rate": statistics.fmean(flips) if flips else None,
        f"clean_{metric}": clean.get(metric),
        # Perturbed minus clean, averaged over the rounds (negative: a score got worse).
        "metric_change": statistics.fmean(changes) if changes else None,
    }


def _latency(model: Any, x: pd.DataFrame) -> dict[str, Any]:
    """Per-row prediction latency in milliseconds at batch sizes 1 and 1,000: median and 99th percentile."""
    singles = []
    for index in range(_SINGLE_ROWS):
        row = x.iloc[[index % len(x)]]
        started = time.perf_counter()
        model.predict(row)
        singles.append((time.perf_counter() - started) * 1000)
    batch = x.sample(n=_BATCH, replace=True, random_state=0) if len(x) else x
    per_row = []
    for _ in range(_BATCHES):
        started = time.perf_counter()
        model.predict(batch)
        per_row.append((time.perf_counter() - started) * 1000 / max(len(batch), 1))
    return {"batch_1": _summary(singles), f"batch_{_BATCH}": _summary(per_row)}


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"median_ms": statistics.median(ordered), "p99_ms": p99, "samples": len(ordered)}
