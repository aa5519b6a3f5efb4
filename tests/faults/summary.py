"""The fault suite's summary table (scenario, injected, expected, observed, result) in tests/faults/results/.

Several test modules contribute rows; each writes only its own and keeps the others' (a row is replaced by
the next run of the same scenario, matched by its number, the first word of ``scenario``), so the table
holds every scenario whichever module ran first or last. Within a module, several tests may each observe
a part of one scenario: their rows of the same number become one row (``combined``).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Row:
    scenario: str  # starts with its number in issue 10, e.g. "3a drift SIGTERM ..."
    injected: str
    expected: str
    observed: str
    passed: bool

    @property
    def key(self) -> str:
        return self.scenario.split(" ", 1)[0]


def merged(existing: list[Row], new: list[Row]) -> list[Row]:
    """``existing`` with the rows of ``new`` put in (replacing those of the same scenario), by scenario number."""
    by_key = {row.key: row for row in existing}
    by_key.update({row.key: row for row in new})
    return sorted(by_key.values(), key=lambda row: _order(row.key))


def combined(rows: list[Row]) -> list[Row]:
    """Rows of the same scenario number as one: the first's scenario, the parts' texts joined in order,
    passed only if every part did."""
    parts: dict[str, list[Row]] = {}
    for row in rows:
        parts.setdefault(row.key, []).append(row)

    def joined(texts: list[str]) -> str:
        return "; ".join(dict.fromkeys(texts))  # a text several parts share (the same expectation) once

    return [
        Row(
            same[0].scenario,
            joined([r.injected for r in same]),
            joined([r.expected for r in same]),
            joined([r.observed for r in same]),
            all(r.passed for r in same),
        )
        for same in parts.values()
    ]


def _order(key: str) -> tuple[int, str]:
    match = re.match(r"(\d+)(.*)", key)
    return (int(match.group(1)), match.group(2)) if match else (1_000_000, key)


def read(results: Path = RESULTS) -> list[Row]:
    path = results / "summary.json"
    if not path.exists():
        return []
    try:
        return [Row(**row) for row in json.loads(path.read_text())]
    except (ValueError, TypeError):  # an older or hand-edited file: start the table afresh
        return []


def write(rows: list[Row], results: Path = RESULTS) -> str:
    """Merge ``rows`` into summary.json and summary.md; returns the whole table (Markdown)."""
    results.mkdir(exist_ok=True)
    table_rows = merged(read(results), combined(rows))
    table = markdown(table_rows)
    (results / "summary.md").write_text(table)
    (results / "summary.json").write_text(json.dumps([asdict(r) for r in table_rows], indent=2) + "\n")
    return table


def record_and_print(rows: list[Row], capsys: Any) -> None:
    """A fault module's last test: merge its rows into the table, print the whole table, fail on a failed row."""
    assert rows, "no scenario ran"
    table = write(rows)
    with capsys.disabled():
        print("\n" + table)
    assert all(r.passed for r in rows)


def markdown(rows: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = [
        "# Fault suite: scenarios of issue 10 (tests/faults/)",
        "",
        "| scenario | injected | expected | observed | result |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {cell(r.scenario)} | {cell(r.injected)} | {cell(r.expected)} | {cell(r.observed)} | "
        f"{'pass' if r.passed else 'FAIL'} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"
