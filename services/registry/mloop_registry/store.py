"""The registry's tables (the migrations' source), its unit-of-work port and the SQL implementation of it."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.contracts import AuditEntry, SpecView, VersionStatus
from mloop_common.db import NAMING_CONVENTION, add_messaging_tables
from mloop_common.errors import Conflict, NotFound
from mloop_common.spec import ModelSpec
from mloop_common.uow import Messaging, SqlUnit
from mloop_registry.alerts import Alert, Delivery
from mloop_registry.audit_chain import GENESIS, ChainedEntry, entry_hash
from mloop_registry.entities import ApiKey, Model, ServingReport, Version
from mloop_registry.search import And, Condition, Node, Or

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
add_messaging_tables(metadata)

models = sa.Table(
    "models",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("dataset", sa.String(63), nullable=False, index=True),
    sa.Column("latest_spec_version", sa.Integer, nullable=False),
    sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
specs = sa.Table(
    "specs",
    metadata,
    sa.Column("name", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("spec_version", sa.Integer, primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
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
    sa.Column("description", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("model", "run_id"),  # a run registers at most one version
)
aliases = sa.Table(
    "aliases",
    metadata,
    sa.Column("model", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("alias", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
)
# Tags: key=value, or a plain label (value ""); bounded by mloop_registry.tags.
model_tags = sa.Table(
    "model_tags",
    metadata,
    sa.Column("model", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)
version_tags = sa.Table(
    "version_tags",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("key", sa.String(63), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
    sa.Index("ix_version_tags_key_value", "key", "value"),
)
# What each serving instance last said about loading each alias of a model (events model.served).
serving_reports = sa.Table(
    "serving_reports",
    metadata,
    sa.Column("model", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
    sa.Column("instance", sa.String(200), primary_key=True),
    sa.Column("alias", sa.String(63), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("loaded", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("serving_version", sa.Integer),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
)
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("model", sa.String(63), index=True),
    sa.Column("version", sa.Integer),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),  # see audit_chain: each entry names its predecessor
    sa.Column("hash", sa.String(64), nullable=False),
)
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(12), primary_key=True),
    sa.Column("name", sa.String(63), nullable=False),
    sa.Column("role", sa.String(32), nullable=False),
    sa.Column("hash", sa.String(200), nullable=False),  # scrypt, with its parameters and salt
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)
# The alerts' outbox: one row per (alert, channel), written with the event's inbox claim, sent by
# mloop_registry.alert_delivery with retries until delivered_at or failed_at is set.
alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("alert_id", sa.String(36), nullable=False),
    sa.Column("channel", sa.String(63), nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("model", sa.String(200), nullable=False),
    sa.Column("alert", sa.JSON, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now(), index=True),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    sa.Column("failed_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.UniqueConstraint("alert_id", "channel"),
)
# The audit log is append-only: a trigger (created by migration registry_0001, which Alembic does
# not compare) makes the database refuse UPDATE and DELETE. Declared here too, so create_all has it.
for _event, _statement in [
    (
        "after_create",
        "CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "        BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$",
    ),
    (
        "after_create",
        "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    ),
    ("after_drop", "DROP FUNCTION IF EXISTS audit_log_append_only()"),
]:
    sa.event.listen(audit_log, _event, sa.DDL(_statement).execute_if(dialect="postgresql"))


class RegistryUnit(Messaging, Protocol):
    """One transaction on the registry's records."""

    async def model(self, name: str, *, for_update: bool = False) -> Model | None:
        """The model ``name``, or None; ``for_update`` holds its row until the unit ends."""
        ...

    async def models(self, dataset: str | None) -> list[Model]:
        """Every model (trained from ``dataset`` when given), by name."""
        ...

    async def add_spec(self, spec: ModelSpec, digest: str, spec_version: int) -> SpecView:
        """Store ``spec`` as ``spec_version`` of its model and make it the latest; version 1 creates the model.

        Conflict when a concurrent unit stored that spec version (or created the model) first.
        """
        ...

    async def spec(self, name: str, spec_version: int | None = None) -> SpecView:
        """One spec version of a model (default: the latest); NotFound if there is none."""
        ...

    async def version_by_run(self, model: str, run_id: str) -> Version | None:
        """The version that training run ``run_id`` registered, if any."""
        ...

    async def allocate_version(self, model: str) -> int:
        """The model's next version number; concurrent units get distinct numbers."""
        ...

    async def add_version(self, version: Version) -> Version:
        """Record a new version; Conflict when its run (or number) is already registered."""
        ...

    async def version(self, model: str, version: int, *, for_update: bool = False) -> Version:
        """One version; NotFound if it does not exist."""
        ...

    async def artifact_references(self) -> ArtifactReferences:
        """What the registry needs kept: every version's model and reference profile (any status: an archived
        version can be rolled back to, a pending one approved) and, by digest, the training data its lineage names
        (dataset snapshot, recent production rows)."""
        ...

    async def versions(self, model: str) -> list[Version]:
        """Every version of a model, oldest first."""
        ...

    async def set_status(self, model: str, version: int, status: VersionStatus) -> None: ...

    async def alias(self, model: str, alias: str, *, for_update: bool = False) -> int | None:
        """The version ``alias`` points at, or None when it is not set."""
        ...

    async def aliases(self, model: str) -> dict[str, int]:
        """Every alias of a model and the version it points at."""
        ...

    async def set_alias(self, model: str, alias: str, version: int) -> None: ...

    async def clear_alias(self, model: str, alias: str) -> None: ...

    async def alias_moved_at(self, alias: str) -> dict[str, datetime]:
        """When ``alias`` last moved, for every model that has it."""
        ...

    async def report_serving(self, report: ServingReport) -> None:
        """Keep ``report`` as the latest word of its serving instance on its model's alias."""
        ...

    async def serving_reports(self, model: str) -> list[ServingReport]:
        """The latest report of every serving instance on every alias of ``model``."""
        ...

    async def audit(
        self, *, actor: str, action: str, model: str | None, version: int | None, detail: dict[str, Any]
    ) -> None:
        """Append an entry to the audit log, chained to the last one (appends are serialised)."""
        ...

    async def tags(self, model: str, version: int | None) -> dict[str, str]:
        """The tags of a model (``version`` None) or of one of its versions."""
        ...

    async def set_tags(self, model: str, version: int | None, tags: dict[str, str]) -> None:
        """Set these tags (others stay) on a model or a version."""
        ...

    async def delete_tag(self, model: str, version: int | None, key: str) -> bool:
        """Remove one tag; False when it was not set."""
        ...

    async def set_description(self, model: str, version: int | None, description: str) -> None: ...

    async def search_versions(self, query: Node, *, limit: int, offset: int) -> list[Version]:
        """Versions matching ``query`` (see mloop_registry.search), by model then version number."""
        ...

    async def audit_chain(self, *, after_id: int, limit: int) -> list[ChainedEntry]:
        """Up to ``limit`` audit entries with ids above ``after_id``, oldest first, with their hashes."""
        ...

    async def audit_entries(self, *, model: str | None, limit: int, before_id: int | None) -> list[AuditEntry]:
        """Audit entries, newest first, older than ``before_id`` when given."""
        ...

    async def add_key(self, key: ApiKey) -> ApiKey:
        """Store a new key (its hash); returns it with the database's creation time."""
        ...

    async def key(self, key_id: str) -> ApiKey | None: ...

    async def keys(self) -> list[ApiKey]:
        """Every key, revoked ones included, oldest first."""
        ...

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        """Mark a key revoked (once: a second revocation keeps the first time); None if there is no such key."""
        ...

    async def add_deliveries(self, alert: Alert, channels: list[str]) -> None:
        """One pending delivery of ``alert`` per channel, due now (a pair already stored is left as it is)."""
        ...

    async def due_deliveries(self, *, limit: int, lease_seconds: float) -> list[Delivery]:
        """Take up to ``limit`` pending deliveries that are due, oldest first, and push their next attempt
        ``lease_seconds`` away: another worker skips them meanwhile, and they come back if this one dies."""
        ...

    async def delivered(self, delivery_id: int) -> None:
        """Count the attempt and mark the delivery done."""
        ...

    async def attempt_failed(self, delivery_id: int, error: str, *, retry_in: float | None) -> None:
        """Count a failed attempt: try again in ``retry_in`` seconds, or (None) give up, marking it failed."""
        ...

    async def deliveries(self, alert_id: str | None = None) -> list[Delivery]:
        """Deliveries (of one alert, when given), oldest first."""
        ...


class SqlRegistryUnit(SqlUnit):
    """The registry's unit of work on PostgreSQL."""

    async def model(self, name: str, *, for_update: bool = False) -> Model | None:
        query = sa.select(models).where(models.c.name == name)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return Model.model_validate(row._mapping) if row is not None else None

    async def models(self, dataset: str | None) -> list[Model]:
        query = sa.select(models).order_by(models.c.name)
        if dataset:
            query = query.where(models.c.dataset == dataset)
        return [Model.model_validate(row._mapping) for row in await self.session.execute(query)]

    async def add_spec(self, spec: ModelSpec, digest: str, spec_version: int) -> SpecView:
        latest = {"dataset": spec.dataset, "latest_spec_version": spec_version}
        body = spec.model_dump(mode="json", by_alias=True)
        try:
            if spec_version == 1:
                await self.session.execute(sa.insert(models).values(name=spec.name, **latest))
            else:
                await self.session.execute(sa.update(models).where(models.c.name == spec.name).values(**latest))
            row = (
                await self.session.execute(
                    sa.insert(specs)
                    .values(name=spec.name, spec_version=spec_version, digest=digest, body=body)
                    .returning(*specs.c)
                )
            ).one()
        except IntegrityError as exc:
            raise Conflict(f"model {spec.name!r} spec version {spec_version} was stored concurrently") from exc
        return _spec(row)

    async def spec(self, name: str, spec_version: int | None = None) -> SpecView:
        query = sa.select(specs).where(specs.c.name == name)
        if spec_version is None:
            query = query.order_by(specs.c.spec_version.desc()).limit(1)
        else:
            query = query.where(specs.c.spec_version == spec_version)
        row = (await self.session.execute(query)).first()
        if row is None:
            which = f" version {spec_version}" if spec_version else ""
            raise NotFound(f"model {name!r} has no spec{which}")
        return _spec(row)

    async def version_by_run(self, model: str, run_id: str) -> Version | None:
        query = sa.select(model_versions).where(model_versions.c.model == model, model_versions.c.run_id == run_id)
        row = (await self.session.execute(query)).first()
        return (await self._tagged([row]))[0] if row is not None else None

    async def allocate_version(self, model: str) -> int:
        # The row lock UPDATE takes serialises concurrent registrations of one model.
        result = await self.session.execute(
            sa.update(models)
            .where(models.c.name == model)
            .values(next_version=models.c.next_version + 1)
            .returning(models.c.next_version - 1)
        )
        allocated = result.scalar_one_or_none()
        if allocated is None:
            raise NotFound(f"model {model!r} does not exist")
        return int(allocated)

    async def add_version(self, version: Version) -> Version:
        values = version.model_dump(mode="json", exclude={"artifact", "profile", "created_at", "tags"})
        values |= {
            "artifact_uri": version.artifact.uri,
            "artifact_sha256": version.artifact.sha256,
            "profile_uri": version.profile.uri,
            "profile_sha256": version.profile.sha256,
        }
        try:
            row = (
                await self.session.execute(sa.insert(model_versions).values(**values).returning(*model_versions.c))
            ).one()
        except IntegrityError as exc:
            raise Conflict(f"{version.model}: run {version.run_id} is already registered", field="run_id") from exc
        return _version(row)

    async def version(self, model: str, version: int, *, for_update: bool = False) -> Version:
        query = sa.select(model_versions).where(model_versions.c.model == model, model_versions.c.version == version)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        if row is None:
            raise NotFound(f"model {model!r} has no version {version}")
        return (await self._tagged([row]))[0]

    async def artifact_references(self) -> ArtifactReferences:
        lineage = model_versions.c.lineage
        query = sa.select(
            model_versions.c.artifact_uri,
            model_versions.c.profile_uri,
            lineage["dataset_sha256"].as_string(),
            lineage["recent_data_sha256"].as_string(),
        )
        rows = (await self.session.execute(query)).all()
        return ArtifactReferences.of(
            "registry", [uri for row in rows for uri in row[:2]], [digest for row in rows for digest in row[2:]]
        )

    async def versions(self, model: str) -> list[Version]:
        query = sa.select(model_versions).where(model_versions.c.model == model).order_by(model_versions.c.version)
        return await self._tagged((await self.session.execute(query)).all())

    async def _tagged(self, rows: Sequence[sa.Row[Any]]) -> list[Version]:
        """The versions of ``rows`` with their tags, read in one query."""
        keys = [(row.model, row.version) for row in rows]
        tags: dict[tuple[str, int], dict[str, str]] = {key: {} for key in keys}
        if keys:
            query = sa.select(version_tags).where(sa.tuple_(version_tags.c.model, version_tags.c.version).in_(keys))
            for tag in await self.session.execute(query):
                tags[(tag.model, tag.version)][tag.key] = tag.value
        return [_version(row).model_copy(update={"tags": tags[key]}) for row, key in zip(rows, keys, strict=True)]

    async def tags(self, model: str, version: int | None) -> dict[str, str]:
        table, where = _tag_target(model, version)
        rows = await self.session.execute(sa.select(table.c.key, table.c.value).where(*where).order_by(table.c.key))
        return dict(rows.tuples().all())

    async def set_tags(self, model: str, version: int | None, tags: dict[str, str]) -> None:
        table, _ = _tag_target(model, version)
        owner = {"model": model} if version is None else {"model": model, "version": version}
        statement = pg_insert(table).values([{**owner, "key": k, "value": v} for k, v in tags.items()])
        keys = [*owner, "key"]
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=keys, set_={"value": statement.excluded.value})
        )

    async def delete_tag(self, model: str, version: int | None, key: str) -> bool:
        table, where = _tag_target(model, version)
        result = await self.session.execute(sa.delete(table).where(*where, table.c.key == key))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def set_description(self, model: str, version: int | None, description: str) -> None:
        if version is None:
            statement = sa.update(models).where(models.c.name == model)
        else:
            statement = sa.update(model_versions).where(
                model_versions.c.model == model, model_versions.c.version == version
            )
        await self.session.execute(statement.values(description=description))

    async def search_versions(self, query: Node, *, limit: int, offset: int) -> list[Version]:
        statement = (
            sa.select(model_versions)
            .where(_matches(query))
            .order_by(model_versions.c.model, model_versions.c.version)
            .limit(limit)
            .offset(offset)
        )
        return await self._tagged((await self.session.execute(statement)).all())

    async def set_status(self, model: str, version: int, status: VersionStatus) -> None:
        await self.session.execute(
            sa.update(model_versions)
            .where(model_versions.c.model == model, model_versions.c.version == version)
            .values(status=status)
        )

    async def alias(self, model: str, alias: str, *, for_update: bool = False) -> int | None:
        query = sa.select(aliases.c.version).where(aliases.c.model == model, aliases.c.alias == alias)
        if for_update:
            query = query.with_for_update()
        version: int | None = (await self.session.execute(query)).scalar_one_or_none()
        return version

    async def aliases(self, model: str) -> dict[str, int]:
        rows = await self.session.execute(sa.select(aliases.c.alias, aliases.c.version).where(aliases.c.model == model))
        return dict(rows.tuples().all())

    async def set_alias(self, model: str, alias: str, version: int) -> None:
        statement = pg_insert(aliases).values(model=model, alias=alias, version=version)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["model", "alias"], set_={"version": version, "updated_at": sa.func.now()}
            )
        )

    async def clear_alias(self, model: str, alias: str) -> None:
        await self.session.execute(sa.delete(aliases).where(aliases.c.model == model, aliases.c.alias == alias))

    async def alias_moved_at(self, alias: str) -> dict[str, datetime]:
        rows = await self.session.execute(
            sa.select(aliases.c.model, aliases.c.updated_at).where(aliases.c.alias == alias)
        )
        return dict(rows.tuples().all())

    async def report_serving(self, report: ServingReport) -> None:
        values = report.model_dump()
        statement = pg_insert(serving_reports).values(**values)
        keys = ["model", "instance", "alias"]
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=keys,
                set_={k: v for k, v in values.items() if k not in keys},
                # Events of one model arrive in order, but a redelivered older one must not win.
                where=serving_reports.c.at <= statement.excluded.at,
            )
        )

    async def serving_reports(self, model: str) -> list[ServingReport]:
        query = (
            sa.select(serving_reports)
            .where(serving_reports.c.model == model)
            .order_by(serving_reports.c.alias, serving_reports.c.instance)
        )
        return [ServingReport.model_validate(row._mapping) for row in await self.session.execute(query)]

    async def audit(
        self, *, actor: str, action: str, model: str | None, version: int | None, detail: dict[str, Any]
    ) -> None:
        # One appender at a time across requests and replicas: the lock lasts until this transaction ends,
        # so the last entry read under it stays the last until this one commits (or rolls back). Ids are
        # taken as last + 1, not from the sequence, so a rolled-back append leaves no gap.
        lock_key = sa.func.hashtext(sa.func.concat(sa.func.current_schema(), ".audit_log"))
        await self.session.execute(sa.select(sa.func.pg_advisory_xact_lock(lock_key)))
        now = (await self.session.execute(sa.select(sa.func.now()))).scalar_one()
        last = (
            await self.session.execute(
                sa.select(audit_log.c.id, audit_log.c.hash).order_by(audit_log.c.id.desc()).limit(1)
            )
        ).first()
        prev_hash = last.hash if last is not None else GENESIS
        digest = entry_hash(
            at=now, actor=actor, action=action, model=model, version=version, detail=detail, prev_hash=prev_hash
        )
        await self.session.execute(
            sa.insert(audit_log).values(
                id=last.id + 1 if last is not None else 1,
                at=now,
                actor=actor,
                action=action,
                model=model,
                version=version,
                detail=detail,
                prev_hash=prev_hash,
                hash=digest,
            )
        )

    async def audit_chain(self, *, after_id: int, limit: int) -> list[ChainedEntry]:
        query = sa.select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit)
        return [ChainedEntry.model_validate(row._mapping) for row in await self.session.execute(query)]

    async def audit_entries(self, *, model: str | None, limit: int, before_id: int | None) -> list[AuditEntry]:
        query = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
        if model:
            query = query.where(audit_log.c.model == model)
        if before_id:
            query = query.where(audit_log.c.id < before_id)
        return [AuditEntry.model_validate(row._mapping) for row in await self.session.execute(query)]

    async def add_key(self, key: ApiKey) -> ApiKey:
        values = key.model_dump(exclude={"created_at", "revoked_at"})
        row = (await self.session.execute(sa.insert(api_keys).values(**values).returning(api_keys))).one()
        return ApiKey.model_validate(row._mapping)

    async def key(self, key_id: str) -> ApiKey | None:
        row = (await self.session.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id))).first()
        return ApiKey.model_validate(row._mapping) if row else None

    async def keys(self) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        return [ApiKey.model_validate(row._mapping) for row in await self.session.execute(query)]

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        await self.session.execute(
            sa.update(api_keys)
            .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=sa.func.now())
        )
        return await self.key(key_id)

    async def add_deliveries(self, alert: Alert, channels: list[str]) -> None:
        if not channels:
            return
        values = [
            {
                "alert_id": alert.id,
                "channel": channel,
                "severity": alert.severity,
                "model": alert.model,
                "alert": alert.model_dump(mode="json"),
            }
            for channel in channels
        ]
        await self.session.execute(pg_insert(alert_deliveries).values(values).on_conflict_do_nothing())

    async def due_deliveries(self, *, limit: int, lease_seconds: float) -> list[Delivery]:
        d = alert_deliveries.c
        due = (
            sa.select(d.id)
            .where(d.delivered_at.is_(None), d.failed_at.is_(None), d.next_attempt_at <= sa.func.now())
            .order_by(d.next_attempt_at, d.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = await self.session.execute(
            sa.update(alert_deliveries)
            .where(d.id.in_(due.scalar_subquery()))
            .values(next_attempt_at=sa.func.now() + _seconds(lease_seconds))
            .returning(*alert_deliveries.c)
        )
        return sorted((_delivery(row) for row in rows), key=lambda delivery: delivery.id)

    async def delivered(self, delivery_id: int) -> None:
        d = alert_deliveries.c
        await self.session.execute(
            sa.update(alert_deliveries)
            .where(d.id == delivery_id)
            .values(attempts=d.attempts + 1, delivered_at=sa.func.now(), last_error=None)
        )

    async def attempt_failed(self, delivery_id: int, error: str, *, retry_in: float | None) -> None:
        d = alert_deliveries.c
        values: dict[str, Any] = {"attempts": d.attempts + 1, "last_error": error[:2000]}
        if retry_in is None:
            values["failed_at"] = sa.func.now()
        else:
            values["next_attempt_at"] = sa.func.now() + _seconds(retry_in)
        await self.session.execute(sa.update(alert_deliveries).where(d.id == delivery_id).values(**values))

    async def deliveries(self, alert_id: str | None = None) -> list[Delivery]:
        query = sa.select(alert_deliveries).order_by(alert_deliveries.c.id)
        if alert_id is not None:
            query = query.where(alert_deliveries.c.alert_id == alert_id)
        return [_delivery(row) for row in await self.session.execute(query)]


def _seconds(seconds: float) -> sa.ColumnElement[Any]:
    return sa.func.make_interval(0, 0, 0, 0, 0, 0, float(seconds))


def _delivery(row: sa.Row[Any]) -> Delivery:
    return Delivery.model_validate({**row._mapping, "alert": Alert.model_validate(row.alert)})


def _tag_target(model: str, version: int | None) -> tuple[sa.Table, list[sa.ColumnElement[bool]]]:
    if version is None:
        return model_tags, [model_tags.c.model == model]
    return version_tags, [version_tags.c.model == model, version_tags.c.version == version]


_COMPARE: dict[str, Callable[[Any, Any], sa.ColumnElement[bool]]] = {
    "=": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _matches(node: Node) -> sa.ColumnElement[bool]:
    """A search tree as a SQL condition on model_versions; every value is a bound parameter."""
    if isinstance(node, And):
        return sa.and_(*(_matches(item) for item in node.items))
    if isinstance(node, Or):
        return sa.or_(*(_matches(item) for item in node.items))
    return _condition(node)


def _condition(c: Condition) -> sa.ColumnElement[bool]:
    mv = model_versions.c
    if c.field == "tag":
        has = _has_tag(c.key or "", None if c.op is None else str(c.value))
        return sa.not_(has) if c.op == "!=" else has
    if c.field == "alias":
        named = sa.exists().where(
            aliases.c.model == mv.model, aliases.c.version == mv.version, aliases.c.alias == c.value
        )
        return sa.not_(named) if c.op == "!=" else named
    column: Any = {
        "name": mv.model,
        "status": mv.status,
        "dataset": mv.lineage["dataset"].as_string(),
        "version": mv.version,
        "dataset_version": mv.lineage["dataset_version"].as_float(),
    }.get(c.field)
    if column is None:  # metric.NAME: a version without that metric matches no comparison
        column = mv.metrics[c.key].as_float()
    return _COMPARE[c.op or "="](column, c.value)


def _has_tag(key: str, value: str | None) -> sa.ColumnElement[bool]:
    """The version, or its model, has tag ``key`` (with ``value`` when given)."""
    mv = model_versions.c
    on_version = [version_tags.c.model == mv.model, version_tags.c.version == mv.version, version_tags.c.key == key]
    on_model = [model_tags.c.model == mv.model, model_tags.c.key == key]
    if value is not None:
        on_version.append(version_tags.c.value == value)
        on_model.append(model_tags.c.value == value)
    return sa.or_(sa.exists().where(*on_version), sa.exists().where(*on_model))


def _spec(row: sa.Row[Any]) -> SpecView:
    return SpecView.model_validate({**row._mapping, "spec": row.body})


def _version(row: sa.Row[Any]) -> Version:
    values = row._mapping
    return Version.model_validate(
        {
            **values,
            "artifact": {"uri": values["artifact_uri"], "sha256": values["artifact_sha256"]},
            "profile": {"uri": values["profile_uri"], "sha256": values["profile_sha256"]},
        }
    )
