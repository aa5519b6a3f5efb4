from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mloop_common.tables import read_csv


def test_a_csv_streams_into_arrow_columns_with_the_values_and_types_of_the_file(tmp_path: Path):
    path = tmp_path / "a.csv"
    rows = [f"{i},{i * 0.5},name{i % 3},2024-01-{1 + i % 28:02d}" for i in range(5000)]
    path.write_text("n,x,name,day\n" + "\n".join(rows) + "\n")

    frame = read_csv(path, block_bytes=4096)  # many blocks

    assert len(frame) == 5000 and frame["n"].sum() == sum(range(5000))
    assert [str(t) for t in frame.dtypes] == [
        "int64[pyarrow]",
        "double[pyarrow]",
        "string[pyarrow]",
        "date32[day][pyarrow]",
    ]


def test_a_column_whose_type_changes_after_the_first_block_is_read_whole(tmp_path: Path):
    path = tmp_path / "late.csv"
    path.write_text("n,late\n" + "".join(f"{i},\n" for i in range(2000)) + "1,2.5\n")

    frame = read_csv(path, block_bytes=1024)

    assert str(frame["late"].dtype) == "double[pyarrow]" and frame["late"].iloc[-1] == 2.5
    assert frame["late"].isna().sum() == 2000


def test_a_ragged_csv_raises_arrows_parse_error(tmp_path: Path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b\n1,2\n3,4,5\n")

    with pytest.raises(pa.ArrowInvalid, match="Expected 2 columns, got 3"):
        read_csv(path)


def test_the_frame_is_the_same_as_pandas_reads_it(tmp_path: Path):
    path = tmp_path / "same.csv"
    pd.DataFrame({"a": [1.5, None, 3.0], "b": ["x", "y", None]}).to_csv(path, index=False)

    frame = read_csv(path)

    assert frame["a"].isna().tolist() == [False, True, False] and frame["b"].tolist()[:2] == ["x", "y"]
