"""Dataset validation rules (pure): parse, schema, target, missing values, duplicates."""

from __future__ import annotations

import io
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, computed_field

from mloop_common.errors import InvalidInput

Status = Literal["pass", "warn", "fail"]
ColumnType = Literal["numeric", "boolean", "datetime", "string"]
PARQUET_MAGIC = b"PAR1"


class Check(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    message: str


class Report(BaseModel):
    """The validation report recorded with every version; any failed check rejects the version."""

    checks: list[Check] = []

    def add(self, name: str, status: Status, message: str) -> None:
        self.checks.append(Check(name=name, status=status, message=message))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accepted(self) -> bool:
        return all(c.status != "fail" for c in self.checks)


class NumericSummary(BaseModel):
    missing: int
    distinct: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


class CategoricalSummary(BaseModel):
    """Any non-numeric column (text, boolean, datetime): its ten most frequent values."""

    missing: int
    distinct: int
    top: dict[str, int]


ColumnSummary = NumericSummary | CategoricalSummary


def parse_table(data: bytes, filename: str = "") -> pd.DataFrame:
    """Read CSV or Parquet bytes (Parquet recognised by its magic bytes); bad bytes are a clear 422."""
    if not data:
        raise InvalidInput("the uploaded file is empty", field="file")
    try:
        if data[:4] == PARQUET_MAGIC or filename.lower().endswith(".parquet"):
            return pd.read_parquet(io.BytesIO(data))
        return _with_datetimes(pd.read_csv(io.BytesIO(data), low_memory=False))
    except Exception as exc:  # pandas raises many types for malformed input
        kind = "Parquet" if data[:4] == PARQUET_MAGIC else "CSV"
        raise InvalidInput(f"file is not readable as {kind}: {exc}", field="file") from exc


_ISO_DATE = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"


def _with_datetimes(frame: pd.DataFrame) -> pd.DataFrame:
    """CSV has no date type: text columns holding only ISO-8601 timestamps become datetimes, as in Parquet."""
    for name in frame.columns:
        series = frame[name]
        if not (pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)):
            continue
        present = series.dropna().astype(str)
        if present.empty or not present.str.match(_ISO_DATE).all():
            continue
        try:
            frame[name] = pd.to_datetime(series, format="ISO8601")
        except (ValueError, TypeError):
            continue
    return frame


def schema_of(frame: pd.DataFrame) -> dict[str, ColumnType]:
    """Column name -> coarse type (numeric, boolean, datetime, string), stable across CSV and Parquet."""

    def kind(series: pd.Series) -> ColumnType:
        if pd.api.types.is_bool_dtype(series):
            return "boolean"
        if pd.api.types.is_numeric_dtype(series):
            return "numeric"
        if pd.api.types.is_datetime64_any_dtype(series):
            return "datetime"
        return "string"

    return {str(name): kind(frame[name]) for name in frame.columns}


def column_stats(frame: pd.DataFrame) -> dict[str, ColumnSummary]:
    """A compact per-column profile stored with the version."""
    stats: dict[str, ColumnSummary] = {}
    for name in frame.columns:
        series = frame[name]
        missing, distinct = int(series.isna().sum()), int(series.nunique())
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            described = series.describe()
            moments = {key: _number(described.get(key)) for key in ("mean", "std", "min", "max")}
            stats[str(name)] = NumericSummary(missing=missing, distinct=distinct, **moments)
        else:
            top = {str(k): int(v) for k, v in series.value_counts().head(10).items()}
            stats[str(name)] = CategoricalSummary(missing=missing, distinct=distinct, top=top)
    return stats


def _number(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def validate(
    frame: pd.DataFrame, *, target: str, time_column: str | None, previous_schema: dict[str, ColumnType] | None
) -> Report:
    """Hard rules fail the version; soft ones warn."""
    report = Report()
    if frame.empty or len(frame.columns) == 0:
        report.add("non_empty", "fail", "the dataset has no rows")
        return report
    report.add("non_empty", "pass", f"{len(frame)} rows, {len(frame.columns)} columns")
    duplicated_names = list(frame.columns[frame.columns.duplicated()])
    if duplicated_names:
        report.add("unique_columns", "fail", f"duplicate column names: {duplicated_names}")
    if target not in frame.columns:
        report.add("target_present", "fail", f"target column {target!r} is not in the file")
    elif frame[target].isna().all():
        report.add("target_present", "fail", f"target column {target!r} has no values")
    else:
        missing = int(frame[target].isna().sum())
        report.add(
            "target_present",
            "warn" if missing else "pass",
            f"target {target!r} present" + (f"; {missing} rows without a label" if missing else ""),
        )
    if time_column is not None and time_column not in frame.columns:
        report.add("time_column_present", "fail", f"time column {time_column!r} is not in the file")
    if previous_schema is not None:
        schema = schema_of(frame)
        removed = sorted(set(previous_schema) - set(schema))
        added = sorted(set(schema) - set(previous_schema))
        changed = sorted(c for c in set(schema) & set(previous_schema) if schema[c] != previous_schema[c])
        if removed or changed:
            details = "; ".join(
                p
                for p in (
                    f"missing columns {removed}" if removed else "",
                    "changed types " + ", ".join(f"{c}: {previous_schema[c]} -> {schema[c]}" for c in changed)
                    if changed
                    else "",
                )
                if p
            )
            report.add("schema_matches_previous", "fail", details)
        elif added:
            report.add("schema_matches_previous", "warn", f"new columns {added}")
        else:
            report.add("schema_matches_previous", "pass", "same columns and types as the previous version")
    missing_share = float(frame.isna().mean().mean())
    report.add("missing_values", "warn" if missing_share > 0.05 else "pass", f"{missing_share:.1%} cells missing")
    duplicates = int(frame.duplicated().sum())
    report.add("duplicate_rows", "warn" if duplicates else "pass", f"{duplicates} duplicate rows")
    return report


def to_parquet(frame: pd.DataFrame) -> bytes:
    """The canonical snapshot bytes (deterministic for the same frame)."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow", compression="zstd")
    return buffer.getvalue()
