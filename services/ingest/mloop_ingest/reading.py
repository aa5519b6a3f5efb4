"""Reading an uploaded file from disk into an Arrow-backed frame, refusing what cannot be a dataset version.

Parsing is Arrow's (typed: ISO-8601 dates and timestamps come out as timestamps, as in Parquet; a CSV
streams through in blocks, see ``mloop_common.tables``); the frame keeps Arrow memory, so nothing is
copied into NumPy objects. Every refusal is an ``InvalidInput`` naming the form field at fault;
nothing is stored for it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mloop_common import tables
from mloop_common.errors import InvalidInput

ColumnType = Literal["numeric", "boolean", "datetime", "string"]
Format = Literal["csv", "parquet"]
PARQUET_MAGIC = b"PAR1"
CSV_SUFFIXES = (".csv", ".txt")
# Enough bytes to hold the header line of a file at the column limit with long names.
HEADER_PROBE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Limits:
    max_columns: int = 10_000


def detect_format(path: Path, filename: str) -> Format:
    """Parquet by its magic bytes, CSV otherwise; a name that claims the other format is refused."""
    with path.open("rb") as handle:
        head = handle.read(4)
    if not head:
        raise InvalidInput("the uploaded file is empty", field="file")
    is_parquet = head == PARQUET_MAGIC
    name = filename.lower()
    if is_parquet and name.endswith(CSV_SUFFIXES):
        raise InvalidInput(f"{filename!r} is named as CSV but its content is Parquet", field="file")
    if not is_parquet and name.endswith(".parquet"):
        raise InvalidInput(f"{filename!r} is named as Parquet but its content is not (no PAR1 header)", field="file")
    return "parquet" if is_parquet else "csv"


def csv_header(path: Path) -> tuple[list[str], int]:
    """The header row, read with Python's csv module (pandas would silently rename repeated names), and its
    length in bytes."""
    with path.open("rb") as handle:
        probe = handle.read(HEADER_PROBE_BYTES)
    first = probe.split(b"\n", 1)[0] if b"\n" in probe else probe
    try:
        text = first.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput("the CSV header is not UTF-8 text", field="file") from exc
    row = next(csv.reader(io.StringIO(text)), [])
    if not [name for name in row if name.strip()]:
        raise InvalidInput("the CSV file has no header row", field="file")
    return row, len(first)


def _refuse_bad_names(names: list[str], limits: Limits) -> None:
    if len(names) > limits.max_columns:
        raise InvalidInput(
            f"the file has {len(names)} columns, over the limit of {limits.max_columns} (MLOOP_INGEST_MAX_COLUMNS)",
            field="file",
        )
    if len(names) < 2:
        raise InvalidInput("the file has one column: a dataset needs a target and at least one feature", field="file")
    seen: set[str] = set()
    repeated = sorted({n for n in names if n in seen or seen.add(n)})  # type: ignore[func-returns-value]
    if repeated:
        raise InvalidInput(f"repeated column names: {repeated[:10]}", field="file")
    if any(not n.strip() for n in names):
        raise InvalidInput("a column has an empty name", field="file")


def arrow_type(column: pd.Series | Any) -> str:
    """The Arrow type of a column or of its dtype, e.g. ``double``, ``string``, ``timestamp[s]``, ``list<...>``."""
    dtype = column.dtype if isinstance(column, pd.Series) else column
    if isinstance(dtype, pd.ArrowDtype):
        return str(dtype.pyarrow_dtype)
    return str(dtype)


def column_type(column: pd.Series | Any) -> ColumnType | None:
    """The coarse type a version's schema records for a column (or its dtype); None: a type a dataset may not hold."""
    name = arrow_type(column)
    if name == "bool":
        return "boolean"
    if name.startswith(("int", "uint", "float", "double", "halffloat", "decimal")):
        return "numeric"
    if name.startswith(("timestamp", "date")):
        return "datetime"
    if name in ("string", "large_string", "null") or name.startswith("dictionary<values=string"):
        return "string"
    return None


def _refuse_bad_types(frame: pd.DataFrame) -> None:
    # From the dtypes alone: taking each column out of a 50,000-column frame costs far more than the checks.
    for name, dtype in frame.dtypes.items():
        kind = arrow_type(dtype)
        if kind in ("binary", "large_binary"):
            raise InvalidInput(f"column {name!r} is not UTF-8 text", field="file")
        if kind.startswith(("list", "large_list", "struct", "map", "fixed_size_list")):
            raise InvalidInput(
                f"column {name!r} has the nested type {kind}: only flat columns are allowed", field="file"
            )
        if column_type(dtype) is None:
            raise InvalidInput(f"column {name!r} has the unsupported type {kind}", field="file")


def mixed_values(series: pd.Series, sample: int = 10_000) -> list[str]:
    """Examples of the text values of a mostly numeric text column (empty if it is not one).

    A text column in which most distinct values are numbers but some are not is a numeric column with
    stray text ("n/a", "12 kg"): training would see it as categories. Judged on distinct values (few in a
    categorical column), at most ``sample`` of them.
    """
    values = pd.Series(series.dropna().unique()[:sample]).astype(str)
    if values.empty:
        return []
    numbers = pd.to_numeric(values, errors="coerce")
    numeric_share = float(numbers.notna().mean())
    if numeric_share < 0.5 or numeric_share == 1.0:
        return []
    return [str(v) for v in values[numbers.isna()].head(3)]


def read_table(path: Path, filename: str = "", limits: Limits | None = None) -> pd.DataFrame:
    """Parse the file at ``path`` (CSV or Parquet) into an Arrow-backed frame, or refuse it naming why."""
    limits = limits or Limits()
    fmt = detect_format(path, filename)
    block_bytes = tables.BLOCK_BYTES
    if fmt == "csv":
        names, header_bytes = csv_header(path)
        _refuse_bad_names(names, limits)
        # Arrow needs whole rows in a block: a wide file's rows (as long as its header, give or take) get room.
        block_bytes = max(block_bytes, 4 * header_bytes)
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path, dtype_backend="pyarrow")
        else:
            frame = tables.read_csv(path, block_bytes=block_bytes)
    except Exception as exc:  # Arrow and pandas raise many types for malformed input
        message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        kind = "Parquet" if fmt == "parquet" else "CSV"
        raise InvalidInput(f"file is not readable as {kind}: {message}", field="file") from exc
    names = [str(c) for c in frame.columns]
    if fmt == "parquet":
        _refuse_bad_names(names, limits)
    frame.columns = pd.Index(names)
    if frame.empty:
        raise InvalidInput("the file has a header but no rows", field="file")
    _refuse_bad_types(frame)
    for name, dtype in frame.dtypes.items():
        if column_type(dtype) == "string":
            examples = mixed_values(frame[name])
            if examples:
                raise InvalidInput(
                    f"column {name!r} mixes numbers and text (e.g. {examples}): fix the values or quote the column "
                    "consistently",
                    field="file",
                )
    return frame


def _has_tz(series: pd.Series) -> bool:
    dtype = series.dtype
    arrow = dtype.pyarrow_dtype if isinstance(dtype, pd.ArrowDtype) else None
    return bool(getattr(arrow, "tz", None) or getattr(dtype, "tz", None))


def numeric_values(series: pd.Series) -> Any:
    """A numeric or datetime column as a float64 NumPy array, NaN for missing (datetimes: seconds since 1970).

    The array may be a read-only view of Arrow's buffer: copy it before changing it.
    """
    if column_type(series) == "datetime":
        # Through Arrow: pandas cannot fill the gaps of an Arrow timestamp[s] column while converting it.
        stamps = pa.array(series).cast(pa.timestamp("ns", tz="UTC") if _has_tz(series) else pa.timestamp("ns"))
        nanoseconds = pc.cast(stamps, pa.int64()).to_numpy(zero_copy_only=False)
        return nanoseconds.astype("float64") / 1e9
    if isinstance(series.dtype, pd.ArrowDtype):
        # Straight from Arrow: several times less overhead per column than pandas' conversion (wide files).
        # Unsafe cast: integers beyond 2**53 become the nearest float, as pandas would make them.
        floats = pc.cast(series.array.__arrow_array__(), pa.float64(), safe=False)
        return floats.to_numpy(zero_copy_only=False)
    return series.to_numpy(dtype="float64", na_value=math.nan)
