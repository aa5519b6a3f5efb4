"""``mloop trace``: one chain's events picked out of every topic, in time order, each with its outcome."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from typer.testing import CliRunner

from mloop_cli import trace
from mloop_cli.main import app
from mloop_common.events import ArtifactPointer, DataPublished, Envelope, ModelRejected, SpecChanged, new_event

POINTER = ArtifactPointer(uri="artifact:datasets/ab/" + "a" * 64 + ".parquet", sha256="a" * 64)


def published() -> Envelope:
    payload = DataPublished(dataset="churn", version=3, snapshot=POINTER, rows=1200, target="churned")
    return new_event(payload, source="mloop/ingest", subject="churn")


def rejected(cause: Envelope) -> Envelope:
    payload = ModelRejected(
        model="churn",
        run_id="r" * 32,
        evaluation_id="e" * 32,
        reasons=["accuracy 0.61 is below the floor 0.70"],
        candidate_metrics={"accuracy": 0.61},
    )
    event = new_event(payload, source="mloop/validator", subject="churn", cause=cause)
    return replace(event, time=cause.time + timedelta(seconds=12.5))


def record(topic: str, headers: dict[str, str] | None = None) -> Any:
    return SimpleNamespace(topic=topic, headers=[(k, v.encode()) for k, v in (headers or {}).items()])


def test_a_chain_is_its_own_events_oldest_first_with_what_each_says_and_dead_letters_marked():
    start = published()
    other = new_event(
        SpecChanged(model="x", spec_version=1, spec_digest="d" * 64, dataset="x"), source="s", subject="x"
    )
    refused = rejected(start)
    dead = {"x-mloop-consumer-group": "mloop-drift", "x-mloop-error": "InvalidEvent: schema_version 9"}
    records = [
        (record("model.rejected"), refused),
        (record("spec.changed"), other),
        (record("data.published"), start),
        (record("model.rejected.dlq", dead), refused),
        (record("data.published"), None),  # not a CloudEvent
    ]

    steps = trace.chain(records, start.correlationid)

    assert [(s.type, s.dead_letter) for s in steps] == [
        ("data.published", None),
        ("model.rejected", None),
        ("model.rejected", "mloop-drift: InvalidEvent: schema_version 9"),
    ]
    assert steps[0].outcome == "churn v3, 1,200 rows" and steps[0].source == "mloop/ingest"
    assert steps[1].outcome == "rejected: accuracy 0.61 is below the floor 0.70"
    assert steps[1].causation_id == start.id


def test_the_command_prints_the_chain_or_says_none_was_found(monkeypatch: pytest.MonkeyPatch):
    start = published()
    refused = rejected(start)

    async def read(config: Any, topics: list[str]) -> list[tuple[Any, Envelope | None]]:
        assert "data.published" in topics and "model.rejected.dlq" in topics  # every topic and every DLQ
        return [(record("data.published"), start), (record("model.rejected"), refused)]

    monkeypatch.setattr(trace, "read_topics", read)
    runner = CliRunner()

    table = runner.invoke(app, ["trace", start.correlationid])
    as_json = runner.invoke(app, ["trace", start.correlationid, "--json"])
    missing = runner.invoke(app, ["trace", "no-such-chain"])

    assert table.exit_code == 0, table.output
    assert "2 events" in table.output and "+12.5s" in table.output and "model.rejected" in table.output
    assert as_json.exit_code == 0 and as_json.output.count('"event_id"') == 2
    assert '"outcome": "rejected: accuracy 0.61 is below the floor 0.70"' in as_json.output
    assert missing.exit_code == 1 and "no event with correlation id 'no-such-chain'" in missing.output
