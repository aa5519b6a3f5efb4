"""Ingest's tables: datasets and their versions."""

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
    sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("upload_sha256", sa.String(64), nullable=False),
    sa.Column("snapshot_uri", sa.Text),
    sa.Column("snapshot_sha256", sa.String(64)),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("columns", sa.JSON, nullable=False),
    sa.Column("schema", sa.JSON, nullable=False),
    sa.Column("stats", sa.JSON, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("time_column", sa.String(200)),
    sa.Column("description", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)

SUMMARY = [c for c in versions.c if c.name not in ("stats", "schema")]


async def by_upload(session: AsyncSession, name: str, upload_sha256: str) -> dict[str, Any] | None:
    row = (
        await session.execute(
            sa.select(versions).where(versions.c.name == name, versions.c.upload_sha256 == upload_sha256)
        )
    ).first()
    return dict(row._mapping) if row else None


async def latest_accepted_schema(session: AsyncSession, name: str) -> dict[str, str] | None:
    query = (
        sa.select(versions.c.schema)
        .where(versions.c.name == name, versions.c.status == "published")
        .order_by(versions.c.version.desc())
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def allocate_version(session: AsyncSession, name: str) -> int:
    """Next version number of ``name``; the upsert's row lock serialises concurrent uploads."""
    statement = insert(datasets).values(name=name, next_version=2)
    statement = statement.on_conflict_do_update(
        index_elements=["name"], set_={"next_version": datasets.c.next_version + 1}
    ).returning(datasets.c.next_version - 1)
    return int((await session.execute(statement)).scalar_one())


async def add_version(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(versions).values(**values))


async def list_datasets(session: AsyncSession) -> list[dict[str, Any]]:
    query = (
        sa.select(
            versions.c.name,
            sa.func.count().label("versions"),
            sa.func.max(versions.c.version).filter(versions.c.status == "published").label("latest_published"),
        )
        .group_by(versions.c.name)
        .order_by(versions.c.name)
    )
    return [dict(r._mapping) for r in await session.execute(query)]


async def list_versions(session: AsyncSession, name: str) -> list[dict[str, Any]]:
    query = sa.select(*SUMMARY).where(versions.c.name == name).order_by(versions.c.version)
    rows = [dict(r._mapping) for r in await session.execute(query)]
    if not rows:
        raise NotFound(f"dataset {name!r} does not exist")
    return rows


async def get_version(session: AsyncSession, name: str, version: int) -> dict[str, Any]:
    row = (
        await session.execute(sa.select(versions).where(versions.c.name == name, versions.c.version == version))
    ).first()
    if row is None:
        raise NotFound(f"dataset {name!r} has no version {version}")
    return dict(row._mapping)
