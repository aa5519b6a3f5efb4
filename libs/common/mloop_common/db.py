"""Database access: async engine, one transaction per unit of work, migrations, inbox and outbox.

Each service owns one PostgreSQL schema; the connection's ``search_path`` points at it, so
tables are unqualified and the shared inbox/outbox tables live beside the service's own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mloop_common.events import Envelope, to_record
from mloop_common.telemetry import current_trace_headers

messaging_metadata = sa.MetaData()

inbox_table = sa.Table(
    "inbox",
    messaging_metadata,
    sa.Column("consumer", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(100), primary_key=True),
    sa.Column("event_type", sa.String(100), nullable=False),
    sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
)

outbox_table = sa.Table(
    "outbox",
    messaging_metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.String(100), nullable=False, unique=True),
    sa.Column("topic", sa.String(200), nullable=False),
    sa.Column("key", sa.LargeBinary, nullable=False),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
)


def create_messaging_tables(op: Any) -> None:
    """Alembic helper: create the inbox and outbox tables in the service's schema."""
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(100), nullable=False, unique=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_outbox_pending", "outbox", ["seq"], postgresql_where=sa.text("sent_at IS NULL"))


class Database:
    """An async engine bound to one schema, handing out transactional sessions."""

    def __init__(self, url: str, *, schema: str | None = None, pool_size: int = 5) -> None:
        connect_args: dict[str, Any] = {}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(
            url, pool_size=pool_size, pool_pre_ping=True, connect_args=connect_args
        )
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commits when the block succeeds, rolls back otherwise."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def migrate(self, script_location: str) -> None:
        """Bring the schema to the newest Alembic revision (serialised across processes)."""
        async with self.engine.begin() as conn:
            if self.schema:
                exists = await conn.execute(
                    sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": self.schema}
                )
                if exists.first() is None:  # checked first: a service role may not create schemas
                    await conn.execute(sa.text(f'CREATE SCHEMA "{self.schema}"'))
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema()))"))
            await conn.run_sync(_upgrade, script_location)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _upgrade(connection: sa.Connection, script_location: str) -> None:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def run_migrations_env() -> None:
    """Body of every service's Alembic ``env.py``: run on the connection ``migrate`` passes."""
    from alembic import context

    connection = context.config.attributes["connection"]
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()


# --- inbox: idempotent consumers ----------------------------------------------------------


async def already_handled(session: AsyncSession, consumer: str, event_id: str) -> bool:
    """Whether ``consumer`` has already recorded ``event_id`` (a cheap pre-check)."""
    row = await session.execute(
        sa.select(sa.literal(1)).where(inbox_table.c.consumer == consumer, inbox_table.c.event_id == event_id)
    )
    return row.first() is not None


async def claim_event(session: AsyncSession, consumer: str, event: Envelope) -> bool:
    """Record ``event`` as handled in this transaction; False if it already was."""
    result = await session.execute(
        pg_insert(inbox_table)
        .values(consumer=consumer, event_id=event.id, event_type=event.type)
        .on_conflict_do_nothing()
        .returning(inbox_table.c.event_id)
    )
    return result.first() is not None


# --- outbox: publish exactly what was committed --------------------------------------------


async def enqueue(session: AsyncSession, event: Envelope) -> None:
    """Stage ``event`` for publishing; it leaves only if this transaction commits."""
    if event.traceparent is None:
        event = event.with_trace(*current_trace_headers())
    key, value, headers = to_record(event)
    await session.execute(
        sa.insert(outbox_table).values(
            event_id=event.id,
            topic=event.topic,
            key=key,
            value=value,
            headers=json.dumps([[k, v.decode()] for k, v in headers]),
        )
    )


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


async def lock_pending(session: AsyncSession, limit: int) -> list[OutboxRow]:
    """Lock up to ``limit`` unsent rows, oldest first, or none while another relay is publishing.

    One relay per schema publishes at a time (a transaction-scoped advisory lock), so events
    for one key leave in commit order even when several replicas of a service run relays.
    """
    leader = await session.execute(sa.text("SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || '.outbox'))"))
    if not leader.scalar_one():
        return []
    result = await session.execute(
        sa.select(
            outbox_table.c.seq, outbox_table.c.topic, outbox_table.c.key, outbox_table.c.value, outbox_table.c.headers
        )
        .where(outbox_table.c.sent_at.is_(None))
        .order_by(outbox_table.c.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return [
        OutboxRow(seq, topic, bytes(key), bytes(value), [(k, v.encode()) for k, v in json.loads(headers)])
        for seq, topic, key, value, headers in result
    ]


async def purge_sent(session: AsyncSession, older_than_seconds: float) -> int:
    """Delete rows published long ago; the outbox is a queue, not an archive."""
    result = await session.execute(
        sa.delete(outbox_table).where(
            outbox_table.c.sent_at < sa.func.now() - sa.text(f"interval '{int(older_than_seconds)} seconds'")
        )
    )
    return result.rowcount or 0


async def mark_sent(session: AsyncSession, seqs: list[int]) -> None:
    await session.execute(sa.update(outbox_table).where(outbox_table.c.seq.in_(seqs)).values(sent_at=sa.func.now()))
