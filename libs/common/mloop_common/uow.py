"""Units of work: one transaction that holds a service's own changes, its inbox and its outbox.

A handler opens one unit per message (``async with store.transaction() as unit``); the
event id it claims, the rows it writes and the events it stages all commit together or
not at all. Each service subclasses ``SqlUnit`` with its queries; its tests subclass
``mloop_common.testing.MemoryUnit`` the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Generic, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.db import Database, already_handled, claim_event, enqueue
from mloop_common.events import Envelope


class Messaging(Protocol):
    """The inbox and outbox of a unit of work."""

    async def handled(self, event: Envelope) -> bool:
        """Whether this service already handled ``event`` (a cheap pre-check before slow work)."""
        ...

    async def claim(self, event: Envelope) -> bool:
        """Record ``event`` as handled in this unit; False if it already was (then change nothing)."""
        ...

    async def stage(self, event: Envelope) -> None:
        """Publish ``event`` if, and only if, this unit commits."""
        ...


U = TypeVar("U", covariant=True)


class Store(Protocol[U]):
    """Where a service's units of work come from."""

    def transaction(self) -> AbstractAsyncContextManager[U]: ...


class SqlUnit:
    """A unit of work on the service's PostgreSQL schema; subclasses add the service's queries."""

    def __init__(self, session: AsyncSession, consumer: str) -> None:
        self.session = session
        self.consumer = consumer

    async def handled(self, event: Envelope) -> bool:
        return await already_handled(self.session, self.consumer, event.id)

    async def claim(self, event: Envelope) -> bool:
        return await claim_event(self.session, self.consumer, event)

    async def stage(self, event: Envelope) -> None:
        await enqueue(self.session, event)


S = TypeVar("S", bound=SqlUnit)


class SqlStore(Generic[S]):
    """Hands out units of work of type ``unit`` on ``db``; ``on_commit`` runs after each commit."""

    def __init__(
        self, db: Database, unit: type[S], *, consumer: str, on_commit: Callable[[], None] | None = None
    ) -> None:
        self._db = db
        self._unit = unit
        self._consumer = consumer
        self._on_commit = on_commit

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[S]:
        async with self._db.transaction() as session:
            yield self._unit(session, self._consumer)
        if self._on_commit is not None:
            self._on_commit()  # e.g. wake the outbox relay: staged events leave now, not at the next poll
