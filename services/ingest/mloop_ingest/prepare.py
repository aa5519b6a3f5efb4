"""The CPU-bound part of publishing, run in a worker thread: parse, profile, check, contract and snapshot.

It reads the spooled upload from disk and writes the Parquet snapshot to a temporary file beside it
(written while the columns are profiled: the writer and NumPy both release the GIL). Nothing here
touches the database or the artifact store.
"""

from __future__ import annotations

import math
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from mloop_common.datacontract import ColumnType, DatasetContract
from mloop_common.errors import InvalidInput
from mloop_ingest import checks, contract, profiling
from mloop_ingest.entities import CategoricalSummary, ColumnSummary, DatetimeSummary, NumericSummary
from mloop_ingest.reading import Limits, read_table


@dataclass(frozen=True)
class Prepared:
    rows: int
    columns: list[str]
    report: checks.Report
    contract: DatasetContract
    profile: dict[str, ColumnSummary]
    labels: dict[str, int] | None
    snapshot: Path | None  # the Parquet file, None when the checks rejected the version

    @property
    def schema(self) -> dict[str, ColumnType]:
        return {c.name: c.type for c in self.contract.columns}


def write_snapshot(frame: pd.DataFrame, path: Path) -> None:
    """The canonical snapshot: Parquet, zstd; dictionary pages only for text columns (numbers rarely repeat)."""
    text = [str(c) for c in frame.columns if str(frame[c].dtype).startswith(("string", "large_string", "dict"))]
    frame.to_parquet(path, index=False, engine="pyarrow", compression="zstd", use_dictionary=text)


def summarise(facts: profiling.ColumnFacts) -> ColumnSummary:
    if facts.type == "numeric":
        return NumericSummary(
            missing=facts.missing,
            distinct=facts.distinct,
            mean=facts.mean,
            std=facts.std,
            min=facts.min,
            max=facts.max,
            q1=facts.q1,
            median=facts.median,
            q3=facts.q3,
            outliers=facts.outliers,
        )
    if facts.type == "datetime":

        def iso(seconds: float | None) -> str | None:
            return None if seconds is None or math.isnan(seconds) else datetime.fromtimestamp(seconds, UTC).isoformat()

        return DatetimeSummary(
            missing=facts.missing, distinct=facts.distinct, first=iso(facts.min), last=iso(facts.max)
        )
    return CategoricalSummary(missing=facts.missing, distinct=facts.distinct, top=facts.top)


def _refuse_missing_columns(frame: pd.DataFrame, target: str, time_column: str | None) -> None:
    if target not in frame.columns:
        raise InvalidInput(f"target column {target!r} is not in the file", field="target")
    if time_column is not None and time_column not in frame.columns:
        raise InvalidInput(f"time column {time_column!r} is not in the file", field="time_column")
    if time_column == target:
        raise InvalidInput("the time column cannot be the target", field="time_column")


def prepare(
    path: Path,
    *,
    filename: str,
    target: str,
    time_column: str | None,
    declaration: contract.Declaration,
    previous: checks.Previous | None,
    policy: checks.CheckPolicy,
    limits: Limits,
    workdir: Path | None = None,
) -> Prepared:
    """Everything publishing computes from the file; raises InvalidInput (nothing stored) for bad input."""
    frame = read_table(path, filename, limits)
    _refuse_missing_columns(frame, target, time_column)
    declared, id_column = contract.effective_declaration(declaration, previous.contract if previous else None, frame)
    handle = tempfile.NamedTemporaryFile(dir=workdir, prefix="snapshot-", suffix=".parquet", delete=False)
    handle.close()
    snapshot = Path(handle.name)
    try:
        with ThreadPoolExecutor(max_workers=1) as writer:
            written = writer.submit(write_snapshot, frame, snapshot)
            facts = profiling.profile(
                frame,
                target=target,
                time_column=time_column,
                id_column=id_column,
                declared=declared,
                holdout=policy.holdout,
                seed=policy.seed,
                iqr_factor=policy.iqr_factor,
                category_limit=policy.category_limit,
                # One column at a time: the snapshot writer is the other busy thread, and every column in
                # flight holds a few column-sized temporaries.
                workers=1,
            )
            report = checks.run_checks(facts, previous, policy)
            written.result()
    except BaseException:
        snapshot.unlink(missing_ok=True)
        raise
    if not report.accepted:
        snapshot.unlink(missing_ok=True)
    built = contract.build_contract(
        facts, time_column=time_column, id_column=id_column, declared=declared, category_limit=policy.category_limit
    )
    return Prepared(
        rows=facts.rows,
        columns=list(facts.columns),
        report=report,
        contract=built,
        profile={name: summarise(c) for name, c in facts.columns.items()},
        labels=facts.labels,
        snapshot=snapshot if report.accepted else None,
    )
