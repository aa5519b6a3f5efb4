"""Comparing a run with its reproduction: same inputs in, are the same model and numbers out?

Pure: the caller retrains and predicts; this decides what matches and names what differs.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

TOLERANCE = 1e-9

Outcome = Literal["identical", "within_tolerance", "different"]


class Difference(BaseModel):
    """One thing that is not the same the second time: an input (why) or an output (what)."""

    kind: Literal["input", "output"]
    name: str  # e.g. library.scikit-learn, code_version, cv_score, holdout.accuracy, predictions
    recorded: Any
    reproduced: Any


class Reproduction(BaseModel):
    """The verdict of ``mloop runs reproduce``."""

    run_id: str
    matches: bool  # every output identical or within TOLERANCE
    predictions: Outcome
    max_prediction_difference: float | None  # largest absolute difference (numbers and probabilities)
    rows_compared: int
    differences: list[Difference]
    seconds: float


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE)


def compare_predictions(recorded: Any, reproduced: Any) -> tuple[Outcome, float | None]:
    """Outputs of the recorded and the reproduced model on the same rows (labels, numbers or probabilities)."""
    first, second = np.asarray(recorded), np.asarray(reproduced)
    if first.shape != second.shape:
        return "different", None
    if np.array_equal(first, second):
        return "identical", 0.0
    if first.dtype.kind in "fiu" and second.dtype.kind in "fiu":
        gap = float(np.max(np.abs(first.astype(float) - second.astype(float))))
        return ("within_tolerance" if gap <= TOLERANCE else "different"), gap
    return "different", None


def differences(
    recorded_inputs: dict[str, Any],
    reproduced_inputs: dict[str, Any],
    recorded: dict[str, Any],
    reproduced: dict[str, Any],
) -> list[Difference]:
    """Inputs that differ (library and code versions: they explain output differences), then outputs."""
    found = [
        Difference(kind="input", name=name, recorded=recorded_inputs.get(name), reproduced=reproduced_inputs.get(name))
        for name in sorted(set(recorded_inputs) | set(reproduced_inputs))
        if recorded_inputs.get(name) != reproduced_inputs.get(name)
    ]
    for name in sorted(set(recorded) | set(reproduced)):
        before, after = recorded.get(name), reproduced.get(name)
        same = (
            _close(before, after)
            if isinstance(before, float | int | None) and isinstance(after, float | int | None)
            else before == after
        )
        if not same:
            found.append(Difference(kind="output", name=name, recorded=before, reproduced=after))
    return found


def outputs_of(report: Any) -> dict[str, Any]:
    """The numbers and choices a fit produced, flat, for comparison."""
    flat: dict[str, Any] = {
        "estimator_class": report.estimator_class,
        "params": report.params,
        "cv_score": report.cv_score,
        "train_rows": report.train_rows,
        "holdout_rows": report.holdout_rows,
        "features": report.features,
    }
    flat.update({f"holdout.{name}": value for name, value in report.holdout_metrics.items()})
    return flat


def inputs_of(library_versions: dict[str, str], code_version: str | None) -> dict[str, Any]:
    return {**{f"library.{name}": version for name, version in library_versions.items()}, "code_version": code_version}
