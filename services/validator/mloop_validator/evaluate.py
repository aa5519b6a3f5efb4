"""Scoring one model on the held-out data (no I/O; runs in a worker thread)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from mloop_common.evaluation import compute_metrics, slice_metrics


def score_model(
    model: Any, holdout: pd.DataFrame, *, features: list[str], target: str, task: str, metric: str, slices: list[str]
) -> tuple[dict[str, float], dict[str, Any]]:
    """All metrics of ``task`` on the holdout, plus per-slice values of the primary metric."""
    missing = [f for f in features if f not in holdout.columns]
    if missing:
        raise ValueError(f"holdout lacks the model's features {missing}")
    frame = holdout[holdout[target].notna()]
    x, y = frame[features], frame[target]
    predictions = model.predict(x)
    probabilities = model.predict_proba(x) if task == "classification" and hasattr(model, "predict_proba") else None
    classes = list(getattr(model, "classes_", [])) or None
    metrics = compute_metrics(task, y, predictions, probabilities, classes=classes)
    per_slice = (
        slice_metrics(task, frame, [s for s in slices if s in frame.columns], y, predictions, probabilities, metric)
        if slices
        else {}
    )
    return metrics, per_slice
