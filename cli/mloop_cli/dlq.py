"""``mloop dlq``: the records a service gave up on (dead letters), and replaying them once the cause is fixed."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.table import Table

from mloop_cli.client import bootstrap, console, err
from mloop_common.bus import BusConfig, DeadLetter, Producer, dead_letters, replay_dead_letters

app = typer.Typer(help="Dead letters: list a topic's, replay them after a fix.", no_args_is_help=True)

Topic = Annotated[str, typer.Argument(help="the topic whose dead letters to read, e.g. data.published")]


def _read(topic: str, event_id: str | None) -> list[DeadLetter]:
    letters = asyncio.run(dead_letters(BusConfig(bootstrap()), topic))
    if event_id:
        letters = [letter for letter in letters if (letter.event and letter.event.id == event_id)]
    return letters


@app.command("list")
def dlq_list(topic: Topic, event_id: Annotated[str | None, typer.Option(help="only this event")] = None) -> None:
    """The dead letters of TOPIC: where each came from, which group gave up after how many attempts, and why."""
    letters = _read(topic, event_id)
    table = Table("dlq offset", "from", "group", "attempts", "event", "error")
    for letter in letters:
        event = letter.event
        table.add_row(
            f"{letter.partition}:{letter.offset}",
            f"{letter.original_topic}@{letter.original_partition}:{letter.original_offset}",
            letter.group,
            str(letter.attempts),
            f"{event.type} {event.subject} {event.id}" if event else "(not a CloudEvent)",
            letter.error[:300] + (" (value omitted: too large)" if letter.value_omitted else ""),
        )
    console.print(table)
    console.print(f"{len(letters)} dead letter(s)")


@app.command("replay")
def dlq_replay(
    topic: Topic,
    event_id: Annotated[str | None, typer.Option(help="only this event")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False,
) -> None:
    """Publish TOPIC's dead letters to TOPIC again. Groups that handled one before ignore it (inbox); the
    group that failed handles it anew. Replaying twice is harmless for the same reason."""
    letters = _read(topic, event_id)
    if not letters:
        console.print("nothing to replay")
        return
    if not yes and not typer.confirm(f"replay {len(letters)} dead letter(s) to {letters[0].original_topic}?"):
        raise typer.Exit(1)

    async def replay() -> tuple[int, list[DeadLetter]]:
        producer = Producer(BusConfig(bootstrap()))
        await producer.start()
        try:
            return await replay_dead_letters(producer, letters)
        finally:
            await producer.stop()

    sent, skipped = asyncio.run(replay())
    console.print(f"replayed {sent} record(s) to {letters[0].original_topic}")
    for letter in skipped:
        err.print(f"[yellow]skipped[/] {letter.partition}:{letter.offset}: its value was not kept (too large)")
