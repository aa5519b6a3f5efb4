"""The registry's store in memory, for handler tests; it keeps the uniqueness rules of the real tables."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.contracts import AuditEntry, SpecView, VersionStatus
from mloop_common.errors import Conflict, NotFound
from mloop_common.spec import ModelSpec
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_registry.alerts import Alert, Delivery
from mloop_registry.audit_chain import GENESIS, ChainedEntry, entry_hash
from mloop_registry.entities import ApiKey, Model, ServingReport, Version
from mloop_registry.search import Node

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryRegistryUnit(MemoryUnit):
    @property
    def _models(self) -> dict[str, Model]:
        return self.tables.setdefault("models", {})

    @property
    def _next_version(self) -> dict[str, int]:
        return self.tables.setdefault("next_version", {})

    @property
    def _specs(self) -> dict[tuple[str, int], SpecView]:
        return self.tables.setdefault("specs", {})

    @property
    def _versions(self) -> dict[tuple[str, int], Version]:
        return self.tables.setdefault("model_versions", {})

    @property
    def _aliases(self) -> dict[tuple[str, str], int]:
        return self.tables.setdefault("aliases", {})

    @property
    def _audit(self) -> list[ChainedEntry]:
        return self.tables.setdefault("audit_log", [])

    def _now(self) -> datetime:
        # Every write gets a later time, like the database's now() in consecutive transactions.
        ticks = self.tables["ticks"] = self.tables.get("ticks", 0) + 1
        return EPOCH + timedelta(seconds=ticks)

    async def model(self, name: str, *, for_update: bool = False) -> Model | None:
        return self._models.get(name)

    async def models(self, dataset: str | None) -> list[Model]:
        return [m for _, m in sorted(self._models.items()) if dataset in (None, m.dataset)]

    async def add_spec(self, spec: ModelSpec, digest: str, spec_version: int) -> SpecView:
        if (spec.name, spec_version) in self._specs or (spec_version == 1 and spec.name in self._models):
            raise Conflict(f"model {spec.name!r} spec version {spec_version} was stored concurrently")
        if spec_version == 1:
            self._models[spec.name] = Model(
                name=spec.name, dataset=spec.dataset, latest_spec_version=1, created_at=self._now()
            )
            self._next_version[spec.name] = 1
        else:
            self._models[spec.name] = self._models[spec.name].model_copy(
                update={"latest_spec_version": spec_version, "dataset": spec.dataset}
            )
        stored = SpecView(name=spec.name, spec_version=spec_version, digest=digest, spec=spec, created_at=self._now())
        self._specs[(spec.name, spec_version)] = stored
        return stored

    async def spec(self, name: str, spec_version: int | None = None) -> SpecView:
        numbers = [v for (n, v) in self._specs if n == name]
        wanted = spec_version if spec_version is not None else max(numbers, default=None)
        if wanted is None or (name, wanted) not in self._specs:
            which = f" version {spec_version}" if spec_version else ""
            raise NotFound(f"model {name!r} has no spec{which}")
        return self._specs[(name, wanted)]

    async def version_by_run(self, model: str, run_id: str) -> Version | None:
        return next((v for v in self._versions.values() if (v.model, v.run_id) == (model, run_id)), None)

    async def allocate_version(self, model: str) -> int:
        if model not in self._next_version:
            raise NotFound(f"model {model!r} does not exist")
        number = self._next_version[model]
        self._next_version[model] = number + 1
        return number

    async def add_version(self, version: Version) -> Version:
        taken = (version.model, version.version) in self._versions
        if taken or any((v.model, v.run_id) == (version.model, version.run_id) for v in self._versions.values()):
            raise Conflict(f"{version.model}: run {version.run_id} is already registered", field="run_id")
        stored = version.model_copy(update={"created_at": self._now()})
        self._versions[(version.model, version.version)] = stored
        return stored

    async def version(self, model: str, version: int, *, for_update: bool = False) -> Version:
        if (model, version) not in self._versions:
            raise NotFound(f"model {model!r} has no version {version}")
        return self._versions[(model, version)]

    async def versions(self, model: str) -> list[Version]:
        return [v for (m, _), v in sorted(self._versions.items()) if m == model]

    async def artifact_references(self) -> ArtifactReferences:
        versions = list(self._versions.values())
        return ArtifactReferences.of(
            "registry",
            [uri for v in versions for uri in (v.artifact.uri, v.profile.uri)],
            [digest for v in versions for digest in (v.lineage.dataset_sha256, v.lineage.recent_data_sha256)],
        )

    async def set_status(self, model: str, version: int, status: VersionStatus) -> None:
        self._versions[(model, version)] = self._versions[(model, version)].model_copy(update={"status": status})

    async def alias(self, model: str, alias: str, *, for_update: bool = False) -> int | None:
        return self._aliases.get((model, alias))

    async def aliases(self, model: str) -> dict[str, int]:
        return {alias: version for (m, alias), version in self._aliases.items() if m == model}

    async def set_alias(self, model: str, alias: str, version: int) -> None:
        if (model, version) not in self._versions:
            raise AssertionError(f"alias {alias} to missing {model} v{version} (a foreign key in the real table)")
        self._aliases[(model, alias)] = version
        self.tables.setdefault("alias_moved_at", {})[(model, alias)] = datetime.now(UTC)

    async def clear_alias(self, model: str, alias: str) -> None:
        self._aliases.pop((model, alias), None)
        self.tables.setdefault("alias_moved_at", {}).pop((model, alias), None)

    async def alias_moved_at(self, alias: str) -> dict[str, datetime]:
        moved = self.tables.get("alias_moved_at", {})
        return {model: at for (model, name), at in moved.items() if name == alias}

    @property
    def _model_tags(self) -> dict[str, dict[str, str]]:
        return self.tables.setdefault("model_tags", {})

    async def tags(self, model: str, version: int | None) -> dict[str, str]:
        found = self._model_tags.get(model, {}) if version is None else self._versions[(model, version)].tags
        return dict(sorted(found.items()))

    async def set_tags(self, model: str, version: int | None, tags: dict[str, str]) -> None:
        if version is None:
            self._model_tags[model] = self._model_tags.get(model, {}) | tags
        else:
            stored = self._versions[(model, version)]
            self._versions[(model, version)] = stored.model_copy(update={"tags": stored.tags | tags})

    async def delete_tag(self, model: str, version: int | None, key: str) -> bool:
        if version is None:
            return self._model_tags.get(model, {}).pop(key, None) is not None
        stored = self._versions[(model, version)]
        if key not in stored.tags:
            return False
        kept = {k: v for k, v in stored.tags.items() if k != key}
        self._versions[(model, version)] = stored.model_copy(update={"tags": kept})
        return True

    async def set_description(self, model: str, version: int | None, description: str) -> None:
        if version is None:
            self._models[model] = self._models[model].model_copy(update={"description": description})
        else:
            stored = self._versions[(model, version)]
            self._versions[(model, version)] = stored.model_copy(update={"description": description})

    async def search_versions(self, query: Node, *, limit: int, offset: int) -> list[Version]:
        raise NotImplementedError("search is SQL: tests/integration/test_registry_store.py runs it on PostgreSQL")

    @property
    def _reports(self) -> dict[tuple[str, str, str], ServingReport]:
        return self.tables.setdefault("serving_reports", {})

    async def report_serving(self, report: ServingReport) -> None:
        key = (report.model, report.instance, report.alias)
        if key not in self._reports or self._reports[key].at <= report.at:
            self._reports[key] = report

    async def serving_reports(self, model: str) -> list[ServingReport]:
        return [r for (m, _, _), r in sorted(self._reports.items(), key=lambda kv: (kv[0][2], kv[0][1])) if m == model]

    async def audit(
        self, *, actor: str, action: str, model: str | None, version: int | None, detail: dict[str, Any]
    ) -> None:
        at, prev_hash = self._now(), self._audit[-1].hash if self._audit else GENESIS
        digest = entry_hash(
            at=at, actor=actor, action=action, model=model, version=version, detail=detail, prev_hash=prev_hash
        )
        self._audit.append(
            ChainedEntry(
                id=len(self._audit) + 1,
                at=at,
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
        return [e for e in self._audit if e.id > after_id][:limit]

    async def audit_entries(self, *, model: str | None, limit: int, before_id: int | None) -> list[AuditEntry]:
        found = [
            e for e in reversed(self._audit) if model in (None, e.model) and (before_id is None or e.id < before_id)
        ]
        return [AuditEntry.model_validate(dict(e)) for e in found[:limit]]

    @property
    def _keys(self) -> dict[str, ApiKey]:
        return self.tables.setdefault("api_keys", {})

    async def add_key(self, key: ApiKey) -> ApiKey:
        if key.key_id in self._keys:
            raise Conflict(f"key {key.key_id} exists")
        stored = self._keys[key.key_id] = key.model_copy(update={"created_at": self._now()})
        return stored

    async def key(self, key_id: str) -> ApiKey | None:
        return self._keys.get(key_id)

    async def keys(self) -> list[ApiKey]:
        return sorted(self._keys.values(), key=lambda k: (k.created_at, k.key_id))

    async def revoke_key(self, key_id: str) -> ApiKey | None:
        key = self._keys.get(key_id)
        if key is not None and key.revoked_at is None:
            key = self._keys[key_id] = key.model_copy(update={"revoked_at": self._now()})
        return key

    @property
    def _deliveries(self) -> dict[int, Delivery]:
        return self.tables.setdefault("alert_deliveries", {})

    async def add_deliveries(self, alert: Alert, channels: list[str]) -> None:
        now = datetime.now(UTC)
        for channel in channels:
            if any((d.alert.id, d.channel) == (alert.id, channel) for d in self._deliveries.values()):
                continue  # the real table's unique (alert_id, channel)
            number = len(self._deliveries) + 1
            self._deliveries[number] = Delivery(
                id=number, alert=alert, channel=channel, next_attempt_at=now, created_at=now
            )

    async def due_deliveries(self, *, limit: int, lease_seconds: float) -> list[Delivery]:
        now = datetime.now(UTC)
        due = sorted(
            (
                d
                for d in self._deliveries.values()
                if d.delivered_at is None and d.failed_at is None and d.next_attempt_at <= now
            ),
            key=lambda d: (d.next_attempt_at, d.id),
        )[:limit]
        leased = [d.model_copy(update={"next_attempt_at": now + timedelta(seconds=lease_seconds)}) for d in due]
        self._deliveries.update({d.id: d for d in leased})
        return leased

    async def delivered(self, delivery_id: int) -> None:
        d = self._deliveries[delivery_id]
        self._deliveries[delivery_id] = d.model_copy(
            update={"attempts": d.attempts + 1, "delivered_at": datetime.now(UTC), "last_error": None}
        )

    async def attempt_failed(self, delivery_id: int, error: str, *, retry_in: float | None) -> None:
        d, now = self._deliveries[delivery_id], datetime.now(UTC)
        update: dict[str, Any] = {"attempts": d.attempts + 1, "last_error": error}
        if retry_in is None:
            update["failed_at"] = now
        else:
            update["next_attempt_at"] = now + timedelta(seconds=retry_in)
        self._deliveries[delivery_id] = d.model_copy(update=update)

    async def deliveries(self, alert_id: str | None = None) -> list[Delivery]:
        return [d for _, d in sorted(self._deliveries.items()) if alert_id in (None, d.alert.id)]


def memory_store() -> MemoryStore[MemoryRegistryUnit]:
    return MemoryStore(MemoryRegistryUnit, consumer="mloop-registry")
