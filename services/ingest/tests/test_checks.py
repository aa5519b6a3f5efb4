import numpy as np
import pandas as pd
import pytest

from mloop_common.errors import InvalidInput
from mloop_ingest.checks import parse_table, schema_of, to_parquet, validate


def churn(rows=20, seed=0):
    """A clean dataset: numbers, text, a flag, a time column and a label."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.normal(10, 2, rows).round(3),
            "calls": rng.integers(0, 9, rows),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "promo": rng.choice([True, False], rows),
            "day": np.arange(rows),
            "churned": rng.choice(["yes", "no"], rows),
        }
    )


def statuses(report):
    return {check.name: check.status for check in report.checks}


def message(report, name):
    return next(check.message for check in report.checks if check.name == name)


def check(frame, *, target="churned", time_column=None, previous_schema=None):
    return validate(frame, target=target, time_column=time_column, previous_schema=previous_schema)


def test_csv_bytes_parse_into_the_same_frame():
    frame = churn()

    parsed = parse_table(frame.to_csv(index=False).encode(), "churn.csv")

    pd.testing.assert_frame_equal(parsed, frame, check_dtype=False)


def test_parquet_bytes_parse_into_the_same_frame():
    frame = churn()

    parsed = parse_table(to_parquet(frame), "export.bin")

    pd.testing.assert_frame_equal(parsed, frame)


def test_empty_upload_is_invalid_and_names_the_file_field():
    with pytest.raises(InvalidInput, match="empty") as caught:
        parse_table(b"", "churn.csv")
    assert caught.value.field == "file"


@pytest.mark.parametrize(
    "data, filename, kind",
    [
        (b"\xff\xfe\x00\x81 not text", "churn.csv", "CSV"),
        (b"PAR1 this is not really parquet", "churn.csv", "Parquet"),
        (b"usage,plan\n1,pro\n", "churn.parquet", "CSV"),
    ],
)
def test_unreadable_upload_is_invalid_and_names_the_file_field(data, filename, kind):
    with pytest.raises(InvalidInput, match=f"not readable as {kind}") as caught:
        parse_table(data, filename)
    assert caught.value.field == "file"


def test_clean_dataset_passes_every_check():
    report = check(churn(), time_column="day", previous_schema=schema_of(churn()))

    assert report.accepted
    assert set(statuses(report).values()) == {"pass"}
    assert report.model_dump()["accepted"] is True


def test_dataset_without_rows_fails():
    report = check(churn().iloc[0:0])

    assert not report.accepted
    assert statuses(report) == {"non_empty": "fail"}


def test_missing_target_fails_and_names_it():
    report = check(churn().drop(columns="churned"))

    assert not report.accepted
    assert statuses(report)["target_present"] == "fail"
    assert "'churned'" in message(report, "target_present")


def test_target_without_any_value_fails():
    report = check(churn().assign(churned=np.nan))

    assert not report.accepted
    assert statuses(report)["target_present"] == "fail"
    assert "no values" in message(report, "target_present")


def test_some_unlabelled_rows_only_warn():
    frame = churn()
    frame.loc[[0, 1], "churned"] = None

    report = check(frame)

    assert report.accepted
    assert statuses(report)["target_present"] == "warn"
    assert "2 rows without a label" in message(report, "target_present")


def test_missing_time_column_fails_and_names_it():
    report = check(churn(), time_column="signup_ts")

    assert not report.accepted
    assert statuses(report)["time_column_present"] == "fail"
    assert "'signup_ts'" in message(report, "time_column_present")


def test_duplicate_column_names_fail():
    frame = churn()
    frame.columns = ["usage", "usage", "plan", "promo", "day", "churned"]

    report = check(frame)

    assert not report.accepted
    assert "usage" in message(report, "unique_columns")


def test_removed_column_fails_and_names_it():
    report = check(churn().drop(columns="plan"), previous_schema=schema_of(churn()))

    assert not report.accepted
    assert statuses(report)["schema_matches_previous"] == "fail"
    assert "missing columns ['plan']" in message(report, "schema_matches_previous")


def test_changed_column_type_fails_and_names_it():
    report = check(churn().assign(calls="many"), previous_schema=schema_of(churn()))

    assert not report.accepted
    assert statuses(report)["schema_matches_previous"] == "fail"
    assert "calls: numeric -> string" in message(report, "schema_matches_previous")


def test_added_column_only_warns_and_names_it():
    report = check(churn().assign(region="eu"), previous_schema=schema_of(churn()))

    assert report.accepted
    assert statuses(report)["schema_matches_previous"] == "warn"
    assert "region" in message(report, "schema_matches_previous")


def test_many_missing_values_warn():
    frame = churn()
    frame.loc[frame.index[:10], ["usage", "plan"]] = None

    report = check(frame)

    assert report.accepted
    assert statuses(report)["missing_values"] == "warn"


def test_duplicate_rows_warn_with_their_count():
    frame = churn()
    frame = pd.concat([frame, frame.iloc[:3]], ignore_index=True)

    report = check(frame)

    assert report.accepted
    assert statuses(report)["duplicate_rows"] == "warn"
    assert message(report, "duplicate_rows") == "3 duplicate rows"


def test_schema_names_coarse_types():
    frame = churn().assign(seen=pd.to_datetime("2024-01-01"))

    assert schema_of(frame) == {
        "usage": "numeric",
        "calls": "numeric",
        "plan": "string",
        "promo": "boolean",
        "day": "numeric",
        "churned": "string",
        "seen": "datetime",
    }


def test_schema_is_the_same_for_csv_and_parquet_of_the_same_frame():
    frame = churn()
    frame.loc[3, "usage"] = np.nan

    from_csv = parse_table(frame.to_csv(index=False).encode(), "churn.csv")
    from_parquet = parse_table(to_parquet(frame), "churn.parquet")

    assert schema_of(from_csv) == schema_of(from_parquet) == schema_of(frame)


def test_schema_of_a_time_column_is_the_same_for_csv_and_parquet():
    frame = churn().assign(seen=pd.date_range("2024-01-01", periods=20, freq="D"))

    from_csv = parse_table(frame.to_csv(index=False).encode(), "churn.csv")
    from_parquet = parse_table(to_parquet(frame), "churn.parquet")

    assert schema_of(from_csv) == schema_of(from_parquet)


def test_parquet_snapshot_is_deterministic():
    assert to_parquet(churn(seed=3)) == to_parquet(churn(seed=3))
    assert to_parquet(churn(seed=3)) != to_parquet(churn(seed=4))
