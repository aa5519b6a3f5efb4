"""The pipeline page's events: the newest events of every topic, kept in memory and followed live."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from mloop_common.bus import BusConfig, ensure_topics, tail
from mloop_common.events import ALL_TOPICS, Envelope, gist
from mloop_common.retry import Backoff

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedEvent:
    seq: int  # the order this UI saw it in: a page asks for what came after the last one it shows
    time: datetime
    type: str
    subject: str
    service: str
    correlation_id: str
    summary: str
    event_id: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "time": self.time.isoformat()}


class Feed:
    """The newest ``capacity`` events, oldest dropped first; the same event id twice is kept once."""

    def __init__(self, capacity: int) -> None:
        self._events: deque[FeedEvent] = deque(maxlen=capacity)
        self._ids: set[str] = set()
        self._seq = itertools.count(1)
        self.connected = False
        self.problem = ""

    def add(self, event: Envelope) -> FeedEvent | None:
        if event.id in self._ids:
            return None
        if len(self._events) == self._events.maxlen:
            self._ids.discard(self._events[0].event_id)
        added = FeedEvent(
            seq=next(self._seq),
            time=event.time,
            type=event.type,
            subject=event.subject,
            service=event.source.rsplit("/", 1)[-1],
            correlation_id=event.correlationid,
            summary=gist(event),
            event_id=event.id,
        )
        self._events.append(added)
        self._ids.add(event.id)
        return added

    def since(
        self, after: int = 0, *, correlation_id: str = "", types: Iterable[str] = (), limit: int = 500
    ) -> list[FeedEvent]:
        """Events seen after ``after`` (a seq), newest first, filtered by chain and by type."""
        wanted = set(types)
        found = [
            e
            for e in reversed(self._events)
            if e.seq > after
            and (not correlation_id or e.correlation_id == correlation_id)
            and (not wanted or e.type in wanted)
        ]
        return found[:limit]

    @property
    def last_seq(self) -> int:
        return self._events[-1].seq if self._events else 0


async def follow(
    feed: Feed, config: BusConfig, *, backlog: int | Mapping[str, int], backoff: Backoff | None = None
) -> None:
    """Fill ``feed`` from every topic: the recent past at first, then each event as it comes; reconnects."""
    backoff = backoff or Backoff(1.0, 15.0)
    attempt = 0
    while True:
        try:
            await ensure_topics(config, ALL_TOPICS, with_dlq=False)
            async with tail(config, ALL_TOPICS, backlog=backlog) as records:
                feed.connected, feed.problem, attempt = True, "", 0
                async for _, event in records:
                    if event is not None:
                        feed.add(event)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the broker away or restarting: the page says so and the feed retries
            feed.connected, feed.problem = False, f"{type(error).__name__}: {error}"[:200]
            log.warning("pipeline feed: %s; retrying", feed.problem)
        attempt += 1
        await asyncio.sleep(backoff.delay(attempt))
