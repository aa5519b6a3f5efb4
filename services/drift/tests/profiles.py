"""Typed reference-profile entries for tests, built the way the trainer builds them."""

from __future__ import annotations

from typing import Any

import numpy as np

from mloop_common.profile import CategoricalProfile, NumericProfile


def numeric_entry(values: np.ndarray, missing_rate: float = 0.0) -> NumericProfile:
    """A profile entry built the way the trainer builds one: decile edges, end-clipped bin shares."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, 11)))
    bins = np.searchsorted(edges[1:-1], values, side="right")
    return NumericProfile(
        missing_rate=missing_rate,
        min=float(values.min()),
        max=float(values.max()),
        mean=float(values.mean()),
        std=float(values.std()),
        bin_edges=edges.tolist(),
        bin_fractions=(np.bincount(bins, minlength=edges.size - 1) / values.size).tolist(),
        sample=values[:1000].tolist(),
    )


def numeric(**fields: Any) -> NumericProfile:
    """A numeric entry with only ``fields`` set; the rest describe nothing (one bin, no sample, no moments)."""
    blank: dict[str, Any] = {
        "missing_rate": 0.0,
        "min": None,
        "max": None,
        "mean": None,
        "std": None,
        "bin_edges": [0.0, 1.0],
        "bin_fractions": [1.0],
        "sample": [],
    }
    return NumericProfile(**{**blank, **fields})


def categorical_entry(shares: dict[str, float], missing_rate: float = 0.0) -> CategoricalProfile:
    return CategoricalProfile(missing_rate=missing_rate, frequencies=dict(shares))
