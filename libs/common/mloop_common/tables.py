"""Reading large CSV files into Arrow-backed pandas frames with bounded extra memory.

``pyarrow.csv.read_csv`` parses blocks on every core and keeps the raw and parsed blocks of the whole
file alive until it builds the table: its peak is about three times the table. Reading the file as a
stream of record batches keeps one block in flight, so the peak stays near the table itself. The frame
wraps the Arrow columns without copying them (``pd.ArrowDtype``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

BLOCK_BYTES = 1024 * 1024  # Arrow's default: larger blocks parse no faster here and peak higher


def read_csv(path: Path, *, block_bytes: int = BLOCK_BYTES) -> pd.DataFrame:
    """The CSV at ``path`` (UTF-8, header row) as a frame of Arrow columns; raises what Arrow raises.

    The streaming reader infers column types from the first block; when a later block does not fit them
    (a column of integers that turns to decimals, one empty at first), the file is read again whole, with
    inference over every block.
    """
    options = pacsv.ReadOptions(block_size=block_bytes)
    try:
        with pacsv.open_csv(path, read_options=options) as reader:
            table = pa.Table.from_batches(list(reader), schema=reader.schema)
    except pa.ArrowInvalid as exc:
        if "conversion error" not in str(exc).lower():
            raise
        table = pacsv.read_csv(path, read_options=options)
    return table.to_pandas(types_mapper=pd.ArrowDtype)
