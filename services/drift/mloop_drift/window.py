"""One window of production traffic as columns: each feature once as a numpy array, never row by row again.

Rows arrive as JSON objects; `Window.from_rows` turns them into columns in one pass per feature
(pandas infers a column's type in C, so a clean numeric column never goes through Python per value).
Everything the detector measures is then computed on these arrays.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from mloop_common.profile import FeatureKind
from mloop_drift.stats import category_key, is_missing, present_mask

FloatArray = NDArray[np.float64]
ObjectArray = NDArray[np.object_]


@dataclass(frozen=True, eq=False)
class NumericColumn:
    """A numeric feature of a window.

    `values` are the finite numbers (number-like text included, so a distribution is still measured
    when a client sends numbers as text); `missing` counts nulls, NaN and absent keys; `wrong_type`
    counts present values that are not finite JSON numbers (text, booleans, lists, infinities);
    `absent` counts rows without the key at all.
    """

    values: FloatArray
    total: int
    missing: int
    wrong_type: int
    absent: int = 0


@dataclass(frozen=True, eq=False)
class CategoricalColumn:
    """A categorical feature of a window: one category key (or None when missing) per row."""

    keys: ObjectArray
    total: int
    missing: int
    absent: int = 0


Column = NumericColumn | CategoricalColumn


def numeric_column(values: Sequence[Any] | NDArray[Any], absent: int = 0) -> NumericColumn:
    """Split raw values into finite numbers and the counts of what is missing, mistyped or unusable."""
    total = len(values)
    series: pd.Series | None = None
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        array: FloatArray | None = values.astype(
            np.float64, copy=False
        )  # numbers already: no pandas round trip (large windows)
    else:
        series = values if isinstance(values, pd.Series) else pd.Series(values, dtype=_dtype_hint(values))
        numeric = pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)
        array = series.to_numpy(dtype=np.float64, na_value=np.nan) if numeric else None
    if array is not None:
        finite = np.isfinite(array)
        if finite.all():  # the usual case: no masks to count, no copy to make
            return NumericColumn(array, total, 0, 0, absent)
        nan = np.isnan(array)
        return NumericColumn(array[finite], total, int(nan.sum()), int((~finite & ~nan).sum()), absent)
    assert series is not None
    # Mixed or non-numeric column: the slow path, per value, only for columns that need it.
    numbers: list[float] = []
    missing = wrong_type = 0
    for value in series.tolist():
        if is_missing(value):
            missing += 1
            continue
        number = _as_float(value)
        if isinstance(value, bool | np.bool_) or not isinstance(value, Real) or number is None:
            wrong_type += 1
        elif not np.isfinite(number):
            wrong_type += 1
            continue
        if number is not None and np.isfinite(number):
            numbers.append(number)
    return NumericColumn(np.asarray(numbers, dtype=np.float64), total, missing, wrong_type, absent)


def _dtype_hint(values: Sequence[Any] | NDArray[Any]) -> Any:
    # An empty list would otherwise become float64 with a pandas warning about the default dtype.
    return object if len(values) == 0 else None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool | np.bool_):
        return float(value)
    if isinstance(value, Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def categorical_column(values: Sequence[Any] | NDArray[Any], absent: int = 0) -> CategoricalColumn:
    """Category keys of raw values (1, 1.0 and "1" agree); each distinct raw value is keyed once."""
    array = np.empty(len(values), dtype=object)
    array[:] = list(values) if not isinstance(values, np.ndarray) else values
    try:
        codes, uniques = pd.factorize(array, use_na_sentinel=True)
    except TypeError:  # unhashable values (lists, objects): key them one by one
        keys = np.array([category_key(v) for v in array], dtype=object)
    else:
        unique_keys = np.array([category_key(v) for v in uniques] + [None], dtype=object)
        keys = unique_keys[codes]  # code -1 (missing) picks the trailing None
    missing = int(keys.size - present_mask(keys).sum())
    return CategoricalColumn(keys, len(keys), missing, absent)


def column_of(kind: FeatureKind, values: Sequence[Any] | NDArray[Any], absent: int = 0) -> Column:
    """A numeric or categorical column of raw values."""
    return numeric_column(values, absent) if kind == "numeric" else categorical_column(values, absent)


@dataclass(frozen=True, eq=False)
class Window:
    """A window's features, predictions, labels and class probabilities as aligned columns.

    `labels` holds None where feedback has not arrived; `probabilities` is n x classes with NaN rows
    where a prediction carried none; `label_delays` is seconds from prediction to label (NaN unlabelled).
    """

    n: int
    features: Mapping[str, Column]
    predictions: ObjectArray
    labels: ObjectArray | None = None
    probabilities: FloatArray | None = None
    label_delays: FloatArray | None = None

    @classmethod
    def from_rows(
        cls,
        kinds: Mapping[str, FeatureKind],
        rows: Sequence[Mapping[str, Any]],
        predictions: Sequence[Any],
        labels: Sequence[Any] | None = None,
        probabilities: Sequence[Sequence[float] | None] | None = None,
        label_delays: Sequence[float | None] | None = None,
    ) -> Window:
        """Columns of the named features from rows of JSON objects; a key a row lacks counts as absent."""
        n = len(rows)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ValueError(f"row {i} is {type(row).__name__}, expected an object of feature values")
        for what, values in (("predictions", predictions), ("labels", labels), ("probabilities", probabilities)):
            if values is not None and len(values) != n:
                raise ValueError(f"{what} has {len(values)} entries for {n} rows")
        features: dict[str, Column] = {}
        for name, kind in kinds.items():
            values = [row.get(name) for row in rows]
            column = column_of(kind, values)
            if column.missing:
                # Only columns with gaps pay for telling an absent key from an explicit null.
                absent = sum(1 for row in rows if name not in row)
                column = column_of(kind, values, absent) if absent else column
            features[name] = column
        return cls(
            n=n,
            features=features,
            predictions=_objects(predictions),
            labels=None if labels is None else _objects(labels),
            probabilities=None if probabilities is None else probability_matrix(probabilities),
            label_delays=None
            if label_delays is None
            else np.array([np.nan if d is None else d for d in label_delays], dtype=np.float64),
        )


def _objects(values: Sequence[Any]) -> ObjectArray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values)
    return array


def probability_matrix(rows: Sequence[Sequence[float] | None]) -> FloatArray:
    """An n x k float matrix of probability vectors; a missing or malformed vector becomes a NaN row.

    k is the most common vector length; vectors of another length, or with entries that are not
    finite numbers in [0, 1], are malformed.
    """
    lengths = [len(v) for v in rows if isinstance(v, list | tuple | np.ndarray)]
    if not lengths:
        return np.full((len(rows), 0), np.nan)
    width = int(np.bincount(lengths).argmax())
    matrix = np.full((len(rows), width), np.nan)
    shaped = [
        i for i, vector in enumerate(rows) if isinstance(vector, list | tuple | np.ndarray) and len(vector) == width
    ]
    if not shaped:
        return matrix
    try:  # one conversion for the whole window; vector by vector only when some entry is not a number
        block = np.array([rows[i] for i in shaped], dtype=np.float64).reshape(len(shaped), width)
    except (TypeError, ValueError):
        block = np.full((len(shaped), width), np.nan)
        for j, i in enumerate(shaped):
            with contextlib.suppress(TypeError, ValueError):
                block[j] = np.asarray(rows[i], dtype=np.float64)
    valid = np.isfinite(block).all(axis=1) & ((block >= 0) & (block <= 1)).all(axis=1)
    block[~valid] = np.nan
    matrix[shaped] = block
    return matrix


def event_time(inputs: Mapping[str, Any], time_column: str | None, logged_at: datetime) -> datetime:
    """When a predicted event happened: the request's time column (an ISO 8601 date or timestamp; a
    naive one is UTC), else the time the prediction was logged."""
    value = inputs.get(time_column) if time_column else None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return logged_at
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return logged_at


def time_window(at: datetime, seconds: int) -> int:
    """The index of the event-time window holding ``at``: windows of ``seconds`` counted from the Unix epoch."""
    return int(at.timestamp() // seconds)


@dataclass(frozen=True)
class CountPlacement:
    """Where arriving predictions go in count windows: one window index per prediction, in arrival order."""

    indexes: list[int]
    complete: list[int]  # windows these predictions filled, oldest first
    next_window: int  # the window still filling after them
    filled: int  # predictions already in it


def place_by_count(next_window: int, filled: int, size: int, arriving: int) -> CountPlacement:
    """Fill window ``next_window`` (holding ``filled`` predictions) and those after it, ``size`` each, with
    ``arriving`` predictions: a window is complete the moment its last prediction is placed."""
    if not 0 <= filled < size:
        raise ValueError(f"a window of {size} predictions cannot already hold {filled}")
    indexes: list[int] = []
    complete: list[int] = []
    index = next_window
    while arriving:
        take = min(size - filled, arriving)
        indexes.extend([index] * take)
        filled += take
        arriving -= take
        if filled == size:
            complete.append(index)
            index, filled = index + 1, 0
    return CountPlacement(indexes, complete, index, filled)
