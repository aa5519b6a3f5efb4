"""Drift's tables: monitored versions, observations (prediction + later label), reports."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.errors import NotFound

metadata = sa.MetaData()
monitored = sa.Table(
    "monitored_versions",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("task", sa.String(32), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    sa.Column("profile", sa.JSON, nullable=False),
    sa.Column("baseline", sa.JSON, nullable=False),
    sa.Column("window_size", sa.Integer, nullable=False),
    sa.Column("cooldown_windows", sa.Integer, nullable=False),
    sa.Column("next_window", sa.Integer, nullable=False),
    sa.Column("cooldown", sa.JSON, nullable=False),
    sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("promoted_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)
observations = sa.Table(
    "observations",
    metadata,
    sa.Column("request_id", sa.String(100), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.Integer),
    sa.Column("logged_at", sa.DateTime(timezone=True)),
    sa.Column("inputs", sa.JSON),
    sa.Column("prediction", sa.JSON),
    sa.Column("probabilities", sa.JSON),
    sa.Column("label", sa.JSON),
    sa.Column("labelled_at", sa.DateTime(timezone=True)),
    sa.Column("window_index", sa.Integer),
)
reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("window_index", sa.Integer, nullable=False),
    sa.Column("drift_detected", sa.Boolean, nullable=False),
    sa.Column("cause", sa.String(32)),
    sa.Column("action", sa.String(32)),
    sa.Column("emitted", sa.Boolean, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
)


async def add_monitored(session: AsyncSession, values: dict[str, Any]) -> None:
    """Watch a newly promoted version; the model's other versions stop being judged."""
    statement = insert(monitored).values(**values, next_window=1, cooldown={}, retired=False)
    await session.execute(statement.on_conflict_do_update(index_elements=["model", "version"], set_={"retired": False}))
    await session.execute(
        sa.update(monitored)
        .where(monitored.c.model == values["model"], monitored.c.version != values["version"])
        .values(retired=True)
    )


async def get_monitored(
    session: AsyncSession, model: str, version: int, *, for_update: bool = False
) -> dict[str, Any] | None:
    query = sa.select(monitored).where(monitored.c.model == model, monitored.c.version == version)
    if for_update:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return dict(row._mapping) if row else None


async def update_monitored(session: AsyncSession, model: str, version: int, **values: Any) -> None:
    await session.execute(
        sa.update(monitored).where(monitored.c.model == model, monitored.c.version == version).values(**values)
    )


async def record_predictions(session: AsyncSession, model: str, version: int, rows: list[dict[str, Any]]) -> None:
    """Upsert predictions; a label that arrived first is kept."""
    if not rows:
        return
    statement = insert(observations).values([{**r, "model": model, "version": version} for r in rows])
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["request_id"],
            set_={k: statement.excluded[k] for k in ("version", "logged_at", "inputs", "prediction", "probabilities")},
            where=observations.c.logged_at.is_(None),
        )
    )


async def record_labels(session: AsyncSession, model: str, rows: list[dict[str, Any]]) -> None:
    """Upsert labels; a label for a prediction not seen yet waits in its own row."""
    if not rows:
        return
    statement = insert(observations).values([{**r, "model": model} for r in rows])
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=["request_id"],
            set_={"label": statement.excluded.label, "labelled_at": statement.excluded.labelled_at},
        )
    )


async def open_versions(session: AsyncSession, model: str) -> list[int]:
    """Versions of ``model`` with predictions not yet in a window."""
    query = (
        sa.select(observations.c.version)
        .distinct()
        .where(
            observations.c.model == model, observations.c.window_index.is_(None), observations.c.logged_at.is_not(None)
        )
    )
    return [v for (v,) in await session.execute(query)]


async def open_window_stats(session: AsyncSession, model: str, version: int, size: int) -> tuple[int, int]:
    """(unassigned predictions, labelled among the oldest ``size`` of them)."""
    base = sa.select(observations.c.label).where(
        observations.c.model == model,
        observations.c.version == version,
        observations.c.window_index.is_(None),
        observations.c.logged_at.is_not(None),
    )
    total = (await session.execute(sa.select(sa.func.count()).select_from(base.subquery()))).scalar_one()
    oldest = base.order_by(observations.c.logged_at, observations.c.request_id).limit(size).subquery()
    labelled = (
        await session.execute(sa.select(sa.func.count()).select_from(oldest).where(oldest.c.label.is_not(None)))
    ).scalar_one()
    return int(total), int(labelled)


async def take_window(session: AsyncSession, model: str, version: int, size: int, index: int) -> list[dict[str, Any]]:
    """Assign the oldest ``size`` open predictions to window ``index`` and return them."""
    oldest = (
        sa.select(observations.c.request_id)
        .where(
            observations.c.model == model,
            observations.c.version == version,
            observations.c.window_index.is_(None),
            observations.c.logged_at.is_not(None),
        )
        .order_by(observations.c.logged_at, observations.c.request_id)
        .limit(size)
        .with_for_update()
    )
    ids = [r for (r,) in await session.execute(oldest)]
    await session.execute(sa.update(observations).where(observations.c.request_id.in_(ids)).values(window_index=index))
    query = (
        sa.select(observations)
        .where(observations.c.request_id.in_(ids))
        .order_by(observations.c.logged_at, observations.c.request_id)
    )
    return [dict(r._mapping) for r in await session.execute(query)]


async def count_labelled(session: AsyncSession, model: str, version: int) -> int:
    """Labelled predictions made by this version: new evidence since it went live."""
    query = sa.select(sa.func.count()).where(
        observations.c.model == model,
        observations.c.version == version,
        observations.c.labelled_at.is_not(None),
        observations.c.logged_at.is_not(None),
    )
    return int((await session.execute(query)).scalar_one())


async def recent_labelled(session: AsyncSession, model: str, limit: int) -> list[dict[str, Any]]:
    """The newest labelled predictions of ``model`` (any version), oldest first."""
    query = (
        sa.select(observations.c.inputs, observations.c.label, observations.c.logged_at)
        .where(
            observations.c.model == model,
            observations.c.labelled_at.is_not(None),
            observations.c.logged_at.is_not(None),
        )
        .order_by(observations.c.logged_at.desc())
        .limit(limit)
    )
    rows = [dict(r._mapping) for r in await session.execute(query)]
    return rows[::-1]


async def add_report(session: AsyncSession, values: dict[str, Any]) -> None:
    await session.execute(sa.insert(reports).values(**values))


async def list_reports(session: AsyncSession, model: str, limit: int) -> list[dict[str, Any]]:
    query = (
        sa.select(*[c for c in reports.c if c.name != "report"])
        .where(reports.c.model == model)
        .order_by(reports.c.created_at.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in await session.execute(query)]


async def get_report(session: AsyncSession, model: str, report_id: str) -> dict[str, Any]:
    row = (await session.execute(sa.select(reports).where(reports.c.model == model, reports.c.id == report_id))).first()
    if row is None:
        raise NotFound(f"drift report {report_id!r} of model {model!r} does not exist")
    return dict(row._mapping)
