"""The registry's tables and the queries over them; rows leave as plain dicts, never ORM objects."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.errors import NotFound

metadata = sa.MetaData()

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("dataset", sa.String(63), nullable=False),
    sa.Column("latest_spec_version", sa.Integer, nullable=False),
    sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
specs = sa.Table(
    "specs",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("spec_version", sa.Integer, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("evaluation_id", sa.String(64), nullable=False),
    sa.Column("spec_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("task", sa.String(32), nullable=False),
    sa.Column("artifact_uri", sa.Text, nullable=False),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("profile_uri", sa.Text, nullable=False),
    sa.Column("profile_sha256", sa.String(64), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False),
    sa.Column("lineage", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("alias", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now()),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("model", sa.String(63)),
    sa.Column("version", sa.Integer),
    sa.Column("detail", sa.JSON, nullable=False),
)


def _row(row: sa.Row | None) -> dict[str, Any] | None:
    return dict(row._mapping) if row is not None else None


# --- specs -------------------------------------------------------------------------------


async def get_model(session: AsyncSession, name: str, *, for_update: bool = False) -> dict[str, Any] | None:
    query = sa.select(models).where(models.c.name == name)
    if for_update:
        query = query.with_for_update()
    return _row((await session.execute(query)).first())


async def latest_spec(session: AsyncSession, name: str) -> dict[str, Any] | None:
    query = sa.select(specs).where(specs.c.name == name).order_by(specs.c.spec_version.desc()).limit(1)
    return _row((await session.execute(query)).first())


async def add_spec(session: AsyncSession, name: str, dataset: str, digest: str, body: dict[str, Any]) -> int:
    """Store a new spec version (creating the model on first use); returns its spec version."""
    model = await get_model(session, name, for_update=True)
    if model is None:
        await session.execute(sa.insert(models).values(name=name, dataset=dataset, latest_spec_version=1))
        spec_version = 1
    else:
        spec_version = model["latest_spec_version"] + 1
        await session.execute(
            sa.update(models).where(models.c.name == name).values(latest_spec_version=spec_version, dataset=dataset)
        )
    await session.execute(sa.insert(specs).values(name=name, spec_version=spec_version, digest=digest, body=body))
    return spec_version


async def get_spec(session: AsyncSession, name: str, spec_version: int | None = None) -> dict[str, Any]:
    query = sa.select(specs).where(specs.c.name == name)
    if spec_version is None:
        query = query.order_by(specs.c.spec_version.desc()).limit(1)
    else:
        query = query.where(specs.c.spec_version == spec_version)
    row = _row((await session.execute(query)).first())
    if row is None:
        raise NotFound(f"model {name!r} has no spec" + (f" version {spec_version}" if spec_version else ""))
    return row


async def list_models(session: AsyncSession, dataset: str | None = None) -> list[dict[str, Any]]:
    query = sa.select(models).order_by(models.c.name)
    if dataset:
        query = query.where(models.c.dataset == dataset)
    return [dict(r._mapping) for r in await session.execute(query)]


# --- versions ----------------------------------------------------------------------------


async def version_by_run(session: AsyncSession, model: str, run_id: str) -> dict[str, Any] | None:
    query = sa.select(model_versions).where(model_versions.c.model == model, model_versions.c.run_id == run_id)
    return _row((await session.execute(query)).first())


async def allocate_version(session: AsyncSession, model: str) -> int:
    """Next version number; the row lock of UPDATE serialises concurrent registrations."""
    result = await session.execute(
        sa.update(models)
        .where(models.c.name == model)
        .values(next_version=models.c.next_version + 1)
        .returning(models.c.next_version - 1)
    )
    allocated = result.scalar_one_or_none()
    if allocated is None:
        raise NotFound(f"model {model!r} does not exist")
    return int(allocated)


async def add_version(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(model_versions).values(**values))


async def get_version(session: AsyncSession, model: str, version: int, *, for_update: bool = False) -> dict[str, Any]:
    query = sa.select(model_versions).where(model_versions.c.model == model, model_versions.c.version == version)
    if for_update:
        query = query.with_for_update()
    row = _row((await session.execute(query)).first())
    if row is None:
        raise NotFound(f"model {model!r} has no version {version}")
    return row


async def list_versions(session: AsyncSession, model: str) -> list[dict[str, Any]]:
    query = sa.select(model_versions).where(model_versions.c.model == model).order_by(model_versions.c.version)
    return [dict(r._mapping) for r in await session.execute(query)]


async def set_status(session: AsyncSession, model: str, version: int, status: str) -> None:
    await session.execute(
        sa.update(model_versions)
        .where(model_versions.c.model == model, model_versions.c.version == version)
        .values(status=status)
    )


# --- aliases -----------------------------------------------------------------------------


async def get_alias(session: AsyncSession, model: str, alias: str, *, for_update: bool = False) -> int | None:
    query = sa.select(aliases.c.version).where(aliases.c.model == model, aliases.c.alias == alias)
    if for_update:
        query = query.with_for_update()
    return (await session.execute(query)).scalar_one_or_none()


async def aliases_of(session: AsyncSession, model: str) -> dict[str, int]:
    rows = await session.execute(sa.select(aliases.c.alias, aliases.c.version).where(aliases.c.model == model))
    return dict(rows.tuples().all())


async def set_alias(session: AsyncSession, model: str, alias: str, version: int) -> None:
    from sqlalchemy.dialects.postgresql import insert

    statement = insert(aliases).values(model=model, alias=alias, version=version)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["model", "alias"], set_={"version": version, "updated_at": sa.func.now()}
        )
    )


# --- audit -------------------------------------------------------------------------------


async def audit(
    session: AsyncSession, *, actor: str, action: str, model: str | None, version: int | None, detail: dict[str, Any]
) -> None:
    await session.execute(
        sa.insert(audit_log).values(actor=actor, action=action, model=model, version=version, detail=detail)
    )


async def read_audit(
    session: AsyncSession, *, model: str | None, limit: int, before_id: int | None
) -> list[dict[str, Any]]:
    query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if model:
        query = query.where(audit_log.c.model == model)
    if before_id:
        query = query.where(audit_log.c.id < before_id)
    return [dict(r._mapping) for r in await session.execute(query)]
