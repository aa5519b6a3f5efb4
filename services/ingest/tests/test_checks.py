"""Every check on data with known values: one that trips it (with the numbers it reports), one that does not."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mloop_common.datacontract import Declared
from mloop_ingest import checks, contract, profiling
from mloop_ingest.checks import CheckPolicy, CheckResult, Limit, Previous, Report


def clean(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    """No missing values, duplicates, outliers or constant columns; balanced label, in time order."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.normal(10, 2, rows),
            "plan": rng.choice(["basic", "pro", "team"], rows),
            "day": np.arange(rows),
            "churned": np.tile(["yes", "no"], rows // 2),
        }
    )


def arrow(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as ingest holds it (Arrow-backed, as read from a file)."""
    return frame.convert_dtypes(dtype_backend="pyarrow")


def facts(frame: pd.DataFrame, **options: Any) -> profiling.TableFacts:
    options.setdefault("target", "churned")
    return profiling.profile(arrow(frame), **options)


def previous_of(frame: pd.DataFrame, version: int = 1, **options: Any) -> Previous:
    table = facts(frame, **options)
    built = contract.build_contract(table, time_column=None, id_column=None, declared={}, category_limit=100)
    return Previous(version=version, rows=table.rows, contract=built, labels=table.labels)


def run(
    frame: pd.DataFrame, previous: Previous | None = None, policy: CheckPolicy | None = None, **options: Any
) -> Report:
    policy = policy or CheckPolicy()
    # The measures the policy shapes are taken while profiling, as prepare() does.
    for name in ("holdout", "seed", "iqr_factor", "category_limit"):
        options.setdefault(name, getattr(policy, name))
    return checks.run_checks(facts(frame, **options), previous, policy)


def result(report: Report, name: str) -> CheckResult:
    return next(c for c in report.checks if c.name == name)


def test_a_clean_dataset_trips_no_check():
    report = run(clean(), previous_of(clean(seed=1)), time_column="day")

    assert report.accepted
    assert {c.name: c.severity for c in report.checks if c.severity != "info"} == {}
    assert {c.name for c in report.checks} >= {
        "row_count",
        "schema",
        "label_present",
        "missing_values",
        "missing_values_increase",
        "duplicate_rows",
        "outliers",
        "constant_columns",
        "label_balance",
        "split_comparison",
        "time_column",
    }


@pytest.mark.parametrize(
    ("observed", "severity", "threshold"), [(0.01, "info", 0.05), (0.3, "warning", 0.05), (0.6, "error", 0.5)]
)
def test_limits_judge_against_the_highest_threshold_passed(observed, severity, threshold):
    assert Limit(warning=0.05, error=0.5).judge(observed) == (severity, threshold)


def test_missing_values_warn_then_reject_with_the_share_and_example_rows():
    frame = clean(100)
    frame["usage"] = frame["usage"].astype("float64")
    frame.loc[:29, "usage"] = np.nan  # 30 %

    warned = result(run(frame), "missing_values")
    frame.loc[:59, "usage"] = np.nan  # 60 %
    rejected = run(frame)

    assert (warned.severity, warned.observed, warned.threshold) == ("warning", pytest.approx(0.3), 0.05)
    assert warned.columns == {"usage": pytest.approx(0.3)} and warned.examples == [0, 1, 2]
    assert not rejected.accepted and result(rejected, "missing_values").observed == pytest.approx(0.6)


def test_a_jump_in_missing_values_since_the_previous_version_warns():
    frame = clean(100)
    frame.loc[:19, "plan"] = None  # 0 % -> 20 %

    jumped = result(run(frame, previous_of(clean(100))), "missing_values_increase")
    steady = result(run(clean(100, seed=2), previous_of(clean(100))), "missing_values_increase")

    assert (jumped.severity, jumped.observed) == ("warning", pytest.approx(0.2)) and "'plan'" in jumped.message
    assert steady.severity == "info" and steady.observed == 0


def test_duplicate_rows_are_counted_exactly_and_reject_past_the_error_share():
    base = clean(90)
    ten_percent = pd.concat([base, base.iloc[:10]], ignore_index=True)  # rows 90-99 repeat rows 0-9
    thirty_percent = pd.concat([base, base.iloc[:39]], ignore_index=True)

    warned = result(run(ten_percent), "duplicate_rows")
    rejected = result(run(thirty_percent), "duplicate_rows")

    assert (warned.severity, warned.observed) == ("warning", pytest.approx(0.1)) and warned.examples == [90, 91, 92]
    assert "10 rows repeat" in warned.message
    assert (rejected.severity, rejected.threshold) == ("error", 0.2)
    assert result(run(base), "duplicate_rows").severity == "info"


def test_a_row_hash_collision_never_counts_different_rows_as_duplicates():
    frame = arrow(pd.DataFrame({"a": [1, 2, 1], "b": ["x", "y", "x"]}))

    count, examples = profiling._duplicates(frame, np.zeros(3, dtype=np.uint64))  # every row "collides"

    assert (count, examples) == (1, [2])


def test_rows_differing_only_in_a_missing_value_are_not_duplicates():
    frame = pd.DataFrame({"a": [1.0, None, 1.0], "b": ["x", "x", None], "churned": ["yes", "yes", "yes"]})

    assert facts(frame).duplicate_rows == 0


def test_repeated_ids_in_a_declared_id_column_reject():
    frame = clean(100)
    frame["customer"] = np.arange(100)
    frame.loc[50, "customer"] = 7

    report = run(frame, id_column="customer")

    found = result(report, "duplicate_ids")
    assert (found.severity, found.observed, found.examples) == ("error", pytest.approx(0.01), [50])
    assert "duplicate_ids" not in {c.name for c in run(clean(100)).checks}  # no id column, no check
    unique = result(run(clean(100).assign(customer=np.arange(100)), id_column="customer"), "duplicate_ids")
    assert (unique.severity, unique.observed) == ("info", 0)


def test_outliers_beyond_the_iqr_fences_are_counted_per_column():
    frame = clean(100)
    frame["usage"] = np.arange(100, dtype=float)  # q1 24.75, q3 74.25: fences at -123.75 and 222.75
    frame.loc[[10, 20], "usage"] = [1000.0, -500.0]

    found = result(run(frame), "outliers")

    assert (found.severity, found.observed, found.threshold) == ("warning", pytest.approx(0.02), 0.01)
    assert found.columns == {"usage": pytest.approx(0.02)} and found.examples == [10, 20]
    assert result(run(frame, policy=CheckPolicy(iqr_factor=20)), "outliers").severity == "info"


def test_constant_columns_warn_and_a_constant_target_rejects():
    frame = clean()
    frame["region"] = "eu"

    warned = result(run(frame), "constant_columns")
    frame["churned"] = "no"
    rejected = result(run(frame), "constant_columns")

    assert warned.severity == "warning" and "['region']" in warned.message
    assert rejected.severity == "error" and "nothing to learn" in rejected.message


def labels(yes: int, no: int) -> pd.DataFrame:
    frame = clean(yes + no)
    frame["churned"] = ["yes"] * yes + ["no"] * no
    return frame.sample(frac=1, random_state=0).reset_index(drop=True)


def test_a_50_50_label_becoming_70_30_warns_by_default_and_rejects_under_a_stricter_threshold():
    previous = previous_of(labels(100, 100))

    shifted = result(run(labels(140, 60), previous), "label_balance")
    strict = run(labels(140, 60), previous, CheckPolicy(label_shift=Limit(warning=0.05, error=0.15)))
    steady = result(run(labels(104, 96), previous), "label_balance")

    assert (shifted.severity, shifted.observed, shifted.threshold) == ("warning", pytest.approx(0.2), 0.1)
    assert "yes: 50% -> 70%" in shifted.message
    assert not strict.accepted and result(strict, "label_balance").threshold == 0.15
    assert (steady.severity, steady.observed) == ("info", pytest.approx(0.02))


def test_numeric_class_labels_are_compared_too():
    before, after = clean(200), clean(200)
    before["churned"] = np.tile([0, 1], 100)
    after["churned"] = [1] * 170 + [0] * 30

    found = result(run(after, previous_of(before)), "label_balance")

    assert found.observed == pytest.approx(0.35) and found.severity == "error"


def test_a_time_ordered_split_whose_held_out_rows_differ_warns_and_says_how():
    frame = clean(200)
    frame["churned"] = ["no"] * 150 + ["yes"] * 50  # the newest quarter churns
    frame["usage"] = np.r_[np.random.default_rng(0).normal(10, 1, 160), np.random.default_rng(1).normal(20, 1, 40)]

    found = result(run(frame, time_column="day"), "split_comparison")

    assert found.severity == "warning"
    assert "newest 20% of labelled rows by 'day' held out: 160 training, 40 held-out rows" in found.message
    assert found.columns["usage"] > 5 and "'usage'" in found.message


def test_a_random_split_of_alike_rows_passes():
    found = result(run(clean(1000)), "split_comparison")

    assert found.severity == "info" and "seed 42" in found.message
    assert found.observed is not None and found.observed < 0.25


def test_a_split_with_no_held_out_rows_rejects():
    frame = clean(2)
    frame.loc[1, "churned"] = None

    assert result(run(frame), "split_comparison").severity == "error"


def test_row_count_drop_since_the_previous_version_warns():
    found = result(run(clean(60), previous_of(clean(200))), "row_count")

    assert (found.severity, found.observed) == ("warning", pytest.approx(0.7)) and "-70.0%" in found.message


def test_schema_changes_vs_the_previous_version_have_their_severities():
    before = clean()
    removed = run(clean().drop(columns="plan"), previous_of(before))
    retyped = clean()
    retyped["usage"] = retyped["usage"].map(lambda v: f"v{v:.0f}")
    added = clean().assign(extra=1.5)
    new_category = clean()
    new_category.loc[0, "plan"] = "enterprise"

    assert not removed.accepted and "removed columns ['plan']" in result(removed, "schema").message
    assert "usage: numeric -> string" in result(run(retyped, previous_of(before)), "schema").message
    assert result(run(retyped, previous_of(before)), "schema").severity == "error"
    assert result(run(added, previous_of(before)), "schema").severity == "warning"
    found = result(run(new_category, previous_of(before)), "schema")
    assert found.severity == "info" and found.columns == {"plan": 1}
    policy = CheckPolicy(new_categories="error")
    assert not run(new_category, previous_of(before), policy).accepted


def test_an_unsorted_time_column_warns_with_the_row_and_an_unparseable_one_rejects():
    unsorted = clean()
    unsorted.loc[50, "day"] = 3
    unparseable = clean()
    unparseable["day"] = [f"day {i}" for i in range(len(unparseable))]

    warned = result(run(unsorted, time_column="day"), "time_column")
    rejected = result(run(unparseable, time_column="day"), "time_column")

    assert (warned.severity, warned.examples) == ("warning", [50])
    assert rejected.severity == "error" and "neither numbers nor ISO-8601" in rejected.message


def test_unlabelled_rows_warn_and_a_target_without_labels_rejects():
    some = clean()
    some.loc[:9, "churned"] = None
    none = clean()
    none["churned"] = None

    warned = result(run(some), "label_present")

    assert (warned.severity, warned.observed) == ("warning", pytest.approx(0.05))
    assert result(run(none), "label_present").severity == "error"


def test_values_breaking_the_declared_contract_reject_with_counts():
    frame = clean(100)
    frame["usage"] = np.arange(100, dtype=float)
    frame.loc[5, "plan"] = None
    declared = {"usage": Declared(min=0, max=89), "plan": Declared(nullable=False)}

    found = result(run(frame, declared=declared), "declared_contract")
    within = result(run(clean(), declared={"usage": Declared(min=-1000, max=1000)}), "declared_contract")

    assert found.severity == "error" and found.columns == {"usage": 10, "plan": 1}
    assert "10 values of 'usage' outside its declared range" in found.message and 5 in found.examples
    assert within.severity == "info"


def test_a_report_recorded_before_severities_existed_still_reads():
    """Rows written by an older ingest said ``status: pass|warn|fail``; reading them must not fail (it was a 500)."""
    legacy = {
        "checks": [
            {"name": "non_empty", "status": "pass", "message": "7300 rows, 10 columns"},
            {"name": "duplicate_rows", "status": "warn", "message": "3 duplicate rows"},
            {"name": "target_present", "status": "fail", "message": "target 'rain' missing"},
        ]
    }
    report = Report.model_validate(legacy)
    assert [c.severity for c in report.checks] == ["info", "warning", "error"]
    assert [c.message for c in report.failures()] == ["target 'rain' missing"]
    assert not report.accepted
