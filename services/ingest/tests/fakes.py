"""Ingest's store in memory, for handler and route tests."""

from __future__ import annotations

from datetime import UTC, datetime

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.errors import Conflict, NotFound
from mloop_common.testing import MemoryStore, MemoryUnit
from mloop_ingest.entities import DatasetSummary, DatasetVersion, DatasetVersionDetail, PolicyOverrides
from mloop_ingest.store import live


class MemoryIngestUnit(MemoryUnit):
    @property
    def _next_version(self) -> dict[str, int]:
        return self.tables.setdefault("datasets", {})

    @property
    def _versions(self) -> dict[tuple[str, int], DatasetVersionDetail]:
        return self.tables.setdefault("dataset_versions", {})

    def _of(self, dataset: str) -> list[DatasetVersionDetail]:
        return sorted((v for v in self._versions.values() if v.dataset == dataset), key=lambda v: v.version)

    async def version_by_upload(self, dataset: str, upload_sha256: str) -> DatasetVersion | None:
        found = [v for v in self._of(dataset) if v.upload_sha256 == upload_sha256]
        return found[0].summary() if found else None

    async def latest_published(self, dataset: str) -> DatasetVersionDetail | None:
        published = [v for v in self._of(dataset) if v.status == "published"]
        return published[-1] if published else None

    async def allocate_version(self, dataset: str) -> int:
        number = self._next_version.get(dataset, 1)
        self._next_version[dataset] = number + 1
        return number

    async def add_version(self, version: DatasetVersionDetail) -> DatasetVersion:
        if any(v.upload_sha256 == version.upload_sha256 for v in self._of(version.dataset)):
            raise Conflict(f"dataset {version.dataset!r} already has a version with these bytes")  # unique in SQL
        recorded = version.model_copy(update={"created_at": datetime.now(UTC)})
        self._versions[(version.dataset, version.version)] = recorded
        return recorded.summary()

    async def datasets(self) -> list[DatasetSummary]:
        names = sorted({v.dataset for v in self._versions.values()})
        return [
            DatasetSummary(
                name=name,
                versions=len(self._of(name)),
                latest_published=max((v.version for v in self._of(name) if v.status == "published"), default=None),
            )
            for name in names
        ]

    async def versions(self, dataset: str) -> list[DatasetVersion]:
        if not self._of(dataset):
            raise NotFound(f"dataset {dataset!r} does not exist")
        return [v.summary() for v in self._of(dataset)]

    async def version(self, dataset: str, version: int) -> DatasetVersionDetail:
        if (dataset, version) not in self._versions:
            raise NotFound(f"dataset {dataset!r} has no version {version}")
        return self._versions[(dataset, version)]

    @property
    def _policies(self) -> dict[str, PolicyOverrides]:
        return self.tables.setdefault("dataset_policies", {})

    async def policy(self, dataset: str) -> PolicyOverrides | None:
        return self._policies.get(dataset)

    async def set_policy(self, dataset: str, overrides: PolicyOverrides) -> PolicyOverrides:
        self._policies[dataset] = overrides.model_copy(update={"updated_at": datetime.now(UTC)})
        return self._policies[dataset]

    async def artifact_references(self) -> ArtifactReferences:
        published = [v for v in self._versions.values() if v.status == "published"]
        return live((v.snapshot_uri, v.contract.model_dump(mode="json") if v.contract else None) for v in published)


def memory_store() -> MemoryStore[MemoryIngestUnit]:
    return MemoryStore(MemoryIngestUnit, consumer="mloop-ingest")
