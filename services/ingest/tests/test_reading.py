"""Reading uploads from disk: what parses, and every bad input refused with a clear error naming the field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mloop_common.errors import InvalidInput
from mloop_ingest.checks import CheckPolicy
from mloop_ingest.contract import Declaration
from mloop_ingest.prepare import prepare, write_snapshot
from mloop_ingest.reading import Limits, column_type, numeric_values, read_table


def churn(rows: int = 20, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.normal(10, 2, rows).round(3),
            "calls": rng.integers(0, 9, rows),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "promo": rng.choice([True, False], rows),
            "signup": pd.date_range("2024-01-01", periods=rows, freq="D"),
            "churned": rng.choice(["yes", "no"], rows),
        }
    )


def write(tmp_path: Path, data: bytes, name: str = "upload.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def types(frame: pd.DataFrame) -> dict[str, str | None]:
    return {str(c): column_type(frame[c]) for c in frame.columns}


EXPECTED_TYPES = {
    "usage": "numeric",
    "calls": "numeric",
    "plan": "string",
    "promo": "boolean",
    "signup": "datetime",
    "churned": "string",
}


def test_a_csv_parses_with_typed_columns_iso_dates_included(tmp_path):
    frame = churn()

    parsed = read_table(write(tmp_path, frame.to_csv(index=False).encode()), "churn.csv")

    assert types(parsed) == EXPECTED_TYPES
    assert parsed["usage"].astype("float64").tolist() == frame["usage"].tolist()
    assert parsed["plan"].astype(str).tolist() == frame["plan"].tolist()


def test_csv_and_parquet_of_one_frame_have_the_same_types(tmp_path):
    parquet = tmp_path / "export.bin"
    churn().to_parquet(parquet, index=False)

    assert types(read_table(parquet, "export.bin")) == EXPECTED_TYPES


def test_a_snapshot_written_twice_from_one_file_is_the_same_bytes(tmp_path):
    frame = read_table(write(tmp_path, churn().to_csv(index=False).encode()), "churn.csv")

    write_snapshot(frame, tmp_path / "a.parquet")
    write_snapshot(frame, tmp_path / "b.parquet")

    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


BAD_CSV = [
    (b"", "upload.csv", "empty"),
    (b"a,b\n", "upload.csv", "header but no rows"),
    (b"a,b\n1,2\n3,4,5\n", "upload.csv", "Expected 2 columns, got 3"),
    (b'a,b\n"1,2\n3,4\n', "upload.csv", "not readable as CSV"),
    (b"a,b\n\xff\xfe,2\n", "upload.csv", "not UTF-8"),
    (b"a,b,a\n1,2,3\n", "upload.csv", "repeated column names: ['a']"),
    (b"only\n1\n2\n", "upload.csv", "one column"),
    (b"a,b\n1,x\n2,3\n4,5\n", "upload.csv", "mixes numbers and text"),
    (b"a,b\n1,2\n", "upload.parquet", "named as Parquet"),
    (b"\n\n", "upload.csv", "no header"),
]


@pytest.mark.parametrize(("data", "filename", "reason"), BAD_CSV)
def test_bad_input_is_refused_naming_the_file_field(tmp_path, data, filename, reason):
    with pytest.raises(InvalidInput) as refused:
        read_table(write(tmp_path, data, filename), filename)

    assert refused.value.field == "file" and reason in refused.value.message


def test_parquet_content_named_csv_is_refused(tmp_path):
    churn().to_parquet(tmp_path / "x.csv", index=False)

    with pytest.raises(InvalidInput, match="named as CSV but its content is Parquet"):
        read_table(tmp_path / "x.csv", "x.csv")


def test_parquet_with_a_nested_column_is_refused_naming_it(tmp_path):
    frame = pd.DataFrame({"tags": [[1, 2], [3]], "label": [0, 1]})
    frame.to_parquet(tmp_path / "nested.parquet", index=False)

    with pytest.raises(InvalidInput, match="'tags' has the nested type list"):
        read_table(tmp_path / "nested.parquet", "nested.parquet")


def test_a_file_over_the_column_limit_is_refused_before_parsing(tmp_path):
    header = ",".join(f"c{i}" for i in range(11)).encode()

    with pytest.raises(InvalidInput, match="11 columns, over the limit of 10"):
        read_table(write(tmp_path, header + b"\n" + b"x" * 100), "wide.csv", Limits(max_columns=10))


def test_a_text_column_of_words_is_not_mistaken_for_a_mixed_one(tmp_path):
    data = b"plan,label\nbasic,1\npro,0\n5g,1\n"

    assert types(read_table(write(tmp_path, data), "plans.csv")) == {"plan": "string", "label": "numeric"}


def test_timestamps_and_dates_with_gaps_become_seconds_since_1970(tmp_path):
    data = (
        b"at,day,zoned,x,label\n"
        b"2011-01-01T00:00:00,2011-01-01,2011-01-01T00:00:00Z,1,0\n"
        b"2011-01-01T01:00:00,2011-01-02,2011-01-01T02:00:00+01:00,2,1\n"
        b",,,3,0\n"
    )
    frame = read_table(write(tmp_path, data))

    start = 1293840000.0  # 2011-01-01T00:00:00Z
    assert numeric_values(frame["at"]).tolist()[:2] == [start, start + 3600]
    assert numeric_values(frame["day"]).tolist()[:2] == [start, start + 86400]
    assert numeric_values(frame["zoned"]).tolist()[:2] == [start, start + 3600]
    assert all(np.isnan(numeric_values(frame[c])[2]) for c in ("at", "day", "zoned"))


def test_a_version_with_a_timestamp_time_column_and_a_gap_is_prepared(tmp_path):
    rows = ["at,x,label"] + [f"2011-01-{1 + i // 24:02d}T{i % 24:02d}:00:00,{i},{i % 2}" for i in range(60)] + [",61,1"]
    path = write(tmp_path, ("\n".join(rows) + "\n").encode())

    prepared = prepare(
        path,
        filename="hours.csv",
        target="label",
        time_column="at",
        declaration=Declaration(),
        previous=None,
        policy=CheckPolicy(),
        limits=Limits(),
        workdir=tmp_path,
    )

    assert prepared.rows == 61 and prepared.contract.column("at").type == "datetime"
