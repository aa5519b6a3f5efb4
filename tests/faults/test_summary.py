"""The summary table keeps every module's rows: each run replaces only its own scenarios."""

from __future__ import annotations

from pathlib import Path

from tests.faults import summary
from tests.faults.summary import Row


def row(scenario: str, observed: str = "ok", passed: bool = True) -> Row:
    return Row(scenario, "injected", "expected", observed, passed)


def test_rows_of_another_module_are_kept_and_a_rerun_replaces_its_own(tmp_path: Path) -> None:
    summary.write([row("1 kill"), row("8 replay"), row("10 overload")], tmp_path)
    table = summary.write([row("3b serving"), row("3a drift"), row("8 replay", "again", passed=False)], tmp_path)

    assert [r.scenario for r in summary.read(tmp_path)] == [
        "1 kill",
        "3a drift",
        "3b serving",
        "8 replay",
        "10 overload",
    ]
    assert [r.observed for r in summary.read(tmp_path) if r.key == "8"] == ["again"]
    assert "| 8 replay | injected | expected | again | FAIL |" in table
    assert (tmp_path / "summary.md").read_text() == table


def test_an_unreadable_json_file_starts_the_table_afresh(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{not json")

    summary.write([row("4a kafka")], tmp_path)

    assert [r.key for r in summary.read(tmp_path)] == ["4a"]


def test_parts_of_one_scenario_observed_by_several_tests_are_one_row(tmp_path: Path) -> None:
    parts = [
        Row("7a poison messages", "invalid JSON", "dead-lettered", "1 dead letter", True),
        Row("7a", "a failing handler", "dead-lettered", "3 attempts", False),
        Row("6 rebalance", "a member joins", "nothing lost", "120/120", True),
    ]

    summary.write(parts, tmp_path)

    assert summary.read(tmp_path) == [
        Row("6 rebalance", "a member joins", "nothing lost", "120/120", True),
        Row(
            "7a poison messages", "invalid JSON; a failing handler", "dead-lettered", "1 dead letter; 3 attempts", False
        ),
    ]
