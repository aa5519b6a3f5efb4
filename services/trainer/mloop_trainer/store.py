"""The trainer's tables (runs, and the newest version of every dataset it was told about; the migrations'
source) and its queries."""

from __future__ import annotations

from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.db import NAMING_CONVENTION, add_messaging_tables
from mloop_common.errors import NotFound
from mloop_common.uow import Messaging, SqlUnit
from mloop_trainer.entities import DatasetRef, Run

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
add_messaging_tables(metadata)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("snapshot_uri", sa.Text, nullable=False),
    sa.Column("snapshot_sha256", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("time_column", sa.String(200)),
    sa.Column("contract_uri", sa.Text),
    sa.Column("contract_sha256", sa.String(64)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("model", sa.String(63), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=False),
    sa.Column("trigger_event_id", sa.String(100), nullable=False),
    sa.Column("spec_version", sa.Integer, nullable=False),
    sa.Column("spec_digest", sa.String(64), nullable=False),
    sa.Column("dataset", sa.String(63), nullable=False),
    sa.Column("dataset_version", sa.Integer, nullable=False),
    sa.Column("dataset_sha256", sa.String(64), nullable=False),
    sa.Column("recent_data_sha256", sa.String(64)),
    sa.Column("dataset_uri", sa.Text),
    sa.Column("recent_data_uri", sa.Text),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("code_version", sa.String(80), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("trigger_event_id", "model"),  # one run per model per triggering event
)


class TrainerUnit(Messaging, Protocol):
    """One transaction on the trainer's records."""

    async def remember_dataset(self, dataset: DatasetRef) -> None:
        """Keep ``dataset`` if it is the newest version of its name seen so far."""
        ...

    async def latest_dataset(self, name: str) -> DatasetRef:
        """The newest version of dataset ``name``; NotFound before any was published."""
        ...

    async def add_run(self, run: Run) -> None: ...

    async def has_trained(self, model: str, spec_version: int, dataset_version: int) -> bool:
        """Whether a run (succeeded or failed) of this spec version on this dataset version alone is recorded."""
        ...

    async def run(self, run_id: str) -> Run: ...

    async def runs(self, model: str | None, limit: int) -> list[Run]:
        """Runs, newest first, of one model or of all."""
        ...

    async def artifact_references(self) -> ArtifactReferences:
        """What the trainer needs kept: the newest snapshot and contract of every dataset (the next drift retrain
        starts from them) and every succeeded run's inputs and outputs, which ``POST /v1/runs/{id}/reproduce``
        reads for as long as the run is recorded. A failed run stored no output and cannot be reproduced."""
        ...


class SqlTrainerUnit(SqlUnit):
    async def remember_dataset(self, dataset: DatasetRef) -> None:
        values = dataset.model_dump()
        statement = insert(datasets).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={**{k: statement.excluded[k] for k in values if k != "name"}, "updated_at": sa.func.now()},
            # An older version, replayed, never overwrites a newer one.
            where=datasets.c.version < statement.excluded.version,
        )
        await self.session.execute(statement)

    async def latest_dataset(self, name: str) -> DatasetRef:
        row = (await self.session.execute(sa.select(datasets).where(datasets.c.name == name))).first()
        if row is None:
            raise NotFound(f"no version of dataset {name!r} has been published yet")
        return DatasetRef.model_validate(row)

    async def add_run(self, run: Run) -> None:
        values = run.model_dump(exclude={"details"})
        await self.session.execute(sa.insert(runs).values(**values, details=run.details.model_dump(mode="json")))

    async def has_trained(self, model: str, spec_version: int, dataset_version: int) -> bool:
        query = sa.select(runs.c.run_id).where(
            runs.c.model == model,
            runs.c.spec_version == spec_version,
            runs.c.dataset_version == dataset_version,
            runs.c.recent_data_sha256.is_(None),  # a drift retrain also learned from production rows
        )
        return (await self.session.execute(query.limit(1))).first() is not None

    async def run(self, run_id: str) -> Run:
        row = (await self.session.execute(sa.select(runs).where(runs.c.run_id == run_id))).first()
        if row is None:
            raise NotFound(f"run {run_id!r} does not exist", field="run_id")
        return Run.model_validate(row)

    async def artifact_references(self) -> ArtifactReferences:
        newest = (await self.session.execute(sa.select(datasets.c.snapshot_uri, datasets.c.contract_uri))).all()
        outputs = [runs.c.details[name]["uri"].as_string() for name in ("artifact", "profile", "holdout")]
        query = sa.select(runs.c.dataset_uri, runs.c.recent_data_uri, *outputs).where(runs.c.status == "succeeded")
        succeeded = (await self.session.execute(query)).all()
        return ArtifactReferences.of("trainer", [uri for row in [*newest, *succeeded] for uri in row])

    async def runs(self, model: str | None, limit: int) -> list[Run]:
        query = sa.select(runs).order_by(runs.c.finished_at.desc()).limit(limit)
        if model:
            query = query.where(runs.c.model == model)
        return [Run.model_validate(row) for row in await self.session.execute(query)]
