"""``mloop score``: batch scoring of a CSV or Parquet file through serving's predict API, in bounded memory.

Client-side by design: the file is read a chunk at a time (pyarrow's streaming CSV reader, or a Parquet
file's batches), each chunk is one ``/v1/models/{name}[/versions/{v}]:predict`` request, and each answer is
appended to the output as its own Parquet row group. At most one chunk (plus the reader's read-ahead) is in
memory whatever the file's size. The output is written beside its final name and renamed at the end, so a
failed run never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import httpx
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from mloop_cli.client import auth_headers, call, console, err, url

# Serving refuses more than max_instances (10,000 by default) rows and bodies over max_body_bytes (20 MiB)
# per request; a chunk whose JSON is larger than this is split in halves until each part fits.
DEFAULT_CHUNK_ROWS = 5_000
MAX_REQUEST_BYTES = 16 * 1024 * 1024
ROUTING_HEADER = "X-Mloop-Routing-Key"
# Columns the output adds; an input column of the same name would be ambiguous.
ROW, PREDICTION, REQUEST_ID, MODEL_VERSION, PROBABILITY = (
    "row",
    "prediction",
    "request_id",
    "model_version",
    "probability_",
)
SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class ScoreError(Exception):
    """A problem with the files themselves, reported as one line and exit code 1."""


@dataclass
class Source:
    """Record batches of an input file, and how far into it the reader is (for the progress bar)."""

    batches: Iterator[pa.RecordBatch]
    size: int  # bytes on disk
    rows: int | None  # known up front for Parquet only
    position: Callable[[], int]  # bytes read so far (estimated for Parquet)
    close: Callable[[], None]


def open_source(path: Path, chunk_rows: int) -> Source:
    """``path`` as a stream of record batches; its kind comes from the extension."""
    if not path.is_file():
        raise ScoreError(f"no such file: {path}")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ScoreError(f"{path}: unknown extension {path.suffix!r} (expected .csv or .parquet)")
    size = path.stat().st_size
    if kind == "csv":
        handle = path.open("rb")
        try:
            # One parsing thread: each of Arrow's would hold a block of its own in flight, and memory, not
            # parsing, bounds a file larger than the machine's memory.
            reader = pacsv.open_csv(handle, read_options=pacsv.ReadOptions(use_threads=False))
        except pa.ArrowInvalid as exc:
            handle.close()
            raise ScoreError(f"{path}: not a readable CSV file ({exc})") from exc
        return Source(iter(reader), size, None, handle.tell, handle.close)
    try:
        parquet = pq.ParquetFile(path)
    except pa.ArrowException as exc:
        raise ScoreError(f"{path}: not a readable Parquet file ({exc})") from exc
    rows = parquet.metadata.num_rows
    done = [0]

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in parquet.iter_batches(batch_size=chunk_rows):
            done[0] += batch.num_rows
            yield batch

    return Source(batches(), size, rows, lambda: size * done[0] // max(rows, 1), parquet.close)


def rechunk(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The same rows in batches of exactly ``rows`` (the last may be shorter); never more than that is held."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield _concat(pending)
                pending, held = [], 0
    if held:
        yield _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def instances(batch: pa.RecordBatch, features: list[str] | None) -> list[dict[str, Any]]:
    """The rows as JSON objects: only the model's features when known; NaN becomes null (JSON has no NaN)."""
    if features is not None:
        batch = batch.select([f for f in features if f in batch.schema.names])
    columns = []
    for column in batch.columns:
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, names=batch.schema.names).to_pylist()


def request_bodies(rows: list[dict[str, Any]], limit: int = MAX_REQUEST_BYTES) -> Iterator[tuple[int, bytes]]:
    """Predict bodies for ``rows`` in order, each under ``limit`` bytes where a row allows: (row count, JSON)."""
    body = json.dumps({"instances": rows}, default=str, separators=(",", ":")).encode()
    if len(body) <= limit or len(rows) == 1:
        yield len(rows), body
        return
    half = len(rows) // 2
    yield from request_bodies(rows[:half], limit)
    yield from request_bodies(rows[half:], limit)


def output_table(batch: pa.RecordBatch, first_row: int, answers: list[dict[str, Any]], inputs: bool) -> pa.Table:
    """The chunk's output: its input columns (if kept), its row numbers, and serving's answers in order."""
    predictions: list[Any] = []
    request_ids: list[str] = []
    versions: list[int] = []
    probabilities: list[list[float]] = []
    classes: list[Any] | None = None
    for answer in answers:
        predictions.extend(answer["predictions"])
        request_ids.extend(answer["request_ids"])
        versions.extend([answer["model_version"]] * len(answer["predictions"]))
        if answer.get("probabilities") is not None:
            probabilities.extend(answer["probabilities"])
            classes = answer.get("classes") or classes
    if len(predictions) != batch.num_rows:
        raise ScoreError(f"serving answered {len(predictions)} predictions for {batch.num_rows} rows")
    columns: dict[str, pa.Array] = {}
    if inputs:
        columns.update(zip(batch.schema.names, batch.columns, strict=True))
    columns[ROW] = pa.array(range(first_row, first_row + batch.num_rows), pa.int64())
    columns[PREDICTION] = pa.array(predictions)
    if classes is not None and len(probabilities) == batch.num_rows:
        for index, label in enumerate(classes):
            columns[f"{PROBABILITY}{label}"] = pa.array([p[index] for p in probabilities], pa.float64())
    columns[REQUEST_ID] = pa.array(request_ids, pa.string())
    columns[MODEL_VERSION] = pa.array(versions, pa.int64())
    return pa.table(columns)


def clashes(names: list[str]) -> list[str]:
    """Input columns whose names the output uses for its own columns."""
    return [n for n in names if n in (ROW, PREDICTION, REQUEST_ID, MODEL_VERSION) or n.startswith(PROBABILITY)]


def model_features(name: str, version: int | None) -> list[str] | None:
    """The inputs the served model takes (OIP model metadata), or None to send every column.

    Only an optimisation (unused columns are neither sent nor logged with the predictions), so any failure
    here falls back to sending everything and lets the predict call report what is wrong.
    """
    path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "")
    try:
        response = httpx.get(url("serving") + path, headers=auth_headers(), timeout=30)
        if response.status_code == 200:
            return [str(i["name"]) for i in response.json()["inputs"]]
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        pass
    return None


def _temporary(out: Path) -> Path:
    return out.with_name(f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def score(
    name: Annotated[str, typer.Argument(help="the model")],
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="a .csv or .parquet file")],
    out: Annotated[Path, typer.Option("--output", "-o", help="the Parquet file to write")],
    version: Annotated[int | None, typer.Option(min=1, help="score with this version (default: production)")] = None,
    chunk_rows: Annotated[
        int, typer.Option(min=1, help="rows per predict request (serving takes at most 10,000 by default)")
    ] = DEFAULT_CHUNK_ROWS,
    inputs: Annotated[bool, typer.Option("--inputs/--no-inputs", help="copy the input columns into the output")] = True,
    force: Annotated[bool, typer.Option("--force", help="replace OUT if it exists")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each predict request")] = 120,
    log: Annotated[
        bool,
        typer.Option(
            "--log/--no-log",
            help="log the predictions for drift and lineage like any others; --no-log (a test file, a backfill) "
            "needs a data-scientist or admin key",
        ),
    ] = True,
) -> None:
    """Score a CSV or Parquet file with NAME, chunk by chunk, into a Parquet file (bounded memory).

    The output has the input columns (unless --no-inputs), ``row`` (the 0-based row number in INPUT),
    ``prediction``, ``probability_<class>`` for classifiers, ``request_id`` and ``model_version``.
    """
    if out.exists() and not force:
        err.print(f"[red]error:[/] {out} exists; pass --force to replace it")
        raise typer.Exit(1)
    if not out.parent.is_dir():
        err.print(f"[red]error:[/] no such folder: {out.parent}")
        raise typer.Exit(1)
    if out.resolve() == input_file.resolve():
        err.print("[red]error:[/] the output would overwrite the input")
        raise typer.Exit(1)
    try:
        source = open_source(input_file, chunk_rows)
    except ScoreError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    temporary = _temporary(out)
    try:
        rows, versions = _run(name, version, source, temporary, chunk_rows, inputs, timeout, log)
        os.replace(temporary, out)
    except ScoreError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    except pa.ArrowInvalid as exc:  # e.g. a CSV value that does not fit the type its first block gave the column
        err.print(f"[red]error:[/] cannot read {input_file}: {exc}")
        raise typer.Exit(1) from exc
    finally:
        source.close()
        temporary.unlink(missing_ok=True)
    served = ", ".join(f"v{v}" for v in sorted(versions)) or "-"
    console.print(f"scored {rows:,} rows of {input_file} with {name} {served} -> {out}")


def _run(
    name: str,
    version: int | None,
    source: Source,
    temporary: Path,
    chunk_rows: int,
    inputs: bool,
    timeout: float,
    log: bool,
) -> tuple[int, set[int]]:
    """Score every chunk of ``source`` into ``temporary``; the rows scored and the versions that answered."""
    path = f"/v1/models/{name}" + (f"/versions/{version}" if version is not None else "") + ":predict"
    # One routing key for the whole run: without --version every chunk takes the same route (production or
    # its canary), so one file is not scored by two versions because of traffic splitting.
    headers = {"content-type": "application/json", ROUTING_HEADER: f"mloop-score-{uuid.uuid4().hex}"}
    params = None if log else {"log": "false"}
    features = model_features(name, version)
    writer: pq.ParquetWriter | None = None
    done = 0
    versions: set[int] = set()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    try:
        with httpx.Client() as session, Progress(*columns, console=err, transient=True) as progress:
            task = progress.add_task(f"scoring with {name}", total=source.size, rows=0)
            for batch in rechunk(source.batches, chunk_rows):
                if writer is None and inputs and (clash := clashes(batch.schema.names)):
                    raise ScoreError(
                        f"input columns {clash} clash with output columns; rename them or pass --no-inputs"
                    )
                answers = []
                rows = instances(batch, features)
                for _, body in request_bodies(rows):
                    answers.append(
                        call(
                            "POST",
                            "serving",
                            path,
                            session=session,
                            content=body,
                            headers=headers,
                            timeout=timeout,
                            params=params,
                        )
                    )
                table = output_table(batch, done, answers, inputs)
                if writer is None:
                    writer = pq.ParquetWriter(temporary, table.schema)
                writer.write_table(_conform(table, writer.schema))
                done += batch.num_rows
                versions.update(a["model_version"] for a in answers)
                progress.update(task, completed=source.position(), rows=done)
        if writer is None:
            raise ScoreError("the input has no rows")
    finally:
        if writer is not None:
            writer.close()
    return done, versions


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A later chunk in the first chunk's schema (e.g. predictions all null so far, or ints where floats came)."""
    if table.schema.equals(schema):
        return table
    if table.schema.names != schema.names:
        raise ScoreError(f"columns changed between chunks: {schema.names} then {table.schema.names}")
    try:
        return table.cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ScoreError(f"a chunk's types do not match the first chunk's ({exc})") from exc
