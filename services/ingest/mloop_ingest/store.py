"""Ingest's tables (datasets and their versions; the migrations' source) and its queries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.artifacts import SCHEME, sha256_hex
from mloop_common.datacontract import DatasetContract
from mloop_common.db import NAMING_CONVENTION, add_messaging_tables
from mloop_common.errors import Conflict, NotFound
from mloop_common.uow import Messaging, SqlUnit
from mloop_ingest.entities import DatasetSummary, DatasetVersion, DatasetVersionDetail, PolicyOverrides

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
add_messaging_tables(metadata)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("name", sa.String(63), sa.ForeignKey("datasets.name"), primary_key=True),
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
    sa.Column("contract", sa.JSON),
    sa.Column("labels", sa.JSON),
    sa.Column("parent_version", sa.Integer),
    sa.Column("publisher", sa.String(200)),
    sa.Column("source_uri", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("name", "upload_sha256"),  # the same upload is one version
)
# Check thresholds a dataset overrides (PUT /v1/datasets/{name}/policy); may precede the dataset's first version.
policies = sa.Table(
    "dataset_policies",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("overrides", sa.JSON, nullable=False),
    sa.Column("updated_by", sa.String(200)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# A version list leaves out the columns that grow with the width of the file.
WIDE = ("stats", "schema", "contract", "labels")
SUMMARY = [c for c in versions.c if c.name not in WIDE]
MAX_VERSION = 2**31 - 1  # PostgreSQL integer


class IngestUnit(Messaging, Protocol):
    """One transaction on ingest's records."""

    async def version_by_upload(self, dataset: str, upload_sha256: str) -> DatasetVersion | None:
        """The version recorded for these uploaded bytes, if any."""
        ...

    async def latest_published(self, dataset: str) -> DatasetVersionDetail | None:
        """The newest published version, which a new version is compared with."""
        ...

    async def allocate_version(self, dataset: str) -> int:
        """The next version number of ``dataset`` (creating the dataset on its first version)."""
        ...

    async def add_version(self, version: DatasetVersionDetail) -> DatasetVersion:
        """Record ``version``; Conflict if its bytes were recorded meanwhile. Returns it with its timestamp."""
        ...

    async def datasets(self) -> list[DatasetSummary]: ...

    async def versions(self, dataset: str) -> list[DatasetVersion]:
        """All versions of ``dataset``, oldest first; NotFound if it has none."""
        ...

    async def version(self, dataset: str, version: int) -> DatasetVersionDetail: ...

    async def policy(self, dataset: str) -> PolicyOverrides | None:
        """The thresholds ``dataset`` overrides, if it has set any."""
        ...

    async def set_policy(self, dataset: str, overrides: PolicyOverrides) -> PolicyOverrides:
        """Replace ``dataset``'s overrides; returns them with their timestamp."""
        ...

    async def artifact_references(self) -> ArtifactReferences:
        """The artifacts of every published version: its snapshot and its stored contract (``live``)."""
        ...


class SqlIngestUnit(SqlUnit):
    async def version_by_upload(self, dataset: str, upload_sha256: str) -> DatasetVersion | None:
        query = sa.select(*SUMMARY).where(versions.c.name == dataset, versions.c.upload_sha256 == upload_sha256)
        row = (await self.session.execute(query)).first()
        return _version(row._mapping) if row else None

    async def latest_published(self, dataset: str) -> DatasetVersionDetail | None:
        query = (
            sa.select(versions)
            .where(versions.c.name == dataset, versions.c.status == "published")
            .order_by(versions.c.version.desc())
            .limit(1)
        )
        row = (await self.session.execute(query)).first()
        return _detail(row._mapping) if row else None

    async def allocate_version(self, dataset: str) -> int:
        # The upsert's row lock serialises concurrent uploads of one dataset.
        statement = (
            insert(datasets)
            .values(name=dataset, next_version=2)
            .on_conflict_do_update(index_elements=["name"], set_={"next_version": datasets.c.next_version + 1})
            .returning(datasets.c.next_version - 1)
        )
        return int((await self.session.execute(statement)).scalar_one())

    async def add_version(self, version: DatasetVersionDetail) -> DatasetVersion:
        values = version.model_dump(mode="json", exclude={"created_at", "sha256"})
        values["name"] = values.pop("dataset")
        values["schema"] = values.pop("column_types")
        values["stats"] = values.pop("profile")
        statement = sa.insert(versions).values(**values).returning(versions.c.created_at)
        try:
            created_at = (await self.session.execute(statement)).scalar_one()
        except IntegrityError as exc:
            # (name, upload_sha256) is unique: a concurrent upload of the same bytes committed first.
            raise Conflict(f"dataset {version.dataset!r} already has a version with these bytes") from exc
        return version.summary().model_copy(update={"created_at": created_at})

    async def datasets(self) -> list[DatasetSummary]:
        query = (
            sa.select(
                versions.c.name,
                sa.func.count().label("versions"),
                sa.func.max(versions.c.version).filter(versions.c.status == "published").label("latest_published"),
            )
            .group_by(versions.c.name)
            .order_by(versions.c.name)
        )
        return [DatasetSummary.model_validate(row._mapping) for row in await self.session.execute(query)]

    async def versions(self, dataset: str) -> list[DatasetVersion]:
        query = sa.select(*SUMMARY).where(versions.c.name == dataset).order_by(versions.c.version)
        found = [_version(row._mapping) for row in await self.session.execute(query)]
        if not found:
            raise NotFound(f"dataset {dataset!r} does not exist")
        return found

    async def version(self, dataset: str, version: int) -> DatasetVersionDetail:
        row = None
        if 0 < version <= MAX_VERSION:  # a number the column cannot hold is simply not there (not a 500)
            query = sa.select(versions).where(versions.c.name == dataset, versions.c.version == version)
            row = (await self.session.execute(query)).first()
        if row is None:
            raise NotFound(f"dataset {dataset!r} has no version {version}")
        return _detail(row._mapping)

    async def policy(self, dataset: str) -> PolicyOverrides | None:
        row = (await self.session.execute(sa.select(policies).where(policies.c.name == dataset))).first()
        return PolicyOverrides.model_validate(row._mapping) if row else None

    async def set_policy(self, dataset: str, overrides: PolicyOverrides) -> PolicyOverrides:
        values = {"overrides": overrides.overrides, "updated_by": overrides.updated_by, "updated_at": sa.func.now()}
        statement = (
            insert(policies)
            .values(name=dataset, **values)
            .on_conflict_do_update(index_elements=["name"], set_=values)
            .returning(policies)
        )
        return PolicyOverrides.model_validate((await self.session.execute(statement)).one()._mapping)

    async def artifact_references(self) -> ArtifactReferences:
        query = sa.select(versions.c.snapshot_uri, versions.c.contract).where(versions.c.status == "published")
        rows = (await self.session.execute(query)).all()
        return live((row.snapshot_uri, row.contract) for row in rows)


def contract_uri(contract: DatasetContract) -> str:
    """Where the publication stored ``contract`` (handlers: ``put`` of its JSON under kind ``contracts``); the
    row keeps the contract itself, so its artifact's URI is derived from the same bytes."""
    digest = sha256_hex(contract.model_dump_json().encode())
    return f"{SCHEME}contracts/{digest[:2]}/{digest}.json"


def live(versions: Iterable[tuple[str | None, Any]]) -> ArtifactReferences:
    """What ingest needs kept, from each published version's (snapshot URI, contract): every published version
    is the record a model's lineage points back to, so its snapshot and its contract stay as long as it does (a
    rejected version stored neither)."""
    uris: list[str | None] = []
    for snapshot, contract in versions:
        uris.append(snapshot)
        if contract is not None:
            uris.append(contract_uri(DatasetContract.model_validate(contract)))
    return ArtifactReferences.of("ingest", uris)


def _fields(row: Any) -> dict[str, Any]:
    """A row's columns under the entity's names."""
    values = {key: row[key] for key in row.keys() if key not in ("name", *WIDE)}
    return {"dataset": row["name"], **values}


def _detail(row: Any) -> DatasetVersionDetail:
    return DatasetVersionDetail.model_validate(
        {
            **_fields(row),
            "column_types": row["schema"],
            "profile": row["stats"],
            "contract": row["contract"],
            "labels": row["labels"],
        }
    )


def _version(row: Any) -> DatasetVersion:
    return DatasetVersion.model_validate(_fields(row))
