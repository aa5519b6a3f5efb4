"""Database access: async engine, one transaction per unit of work, migrations, inbox and outbox.

Each service owns one PostgreSQL schema; the connection's ``search_path`` points at it, so
tables are unqualified and the shared inbox/outbox tables live beside the service's own.
"""

from __future__ import annotations

import asyncio
import json
import logging.config
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from mloop_common.events import MAX_MESSAGE_BYTES, Envelope, Header, ensure_fits, record_size, to_record
from mloop_common.jsoncodec import json_dumps, json_loads
from mloop_common.settings import ServiceSettings
from mloop_common.telemetry import current_trace_headers

# Constraint names as PostgreSQL itself picks them for unnamed constraints (what the 0001
# migrations created), so that every later migration can name, and drop, what it creates.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "%(table_name)s_%(column_0_N_name)s_key",
    "fk": "%(table_name)s_%(column_0_N_name)s_fkey",
    "pk": "%(table_name)s_pkey",
}


def add_messaging_tables(metadata: sa.MetaData) -> tuple[sa.Table, sa.Table]:
    """Add the shared ``inbox`` and ``outbox`` tables to a service's metadata (their one definition)."""
    inbox = sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.String(200), primary_key=True),
        sa.Column("event_id", sa.String(100), primary_key=True),
        sa.Column("event_type", sa.String(100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.String(100), nullable=False, unique=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=False),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index("ix_outbox_pending", "seq", postgresql_where=sa.text("sent_at IS NULL")),
    )
    return inbox, outbox


# The inbox/outbox functions below work in any service's schema (through its search_path).
messaging_metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
inbox_table, outbox_table = add_messaging_tables(messaging_metadata)


class Database:
    """An async engine bound to one schema, handing out transactional sessions."""

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 5,
        pool_timeout: float = 5.0,
        max_overflow: int = 10,
    ) -> None:
        # connect timeout: a database that does not answer fails a request within seconds (503), not a minute.
        connect_args: dict[str, Any] = {"timeout": 10}
        if schema:
            connect_args["server_settings"] = {"search_path": schema}
        self.schema = schema
        self.engine: AsyncEngine = create_async_engine(
            url,
            pool_size=pool_size,
            pool_timeout=pool_timeout,
            max_overflow=max_overflow,
            pool_pre_ping=True,
            connect_args=connect_args,
            json_serializer=json_dumps,
            json_deserializer=json_loads,
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
            await _prepare_schema(conn, self.schema)
            await conn.run_sync(_upgrade, script_location)

    async def dispose(self) -> None:
        await self.engine.dispose()


# --- migrations ------------------------------------------------------------------------------

# How Alembic compares a service's metadata with its schema (autogenerate, `alembic check`, tests).
# Only the connection's default schema (the service's, through search_path) is reflected.
AUTOGENERATE_OPTIONS: dict[str, Any] = {"compare_type": True, "compare_server_default": True, "include_schemas": False}


async def _prepare_schema(conn: AsyncConnection, schema: str | None) -> None:
    """Create the service's schema when missing and hold the schema's migration lock for this transaction."""
    if schema:
        exists = await conn.execute(sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :name"), {"name": schema})
        if exists.first() is None:  # checked first: a service role may not create schemas
            await conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    await conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(current_schema()))"))


def _upgrade(connection: sa.Connection, script_location: str) -> None:
    config = Config()
    config.set_main_option("script_location", script_location)
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def run_migrations_env(service: str, target_metadata: sa.MetaData, settings_class: type[ServiceSettings]) -> None:
    """Body of every service's Alembic ``env.py``.

    ``Database.migrate`` passes its connection (already in the service's schema and locked) in
    ``config.attributes["connection"]``. From the alembic CLI (``cd services/<svc> && alembic ...``)
    the URL and schema are the service's own settings (``MLOOP_<SVC>_DATABASE_URL`` /
    ``MLOOP_<SVC>_DATABASE_SCHEMA``, local defaults otherwise), exactly as the running service uses them.
    """
    from alembic import context

    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_migrations(connection, service, target_metadata)
        return
    if config.config_file_name is not None:
        logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)
    own = settings_class()
    if context.is_offline_mode():  # `alembic upgrade head --sql`: print the SQL, run nothing
        context.configure(url=own.database_url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.execute(f'SET search_path TO "{own.database_schema}"')
            context.run_migrations()
        return
    asyncio.run(_run_online(own.database_url or "", own.database_schema, service, target_metadata))


async def _run_online(url: str, schema: str | None, service: str, target_metadata: sa.MetaData) -> None:
    database = Database(url, schema=schema, pool_size=1)
    try:
        async with database.engine.begin() as conn:
            await _prepare_schema(conn, schema)
            await conn.run_sync(_run_migrations, service, target_metadata)
    finally:
        await database.dispose()


def _run_migrations(connection: sa.Connection, service: str, target_metadata: sa.MetaData) -> None:
    """Run the migration command on ``connection``; the version table is found through its search_path."""
    from alembic import context

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        process_revision_directives=_numbered_revisions(service),
        **AUTOGENERATE_OPTIONS,
    )
    with context.begin_transaction():
        context.run_migrations()


def _numbered_revisions(service: str) -> Callable[..., None]:
    """Give a new revision the next id in the ``<service>_NNNN`` series unless ``--rev-id`` was given."""

    def process(context: Any, revision: Any, directives: list[Any]) -> None:
        cmd_opts = context.config.cmd_opts if context.config is not None else None
        if not directives or getattr(cmd_opts, "rev_id", None):
            return
        numbers = [
            int(script.revision.rpartition("_")[2])
            for script in context.script.walk_revisions()
            if re.fullmatch(rf"{service}_\d+", script.revision)
        ]
        directives[0].rev_id = f"{service}_{max(numbers, default=0) + 1:04d}"

    return process


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


# A session may carry the broker's message size limit under this ``info`` key (the Runtime sets it).
MAX_MESSAGE_BYTES_INFO = "mloop.max_message_bytes"
# The NOTIFY channel of a schema's outbox: a commit that enqueued wakes the relays LISTENing on it.
OUTBOX_CHANNEL_SQL = "left('mloop_outbox_' || current_schema(), 63)"


async def enqueue(session: AsyncSession, event: Envelope, *, max_bytes: int | None = None) -> None:
    """Stage ``event`` for publishing; it leaves only if this transaction commits.

    An event over ``max_bytes`` (default: the session's ``info[MAX_MESSAGE_BYTES_INFO]``, else
    ``MAX_MESSAGE_BYTES``) raises ``PayloadTooLarge`` and writes nothing: the broker would refuse it.
    """
    if event.traceparent is None:
        event = event.with_trace(*current_trace_headers())
    key, value, headers = to_record(event)
    limit = max_bytes or session.info.get(MAX_MESSAGE_BYTES_INFO, MAX_MESSAGE_BYTES)
    ensure_fits(event.topic, key, value, headers, limit)
    await session.execute(
        sa.insert(outbox_table).values(
            event_id=event.id,
            topic=event.topic,
            key=key,
            value=value,
            headers=json.dumps([[k, v.decode()] for k, v in headers]),
        )
    )
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit (and once per transaction however many events it stages).
        await session.execute(sa.text(f"SELECT pg_notify({OUTBOX_CHANNEL_SQL}, '')"))


async def listen_for_outbox(db: Database, on_notify: Callable[[], None]) -> asyncpg.Connection:
    """A dedicated connection on which every commit that enqueued into ``db``'s outbox calls ``on_notify``.

    The caller owns it: close it when done, and open a new one when it drops (notifications sent
    while no connection listened are lost, so poll once after reconnecting).
    """
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    server_settings = {"search_path": db.schema} if db.schema else None
    connection = await asyncpg.connect(url, server_settings=server_settings)
    try:
        channel = await connection.fetchval(f"SELECT {OUTBOX_CHANNEL_SQL}")
        await connection.add_listener(channel, lambda *_: on_notify())
    except BaseException:
        await connection.close()
        raise
    return connection


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    topic: str
    key: bytes
    value: bytes
    headers: list[Header]

    @property
    def size(self) -> int:
        """Encoded size, as the broker's message size limit counts it."""
        return record_size(self.key, self.value, self.headers)


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


async def outbox_backlog(session: AsyncSession) -> tuple[int, float]:
    """How many rows wait to be published, and the age in seconds of the oldest one (0 when none)."""
    result = await session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.extract("epoch", sa.func.now() - sa.func.min(outbox_table.c.created_at)), 0),
        ).where(outbox_table.c.sent_at.is_(None))
    )
    pending, age = result.one()
    return int(pending), float(age)


async def purge_sent(session: AsyncSession, older_than_seconds: float) -> int:
    """Delete rows published long ago; the outbox is a queue, not an archive."""
    result = await session.execute(
        sa.delete(outbox_table).where(
            outbox_table.c.sent_at < sa.func.now() - sa.text(f"interval '{int(older_than_seconds)} seconds'")
        )
    )
    return cast("sa.CursorResult[Any]", result).rowcount or 0


async def purge_handled(session: AsyncSession, older_than_seconds: float) -> int:
    """Forget events handled long ago: the inbox only needs ids the broker could still deliver again."""
    result = await session.execute(
        sa.delete(inbox_table).where(
            inbox_table.c.handled_at < sa.func.now() - sa.text(f"interval '{int(older_than_seconds)} seconds'")
        )
    )
    return cast("sa.CursorResult[Any]", result).rowcount or 0


async def mark_sent(session: AsyncSession, seqs: list[int]) -> None:
    await session.execute(sa.update(outbox_table).where(outbox_table.c.seq.in_(seqs)).values(sent_at=sa.func.now()))
