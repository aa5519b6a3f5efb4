"""Validator's table: one evaluation per training run."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.errors import NotFound

metadata = sa.MetaData()
evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("candidate_metrics", sa.JSON, nullable=False),
    sa.Column("champion_version", sa.Integer),
    sa.Column("champion_metrics", sa.JSON),
    sa.Column("slices", sa.JSON, nullable=False),
    sa.Column("registered_version", sa.Integer),
    sa.Column("holdout_rows", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


async def add(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(evaluations).values(**values))


async def by_run(session: AsyncSession, run_id: str) -> dict[str, Any] | None:
    row = (await session.execute(sa.select(evaluations).where(evaluations.c.run_id == run_id))).first()
    return dict(row._mapping) if row else None


async def list_all(session: AsyncSession, model: str | None, limit: int) -> list[dict[str, Any]]:
    query = sa.select(evaluations).order_by(evaluations.c.created_at.desc()).limit(limit)
    if model:
        query = query.where(evaluations.c.model == model)
    return [dict(r._mapping) for r in await session.execute(query)]


async def get(session: AsyncSession, evaluation_id: str) -> dict[str, Any]:
    row = (await session.execute(sa.select(evaluations).where(evaluations.c.id == evaluation_id))).first()
    if row is None:
        raise NotFound(f"evaluation {evaluation_id!r} does not exist")
    return dict(row._mapping)
