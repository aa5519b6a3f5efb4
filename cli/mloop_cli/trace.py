"""``mloop trace CORRELATION_ID``: one chain of events (a publication or a drift verdict and all it caused),
read back from every topic and its dead-letter topic, in time order.

Every event carries the ``correlationid`` of the chain it belongs to (a dataset publication starts one, and
the training, validation, registration and promotion it causes keep it). The command reads what the broker
retains now, from the beginning of each topic: on a busy cluster that takes a while, and a chain older than
the topics' retention is gone.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from mloop_cli.client import bootstrap, console, err
from mloop_common.bus import BusConfig, read_topics
from mloop_common.events import ALL_TOPICS, Envelope, dlq_topic, gist


@dataclass(frozen=True)
class Step:
    """One event of a chain as a person reads it."""

    time: datetime
    type: str
    source: str
    subject: str
    outcome: str
    event_id: str
    causation_id: str | None
    dead_letter: str | None = None  # why a consumer group gave up on it

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "time": self.time.isoformat()}


def chain(records: list[tuple[Any, Envelope | None]], correlation_id: str) -> list[Step]:
    """The events of one chain, oldest first; a dead letter is shown where its event stands, with the reason."""
    steps = []
    for record, event in records:
        if event is None or event.correlationid != correlation_id:
            continue
        headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
        dead = record.topic.endswith(".dlq")
        said = gist(event)
        steps.append(
            Step(
                time=event.time,
                type=event.type,
                source=event.source,
                subject=event.subject,
                outcome=said,
                event_id=event.id,
                causation_id=event.causationid,
                dead_letter=(
                    f"{headers.get('x-mloop-consumer-group', '?')}: {headers.get('x-mloop-error', '')}"
                    if dead
                    else None
                ),
            )
        )
    return sorted(steps, key=lambda step: (step.time, step.dead_letter is not None))


def trace(
    correlation_id: Annotated[str, typer.Argument(help="the chain's correlation id (every event carries it)")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per event instead of a table")] = False,
) -> None:
    """The chain of events with CORRELATION_ID, oldest first: type, service, time and outcome, dead letters too."""
    topics = [*ALL_TOPICS, *(dlq_topic(t) for t in ALL_TOPICS)]
    with console.status("reading every topic from its beginning"):
        records = asyncio.run(read_topics(BusConfig(bootstrap()), topics))
    steps = chain(records, correlation_id)
    if not steps:
        err.print(f"[red]error:[/] no event with correlation id {correlation_id!r} in the {len(records):,} retained")
        raise typer.Exit(1)
    if as_json:
        for step in steps:
            console.print_json(json.dumps(step.to_json()))
        return
    first = steps[0].time
    table = Table("at", "event", "service", "subject", "outcome")
    for step in steps:
        said = f"[red]dead-lettered by {step.dead_letter}[/]" if step.dead_letter else step.outcome
        table.add_row(f"+{(step.time - first).total_seconds():.1f}s", step.type, step.source, step.subject, said)
    console.print(f"chain {correlation_id}: {len(steps)} events from {first.isoformat(timespec='seconds')}")
    console.print(table)
