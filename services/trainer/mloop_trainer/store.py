"""Trainer's tables: runs, and the newest version of every dataset it has been told about."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.errors import NotFound

metadata = sa.MetaData()
datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("snapshot_uri", sa.Text, nullable=False),
    sa.Column("snapshot_sha256", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("time_column", sa.String(200)),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("trigger_event_id", sa.String(100), nullable=False),
    sa.Column("spec_version", sa.Integer, nullable=False),
    sa.Column("spec_digest", sa.String(64), nullable=False),
    sa.Column("dataset", sa.String(63), nullable=False),
    sa.Column("dataset_version", sa.Integer, nullable=False),
    sa.Column("dataset_sha256", sa.String(64), nullable=False),
    sa.Column("recent_data_sha256", sa.String(64)),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("code_version", sa.String(80), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


async def remember_dataset(session: AsyncSession, values: dict[str, Any]) -> None:
    """Keep the newest version per dataset (an older, replayed event never overwrites a newer one)."""
    statement = insert(datasets).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={**{k: statement.excluded[k] for k in values if k != "name"}, "updated_at": sa.func.now()},
        where=datasets.c.version < statement.excluded.version,
    )
    await session.execute(statement)


async def latest_dataset(session: AsyncSession, name: str) -> dict[str, Any]:
    row = (await session.execute(sa.select(datasets).where(datasets.c.name == name))).first()
    if row is None:
        raise NotFound(f"no version of dataset {name!r} has been published yet")
    return dict(row._mapping)


async def add_run(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(runs).values(**values))


async def list_runs(session: AsyncSession, model: str | None, limit: int) -> list[dict[str, Any]]:
    query = sa.select(runs).order_by(runs.c.finished_at.desc()).limit(limit)
    if model:
        query = query.where(runs.c.model == model)
    return [dict(r._mapping) for r in await session.execute(query)]


async def get_run(session: AsyncSession, run_id: str) -> dict[str, Any]:
    row = (await session.execute(sa.select(runs).where(runs.c.run_id == run_id))).first()
    if row is None:
        raise NotFound(f"run {run_id!r} does not exist")
    return dict(row._mapping)
