"""The validator's tables (one evaluation per training run; the published dataset versions, for pinned
evaluation sets; the migrations' source) and their queries."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from mloop_common.db import NAMING_CONVENTION, add_messaging_tables
from mloop_common.errors import Conflict, NotFound
from mloop_common.uow import Messaging, SqlUnit
from mloop_validator.entities import DatasetVersion, Evaluation

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
add_messaging_tables(metadata)

evaluations = sa.Table(
    "evaluations",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False, unique=True),
    sa.Column("decision", sa.String(16), nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("metric", sa.String(32), nullable=False),
    sa.Column("candidate_metrics", sa.JSON, nullable=False),
    sa.Column("champion_version", sa.Integer),
    sa.Column("champion_metrics", sa.JSON),
    sa.Column("slices", sa.JSON, nullable=False),
    sa.Column("registered_version", sa.Integer),
    sa.Column("holdout_rows", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("checks", sa.JSON, nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Column("settled_at", sa.DateTime(timezone=True)),
)

# Every version data.published announced (ingest publishes only those that passed its checks).
datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("snapshot_uri", sa.Text, nullable=False),
    sa.Column("snapshot_sha256", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)


class ValidatorUnit(Messaging, Protocol):
    """One transaction on the validator's records."""

    async def add_evaluation(self, evaluation: Evaluation) -> None:
        """Store a verdict; Conflict when its run already has one."""
        ...

    async def evaluation_of_run(self, run_id: str) -> Evaluation | None:
        """The verdict stored for a training run, if any."""
        ...

    async def settle(self, evaluation_id: str, registered_version: int | None, at: datetime) -> None:
        """Record that the verdict's registration or rejection is done (and the version registered)."""
        ...

    async def evaluation(self, evaluation_id: str) -> Evaluation: ...

    async def evaluations(self, model: str | None, limit: int) -> list[Evaluation]: ...

    async def remember_dataset(self, dataset: DatasetVersion) -> None:
        """Keep a published version (a replayed publication changes nothing)."""
        ...

    async def dataset_version(self, name: str, version: int) -> DatasetVersion | None:
        """A version data.published announced, if any."""
        ...


class SqlValidatorUnit(SqlUnit):
    async def add_evaluation(self, evaluation: Evaluation) -> None:
        values = evaluation.model_dump(mode="json", exclude={"created_at", "settled_at"})
        try:
            await self.session.execute(sa.insert(evaluations).values(**values))
        except IntegrityError as exc:
            raise Conflict(f"run {evaluation.run_id} already has a verdict", field="run_id") from exc

    async def evaluation_of_run(self, run_id: str) -> Evaluation | None:
        row = (await self.session.execute(sa.select(evaluations).where(evaluations.c.run_id == run_id))).first()
        return Evaluation.model_validate(row) if row is not None else None

    async def settle(self, evaluation_id: str, registered_version: int | None, at: datetime) -> None:
        await self.session.execute(
            sa.update(evaluations)
            .where(evaluations.c.id == evaluation_id)
            .values(registered_version=registered_version, settled_at=at)
        )

    async def evaluation(self, evaluation_id: str) -> Evaluation:
        row = (await self.session.execute(sa.select(evaluations).where(evaluations.c.id == evaluation_id))).first()
        if row is None:
            raise NotFound(f"evaluation {evaluation_id!r} does not exist", field="evaluation_id")
        return Evaluation.model_validate(row)

    async def evaluations(self, model: str | None, limit: int) -> list[Evaluation]:
        query = sa.select(evaluations).order_by(evaluations.c.created_at.desc()).limit(limit)
        if model:
            query = query.where(evaluations.c.model == model)
        return [Evaluation.model_validate(row) for row in await self.session.execute(query)]

    async def remember_dataset(self, dataset: DatasetVersion) -> None:
        statement = insert(datasets).values(**dataset.model_dump()).on_conflict_do_nothing()
        await self.session.execute(statement)

    async def dataset_version(self, name: str, version: int) -> DatasetVersion | None:
        query = sa.select(datasets).where(datasets.c.name == name, datasets.c.version == version)
        row = (await self.session.execute(query)).first()
        return DatasetVersion.model_validate(row) if row is not None else None
