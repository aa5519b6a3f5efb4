"""The reference profile: a compact, JSON-ready summary of training data that drift is measured against.

The trainer writes one per model version (``ReferenceProfile``, schema_version 1); drift
measures production windows against it and serving reads feature kinds and warm-up values from it.

Missing means NaN/None (and, for numbers, +-inf). Fractions in bin_fractions and
frequencies are over non-missing values; missing_rate is over all rows. Categories are
keyed by str(value); categories beyond the 50 most frequent are merged into "__other__".
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from mloop_common.datacontract import DatasetContract

SCHEMA_VERSION: Final = 1
OTHER_CATEGORY = "__other__"
MAX_CATEGORIES = 50
N_BINS = 10
MAX_EVALUATION_ROWS = 5000

FeatureKind = Literal["numeric", "categorical"]


class _Entry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NumericProfile(_Entry):
    """A numeric column: range, moments, decile histogram and a sample (all over non-missing values)."""

    kind: Literal["numeric"] = "numeric"
    missing_rate: float
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    bin_edges: list[float]
    bin_fractions: list[float]
    sample: list[float]


class CategoricalProfile(_Entry):
    """A categorical column: the share of each of its most frequent categories."""

    kind: Literal["categorical"] = "categorical"
    missing_rate: float
    frequencies: dict[str, float]


FeatureProfile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]


class EvaluationSet(_Entry):
    """A classifier's held-out class probabilities with the true labels (at most MAX_EVALUATION_ROWS of them).

    Drift calibrates its label-free performance estimate on them and measures the baseline on them
    with the validator's metric code. Classes and labels are keyed by `class_key`.
    """

    classes: list[str]  # predict_proba column order
    probabilities: list[list[float]]
    labels: list[str]


class ReferenceProfile(_Entry):
    """What a model version was trained on, in the shape drift is measured against and serving warms with.

    Fields added after schema_version 1 are optional, so profiles stored before them still load.
    """

    schema_version: Literal[1] = SCHEMA_VERSION
    rows: int
    features: dict[str, FeatureProfile]
    prediction: FeatureProfile | None = None
    evaluation: EvaluationSet | None = None
    # The training dataset's schema contract (ingest): what the publisher declared is drift's data-quality bar.
    contract: DatasetContract | None = None

    def kind_of(self, feature: str) -> FeatureKind:
        """The kind of a feature; one the profile does not describe counts as numeric."""
        entry = self.features.get(feature)
        return entry.kind if entry is not None else "numeric"

    def to_json(self) -> bytes:
        """Canonical JSON bytes (sorted keys), so equal profiles store as one content-addressed artifact."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> ReferenceProfile:
        return cls.model_validate_json(data)


def feature_kind(series: pd.Series) -> FeatureKind:
    """ "numeric" for int/float columns, "categorical" for text, category, bool and anything else."""
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "numeric"


def histogram_fractions(values: Any, bin_edges: list[float]) -> list[float]:
    """Fraction of values per bin; values outside the edges count in the end bins, NaN/inf are ignored."""
    array = np.asarray(values, dtype=float)
    array = array[np.isfinite(array)]
    edges = np.asarray(bin_edges, dtype=float)
    if array.size == 0:
        return [0.0] * (len(edges) - 1)
    counts, _ = np.histogram(np.clip(array, edges[0], edges[-1]), bins=edges)
    return [float(c) / array.size for c in counts]


def category_frequencies(series: pd.Series, max_categories: int = MAX_CATEGORIES) -> dict[str, float]:
    """Fraction of non-missing values per str(category); the tail beyond max_categories is "__other__"."""
    present = series[series.notna()]
    if present.empty:
        return {}
    counts = present.astype(object).map(str).value_counts()
    # value_counts ties come out in arbitrary order; sort so the profile is reproducible.
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    top = ordered[:max_categories]
    frequencies = {str(name): int(count) / len(present) for name, count in top}
    rest = sum(int(count) for _, count in ordered[max_categories:])
    if rest:
        frequencies[OTHER_CATEGORY] = frequencies.get(OTHER_CATEGORY, 0.0) + rest / len(present)
    return frequencies


def profile_entry(
    series: pd.Series,
    kind: FeatureKind | None = None,
    sample_size: int = 1000,
    seed: int = 0,
) -> NumericProfile | CategoricalProfile:
    """Profile one column as a numeric or categorical entry (kind inferred unless given)."""
    kind = kind or feature_kind(series)
    rows = len(series)
    if kind == "categorical":
        missing = int(series.isna().sum())
        return CategoricalProfile(
            missing_rate=missing / rows if rows else 0.0, frequencies=category_frequencies(series)
        )
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        # Nothing to describe; edges still form one bin so readers need no special case.
        edges = [0.0, 1.0]
        low = high = mean = std = None
    else:
        edges = _decile_edges(finite)
        low, high = float(finite.min()), float(finite.max())
        mean, std = float(finite.mean()), float(finite.std())
    return NumericProfile(
        missing_rate=(rows - finite.size) / rows if rows else 0.0,
        min=low,
        max=high,
        mean=mean,
        std=std,
        bin_edges=edges,
        bin_fractions=histogram_fractions(finite, edges),
        sample=_sample(finite, sample_size, seed),
    )


def _decile_edges(finite: np.ndarray) -> list[float]:
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, N_BINS + 1)))
    if edges.size < 2:
        # A constant column: one bin around the value, so later values can fall outside it.
        value = float(edges[0])
        half_width = max(abs(value) * 1e-6, 0.5)
        return [value - half_width, value + half_width]
    return [float(e) for e in edges]


def _sample(finite: np.ndarray, sample_size: int, seed: int) -> list[float]:
    if finite.size <= sample_size:
        chosen = finite
    else:
        chosen = np.random.default_rng(seed).choice(finite, size=sample_size, replace=False)
    return [float(v) for v in chosen]


def build_reference_profile(
    frame: pd.DataFrame,
    features: list[str],
    predictions: Any = None,
    sample_size: int = 1000,
    seed: int = 0,
    task: str | None = None,
) -> ReferenceProfile:
    """The reference profile of the training features (and predictions)."""
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise ValueError(f"columns not in the data: {', '.join(missing)}")
    prediction = None
    if predictions is not None:
        prediction_series = pd.Series(np.asarray(predictions), name="prediction")
        if len(prediction_series) != len(frame):
            raise ValueError(f"{len(prediction_series)} predictions for {len(frame)} rows")
        # A classifier's outputs are labels even when they look like numbers (0/1).
        kind: FeatureKind | None = "categorical" if task == "classification" else None
        prediction = profile_entry(prediction_series, kind=kind, sample_size=sample_size, seed=seed)
    return ReferenceProfile(
        rows=len(frame),
        features={name: profile_entry(frame[name], sample_size=sample_size, seed=seed) for name in features},
        prediction=prediction,
    )


def class_key(value: Any) -> str:
    """The text a class label is stored under: integral numbers without ".0", so 1, 1.0 and "1" agree."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def evaluation_set(
    classes: Any, labels: Any, probabilities: Any, max_rows: int = MAX_EVALUATION_ROWS, seed: int = 0
) -> EvaluationSet:
    """A classifier's held-out probabilities and labels, sampled down to ``max_rows`` rows."""
    proba = np.asarray(probabilities, dtype=float)
    truth = np.asarray(labels, dtype=object)
    class_list = list(classes)
    if proba.ndim != 2 or proba.shape[1] != len(class_list):
        raise ValueError(f"probabilities of shape {proba.shape} do not match {len(class_list)} classes")
    if proba.shape[0] != truth.size:
        raise ValueError(f"{proba.shape[0]} probability rows for {truth.size} labels")
    if truth.size > max_rows:
        chosen = np.sort(np.random.default_rng(seed).choice(truth.size, size=max_rows, replace=False))
        proba, truth = proba[chosen], truth[chosen]
    return EvaluationSet(
        classes=[class_key(c) for c in class_list],
        probabilities=np.round(proba, 6).tolist(),
        labels=[class_key(v) for v in truth],
    )
