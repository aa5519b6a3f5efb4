"""Facts about a table, computed column by column in one pass, that the checks, the contract and the profile read.

Every column is visited once: numeric and datetime columns are sorted once (quantiles, distinct count,
outlier and range counts by binary search), text and boolean columns are factorised once (counts,
categories). Each visit also adds the column to a row hash (for exact duplicates) and measures it on
both sides of the split the trainer will make. Columns are independent, so two run at once: NumPy
sorts and Arrow factorisation release the GIL.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import Any

import pandas as pd

from mloop_common.datacontract import Declared
from mloop_ingest.reading import ColumnType, arrow_type, column_type, numeric_values

EXAMPLES = 3  # example row numbers kept per finding
CLASS_LIMIT = 1000  # a target with more distinct values than this is not a class label
NUMERIC_CLASS_LIMIT = 20  # a numeric target with at most this many distinct values is a class label (0/1)
TOP = 10
TRAIN, HOLDOUT, UNUSED = 0, 1, -1
_M1, _M2, _GOLDEN = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0x9E3779B97F4A7C15
# A NumPy array, as pandas hands them out. Ingest declares pandas, not NumPy, so it uses the arrays'
# methods and never imports numpy (pandas is untyped for mypy, so these are Any either way).
Array = Any


@dataclass(frozen=True)
class SplitPlan:
    """The trainer's split: per row TRAIN, HOLDOUT or UNUSED (no label), and how it was made."""

    side: Array
    how: str

    @cached_property
    def train(self) -> Array:
        return self.side == TRAIN

    @cached_property
    def holdout(self) -> Array:
        return self.side == HOLDOUT


@dataclass
class ColumnFacts:
    name: str
    type: ColumnType
    arrow_type: str
    rows: int
    missing: int
    distinct: int
    mean: float | None = None
    std: float | None = None
    min: float | None = None
    max: float | None = None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None
    outliers: int = 0
    outlier_examples: list[int] = field(default_factory=list)
    out_of_range: int = 0
    out_of_range_examples: list[int] = field(default_factory=list)
    missing_examples: list[int] = field(default_factory=list)
    counts: dict[str, int] | None = None  # every value's count (categories, class labels), else None
    top: dict[str, int] = field(default_factory=dict)
    # The column on the two sides of the split: standardised mean difference (numeric) or total variation
    # distance of the category shares (categorical); None when not comparable.
    split_difference: float | None = None
    split_detail: str = ""

    @property
    def missing_rate(self) -> float:
        return self.missing / self.rows if self.rows else 0.0


@dataclass(frozen=True)
class TimeFacts:
    column: str
    parseable: bool
    missing: int
    unsorted_at: int | None  # first row whose time is earlier than the row before it


@dataclass
class TableFacts:
    rows: int
    columns: dict[str, ColumnFacts]
    target: str
    duplicate_rows: int = 0
    duplicate_examples: list[int] = field(default_factory=list)
    declared_columns: set[str] = field(default_factory=set)
    non_nullable: set[str] = field(default_factory=set)  # declared so
    id_column: str | None = None
    duplicate_ids: int = 0
    duplicate_id_examples: list[int] = field(default_factory=list)
    time: TimeFacts | None = None
    labels: dict[str, int] | None = None  # the target's class counts (None: a continuous target)
    split_how: str = ""
    split_labels: tuple[dict[str, int], dict[str, int]] | None = None  # (train, held-out) class counts
    split_rows: tuple[int, int] = (0, 0)


def _splitmix(values: Array, salt: int) -> Array:
    """SplitMix64's finaliser over uint64 values (wrapping arithmetic), salted by the column's position.

    In place after the first step: one column-sized temporary at a time.
    """
    z = values ^ (salt * _GOLDEN % 2**64)
    z ^= z >> 30
    z *= _M1
    z ^= z >> 27
    z *= _M2
    z ^= z >> 31
    return z


def _label(value: object) -> str:
    """A class label as text, the same for 1, 1.0 and "1" across CSV and Parquet versions."""
    if isinstance(value, float) and value.is_integer():  # NumPy's float64 is a float
        return str(int(value))
    return str(value)


def _examples(mask: Array) -> list[int]:
    return [int(i) for i in mask.nonzero()[0][:EXAMPLES]]


def _quantile(ordered: Array, share: float) -> float:
    """Linear interpolation between the closest ranks of a sorted array (NumPy's default method)."""
    rank = (len(ordered) - 1) * share
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (rank - low) * (ordered[high] - ordered[low]))


def _bincount(codes: Array, size: int) -> Array:
    """Count of each code 0..size-1 (codes are factorisation codes, -1 excluded beforehand)."""
    counts = pd.Series(codes).value_counts(sort=False).reindex(range(size), fill_value=0)
    return counts.to_numpy()


def _number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def time_values(series: pd.Series) -> Array | None:
    """The time column as sortable float64 (NaN missing), or None if it holds neither numbers nor times."""
    kind = column_type(series)
    if kind in ("numeric", "datetime"):
        return numeric_values(series)
    if kind == "string":
        parsed = pd.to_datetime(series.astype(object), utc=True, errors="coerce", format="ISO8601")
        if parsed.notna().sum() < series.notna().sum():
            return None
        return numeric_values(pd.Series(parsed))
    return None


def plan_split(
    frame: pd.DataFrame, target: str, time_column: str | None, holdout: float, seed: int
) -> tuple[SplitPlan, TimeFacts | None]:
    """The split the trainer makes: the newest rows held out with a time column, else a seeded stratified draw.

    Rows without a label take no side (the trainer drops them). With a time column, rows without a time
    count as the oldest, as in the trainer.
    """
    labelled = frame[target].notna().to_numpy()
    side = pd.Series(UNUSED, index=range(len(frame)), dtype="int8").to_numpy(copy=True)
    positions = labelled.nonzero()[0]
    n_holdout = max(1, round(len(positions) * holdout)) if len(positions) > 1 else 0
    time_facts = None
    times = time_values(frame[time_column]) if time_column is not None else None
    if time_column is not None:
        missing = int(frame[time_column].isna().sum())
        unsorted_at = None
        if times is not None:
            present = (~pd.isna(times)).nonzero()[0]
            kept = times[present]
            backwards = (kept[1:] < kept[:-1]).nonzero()[0]
            unsorted_at = int(present[backwards[0] + 1]) if len(backwards) else None
        time_facts = TimeFacts(time_column, times is not None, missing, unsorted_at)
    if times is not None:
        keyed = times[positions].copy()
        keyed[pd.isna(keyed)] = -math.inf
        ordered = positions[keyed.argsort(kind="stable")]
        side[ordered[: len(ordered) - n_holdout]] = TRAIN
        side[ordered[len(ordered) - n_holdout :]] = HOLDOUT
        how = f"the newest {holdout:.0%} of labelled rows by {time_column!r} held out"
        return SplitPlan(side, how), time_facts
    side[positions] = TRAIN
    codes, uniques = frame[target].factorize()
    labelled_codes = pd.Series(positions, index=codes[positions])
    if len(uniques) <= CLASS_LIMIT:  # stratified, as the trainer does for class labels
        for code in range(len(uniques)):
            members = labelled_codes[labelled_codes.index == code]
            take = round(len(members) * holdout)
            side[members.sample(n=take, random_state=seed).to_numpy()] = HOLDOUT
    else:
        side[pd.Series(positions).sample(n=n_holdout, random_state=seed).to_numpy()] = HOLDOUT
    how = f"a seeded (seed {seed}) random {holdout:.0%} of labelled rows held out"
    return SplitPlan(side, how), time_facts


def _numeric(
    name: str, series: pd.Series, kind: ColumnType, declared: Declared | None, split: SplitPlan, iqr_factor: float
) -> tuple[ColumnFacts, Array]:
    values = numeric_values(series)
    missing_mask = pd.isna(values)
    missing = int(missing_mask.sum())
    # The one sorted copy gives quantiles, distinct values, and outlier and range counts by binary search.
    ordered = values[~missing_mask] if missing else values.copy()
    ordered.sort()
    n = len(ordered)
    facts = ColumnFacts(name, kind, arrow_type(series), len(values), missing, 0)
    if missing:
        facts.missing_examples = _examples(missing_mask)
    if n:
        facts.distinct = 1 + int((ordered[1:] != ordered[:-1]).sum())
        q1, median, q3 = (_quantile(ordered, share) for share in (0.25, 0.5, 0.75))
        facts.q1, facts.median, facts.q3 = q1, median, q3
        facts.mean, facts.std = _number(float(ordered.mean())), _number(float(ordered.std(ddof=1)) if n > 1 else 0.0)
        facts.min, facts.max = float(ordered[0]), float(ordered[-1])
        spread = q3 - q1
        if spread > 0:  # a zero IQR (mostly one value) makes every other value an "outlier": not useful
            low, high = q1 - iqr_factor * spread, q3 + iqr_factor * spread
            facts.outliers = int(ordered.searchsorted(low, "left") + n - ordered.searchsorted(high, "right"))
            if facts.outliers:
                facts.outlier_examples = _examples((values < low) | (values > high))
        if declared is not None and (declared.min is not None or declared.max is not None):
            low = -math.inf if declared.min is None else declared.min
            high = math.inf if declared.max is None else declared.max
            facts.out_of_range = int(ordered.searchsorted(low, "left") + n - ordered.searchsorted(high, "right"))
            if facts.out_of_range:
                facts.out_of_range_examples = _examples((values < low) | (values > high))
        if facts.distinct <= NUMERIC_CLASS_LIMIT:
            # Runs of equal values in the sorted copy (no pandas Series per column: wide files have many).
            edges = [0, *(int(i) + 1 for i in (ordered[1:] != ordered[:-1]).nonzero()[0]), n]
            facts.counts = {_label(float(ordered[a])): b - a for a, b in pairwise(edges)}
        del ordered
        train = values[split.train & ~missing_mask] if missing else values[split.train]
        held = values[split.holdout & ~missing_mask] if missing else values[split.holdout]
        if len(train) > 1 and len(held) > 1:
            pooled = math.sqrt((float(train.var(ddof=1)) + float(held.var(ddof=1))) / 2)
            train_mean, held_mean = float(train.mean()), float(held.mean())
            gap = held_mean - train_mean
            facts.split_difference = abs(gap) / pooled if pooled > 0 else (0.0 if gap == 0 else math.inf)
            facts.split_detail = f"mean {train_mean:.4g} in training, {held_mean:.4g} held out"
    # Missing values are NumPy's one NaN already (numeric_values), so equal rows hash equally.
    return facts, values.view("uint64")


def _categorical(
    name: str, series: pd.Series, kind: ColumnType, split: SplitPlan, category_limit: int
) -> tuple[ColumnFacts, Array]:
    codes, uniques = series.factorize()
    missing_mask = codes < 0
    missing = int(missing_mask.sum())
    counts = _bincount(codes[~missing_mask], len(uniques))
    facts = ColumnFacts(name, kind, arrow_type(series), len(codes), missing, len(uniques))
    if missing:
        facts.missing_examples = _examples(missing_mask)
    labels = [_label(u) for u in uniques] if len(uniques) <= CLASS_LIMIT else None
    if labels is not None:
        facts.counts = {label: int(c) for label, c in zip(labels, counts, strict=True)}
    top = (-counts).argsort(kind="stable")[:TOP]
    facts.top = {_label(uniques[i]): int(counts[i]) for i in top}
    if 1 < len(uniques) <= category_limit:
        train = _bincount(codes[split.train & ~missing_mask], len(uniques))
        held = _bincount(codes[split.holdout & ~missing_mask], len(uniques))
        if train.sum() and held.sum():
            shares_train, shares_held = train / train.sum(), held / held.sum()
            gaps = abs(shares_train - shares_held)
            facts.split_difference = float(gaps.sum() / 2)
            worst = int(gaps.argmax())
            facts.split_detail = (
                f"{_label(uniques[worst])!r} is {shares_train[worst]:.1%} of training rows, "
                f"{shares_held[worst]:.1%} of held-out rows"
            )
    return facts, codes.astype("uint64")


# Columns shorter than this are profiled one after another (each costs well under a millisecond of Python).
PARALLEL_MIN_ROWS = 20_000


def profile(
    frame: pd.DataFrame,
    *,
    target: str,
    time_column: str | None = None,
    id_column: str | None = None,
    declared: Mapping[str, Declared] | None = None,
    holdout: float = 0.2,
    seed: int = 42,
    iqr_factor: float = 3.0,
    category_limit: int = 100,
    workers: int = 2,
) -> TableFacts:
    """Every fact the checks, the contract and the stored profile need, in one pass over the columns."""
    declared = declared or {}
    split, time_facts = plan_split(frame, target, time_column, holdout, seed)
    names = [str(c) for c in frame.columns]

    def visit(index: int) -> tuple[ColumnFacts, Array]:
        name = names[index]
        series = frame[name]
        kind = column_type(series) or "string"
        if kind in ("numeric", "datetime"):
            facts, keys = _numeric(name, series, kind, declared.get(name), split, iqr_factor)
        else:
            facts, keys = _categorical(name, series, kind, split, category_limit)
        return facts, _splitmix(keys, index + 1)

    row_hash = pd.Series(0, index=range(len(frame)), dtype="uint64").to_numpy(copy=True)
    columns: dict[str, ColumnFacts] = {}
    # Column hashes are summed (wrapping), which does not depend on the order in which columns finish; each
    # column's keys (8 bytes a row) are added and dropped as it comes, never all held at once.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # Short columns are mostly Python work: threads would only pass the GIL back and forth.
        threaded = workers > 1 and len(frame) >= PARALLEL_MIN_ROWS
        for facts, keys in (pool.map if threaded else map)(visit, range(len(names))):
            row_hash += keys
            columns[facts.name] = facts
    table = TableFacts(rows=len(frame), columns=columns, target=target, time=time_facts, split_how=split.how)
    table.declared_columns = set(declared)
    table.non_nullable = {n for n, d in declared.items() if d.nullable is False}
    table.duplicate_rows, table.duplicate_examples = _duplicates(frame, row_hash)
    if id_column is not None:
        repeated = frame[id_column].duplicated(keep="first").to_numpy(dtype=bool, na_value=False)
        table.id_column, table.duplicate_ids, table.duplicate_id_examples = (
            id_column,
            int(repeated.sum()),
            _examples(repeated),
        )
    target_facts = columns[target]
    if target_facts.counts is not None:
        table.labels = target_facts.counts
        table.split_labels = (
            _class_counts(frame[target], split.train),
            _class_counts(frame[target], split.holdout),
        )
    table.split_rows = (int(split.train.sum()), int(split.holdout.sum()))
    return table


def _class_counts(series: pd.Series, rows: Array) -> dict[str, int]:
    counts = series[rows].value_counts(dropna=True)
    return {_label(k): int(v) for k, v in counts.items()}


def _duplicates(frame: pd.DataFrame, row_hash: Array) -> tuple[int, list[int]]:
    """Exact duplicate rows: candidates by their 64-bit row hash, confirmed by comparing the rows themselves.

    The hashes are sorted (one copy) rather than put in a hash table (several times their size); rows are
    compared only for the few hashes that repeat.
    """
    ordered = row_hash.copy()
    ordered.sort()
    repeats = ordered[1:][ordered[1:] == ordered[:-1]]
    del ordered
    if not len(repeats):
        return 0, []
    candidates = pd.Series(row_hash).isin(repeats).to_numpy().nonzero()[0]
    # A hash collision between different rows is possible; only rows equal in every column count.
    repeated = frame.iloc[candidates].duplicated(keep="first").to_numpy()
    return int(repeated.sum()), [int(i) for i in candidates[repeated][:EXAMPLES]]
