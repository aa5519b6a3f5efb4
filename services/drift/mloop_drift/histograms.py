"""Reference against current, per feature, for one window: what a person looks at to see a shift (pure).

Numeric features use the reference profile's bins (its deciles over the training data, so each holds about a
tenth of the reference); current values below the first edge or above the last get bins of their own, since
a season the model never saw shows up exactly there. Categorical features use the reference's categories and
add the current ones it never saw. Fractions are over non-missing values; missing values are counted apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from mloop_common.profile import OTHER_CATEGORY, CategoricalProfile, NumericProfile, ReferenceProfile

MAX_CURRENT_CATEGORIES = 50


class Histogram(BaseModel):
    kind: Literal["numeric", "categorical"]
    bins: list[str]  # labels, in order
    reference: list[float]
    current: list[float]
    current_missing: float  # share of the window's rows with no usable value
    current_values: int  # non-missing values the current fractions are over


class WindowHistograms(BaseModel):
    model: str
    version: int
    window_index: int
    rows: int  # the window's rows still kept (none once retention removed them)
    features: dict[str, Histogram]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _label(low: float, high: float) -> str:
    return f"{low:.4g} to {high:.4g}"


def numeric_histogram(profile: NumericProfile, values: Sequence[Any]) -> Histogram:
    edges = profile.bin_edges
    numbers = np.array([n for v in values if (n := _number(v)) is not None], dtype=float)
    missing = (len(values) - len(numbers)) / len(values) if values else 0.0
    if len(edges) < 2:  # a constant (or empty) training column: one bin
        at_value = float(np.mean(numbers == edges[0])) if len(numbers) and edges else 0.0
        label = f"{edges[0]:.4g}" if edges else "(no values)"
        return Histogram(
            kind="numeric",
            bins=[label],
            reference=[1.0 if edges else 0.0],
            current=[at_value],
            current_missing=missing,
            current_values=len(numbers),
        )
    labels = [_label(low, high) for low, high in zip(edges[:-1], edges[1:], strict=True)]
    reference = list(profile.bin_fractions)
    current = [0.0] * len(labels)
    below = above = 0.0
    if len(numbers):
        inside = numbers[(numbers >= edges[0]) & (numbers <= edges[-1])]
        # Binned as the trainer binned the reference: by the inner edges, each bin closed on its left.
        counts = np.bincount(np.searchsorted(edges[1:-1], inside, side="right"), minlength=len(labels))
        current = [float(c) / len(numbers) for c in counts]
        below = float(np.mean(numbers < edges[0]))
        above = float(np.mean(numbers > edges[-1]))
    if below:
        labels, reference, current = [f"below {edges[0]:.4g}", *labels], [0.0, *reference], [below, *current]
    if above:
        labels, reference, current = [*labels, f"above {edges[-1]:.4g}"], [*reference, 0.0], [*current, above]
    return Histogram(
        kind="numeric",
        bins=labels,
        reference=reference,
        current=current,
        current_missing=missing,
        current_values=len(numbers),
    )


def categorical_histogram(profile: CategoricalProfile, values: Sequence[Any]) -> Histogram:
    present = [str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    missing = (len(values) - len(present)) / len(values) if values else 0.0
    counts = Counter(present)
    known = list(profile.frequencies)
    unseen = [c for c, _ in counts.most_common() if c not in profile.frequencies][:MAX_CURRENT_CATEGORIES]
    # Categories past the reference's most frequent ones were merged into __other__ there: do the same here.
    other = sum(n for c, n in counts.items() if c not in profile.frequencies and c not in unseen)
    bins = known + unseen
    total = len(present) or 1
    current = [(counts.get(c, 0) + (other if c == OTHER_CATEGORY else 0)) / total for c in known]
    current += [counts[c] / total for c in unseen]
    reference = [profile.frequencies[c] for c in known] + [0.0] * len(unseen)
    return Histogram(
        kind="categorical",
        bins=bins,
        reference=reference,
        current=current,
        current_missing=missing,
        current_values=len(present),
    )


def window_histograms(
    model: str,
    version: int,
    window_index: int,
    profile: ReferenceProfile,
    rows: Iterable[Mapping[str, Any] | None],
) -> WindowHistograms:
    """Every profiled feature's histogram over the window's inputs (``rows``: each prediction's inputs)."""
    inputs = [row or {} for row in rows]
    features: dict[str, Histogram] = {}
    for name, feature in profile.features.items():
        values = [row.get(name) for row in inputs]
        if isinstance(feature, NumericProfile):
            features[name] = numeric_histogram(feature, values)
        else:
            features[name] = categorical_histogram(feature, values)
    return WindowHistograms(
        model=model, version=version, window_index=window_index, rows=len(inputs), features=features
    )
