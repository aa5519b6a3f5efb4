"""Publishing a dataset version: prepare (parse, check, snapshot) off the event loop, record, announce."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mloop_common.artifacts import ArtifactRef
from mloop_common.datacontract import ContractDiff, DatasetContract, diff_contracts
from mloop_common.errors import Conflict, InvalidInput, NotFound, PayloadTooLarge
from mloop_common.events import (
    MAX_WARNING_CHARS,
    ArtifactPointer,
    DataPublished,
    DataWarning,
    Envelope,
    new_event,
    to_record,
)
from mloop_common.uow import Store
from mloop_ingest import checks
from mloop_ingest.contract import parse_declaration
from mloop_ingest.entities import DatasetPolicy, DatasetVersion, DatasetVersionDetail, PolicyOverrides
from mloop_ingest.prepare import Prepared, prepare
from mloop_ingest.reading import Limits
from mloop_ingest.store import MAX_VERSION, IngestUnit

SOURCE = "mloop/ingest"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Stand in for the snapshot and the contract while sizing the announcement before they are stored (a local
# store's shape).
_SNAPSHOT_STAND_IN = ArtifactPointer(uri=f"artifact:datasets/00/{'0' * 64}.parquet", sha256="0" * 64)
_CONTRACT_STAND_IN = ArtifactPointer(uri=f"artifact:contracts/00/{'0' * 64}.json", sha256="0" * 64)


class SnapshotStore(Protocol):
    """Where snapshots go: the artifact store, taking a file (a snapshot may be gigabytes)."""

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef: ...

    def put_file(self, source: Path, *, kind: str, suffix: str = "") -> ArtifactRef: ...

    def get(self, uri: str, sha256: str) -> bytes: ...


@dataclass(frozen=True)
class PublishVersion:
    """Publish the file at ``source`` (CSV or Parquet, spooled to disk) as the next version of ``dataset``."""

    dataset: str
    source: Path
    upload_sha256: str
    filename: str
    target: str
    time_column: str | None = None
    description: str | None = None
    contract: str | None = None  # the publisher's declarations, JSON (see contract.Declaration)
    publisher: str | None = None
    source_uri: str | None = None


@dataclass(frozen=True)
class Published:
    version: DatasetVersion
    created: bool  # False: the same bytes were uploaded before and this is that version


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise InvalidInput("dataset name must be 1-63 lowercase letters, digits, '-' or '_'", field="name")


async def read_contract(store: Store[IngestUnit], dataset: str, version: int | None = None) -> DatasetContract:
    """The contract of ``version``, or of the newest published version; NotFound if there is none."""
    async with store.transaction() as unit:
        detail = await unit.latest_published(dataset) if version is None else await unit.version(dataset, version)
    if detail is None:
        raise NotFound(f"dataset {dataset!r} has no published version")
    if detail.contract is None:
        why = "was rejected" if detail.status == "rejected" else "was recorded before contracts were"
        raise NotFound(f"version {detail.version} of {dataset!r} {why}: it has no contract")
    return detail.contract


async def read_diff(store: Store[IngestUnit], dataset: str, before: int, after: int) -> ContractDiff:
    """How the contract changed from version ``before`` to version ``after``."""
    return diff_contracts(await read_contract(store, dataset, before), await read_contract(store, dataset, after))


def _previous(detail: DatasetVersionDetail | None) -> checks.Previous | None:
    if detail is None or detail.contract is None:
        return None  # none published yet, or published before contracts were recorded: nothing to compare
    return checks.Previous(version=detail.version, rows=detail.rows, contract=detail.contract, labels=detail.labels)


def _announcement(
    command: PublishVersion, version: int, snapshot: ArtifactPointer, contract: ArtifactPointer, prepared: Prepared
) -> Envelope:
    """data.published: the schema as a digest and a pointer, so its size does not grow with the columns."""
    published = DataPublished(
        dataset=command.dataset,
        version=version,
        snapshot=snapshot,
        rows=prepared.rows,
        column_count=len(prepared.columns),
        schema_digest=prepared.contract.digest,
        contract=contract,
        target=command.target,
        time_column=command.time_column,
        description=command.description,
        warnings=[DataWarning(check=c.name, message=c.message[:MAX_WARNING_CHARS]) for c in prepared.report.warnings()],
    )
    return new_event(published, source=SOURCE, subject=command.dataset)


def encoded_size(event: Envelope) -> int:
    """Bytes ``event`` takes on the broker: key, value and headers as the Kafka binding encodes them."""
    key, value, headers = to_record(event)
    return len(key) + len(value) + sum(len(name) + len(raw) for name, raw in headers)


class DatasetPublisher:
    """Records dataset versions and announces the accepted ones; its ports come from the composition root."""

    def __init__(
        self,
        *,
        store: Store[IngestUnit],
        artifacts: SnapshotStore,
        max_event_bytes: int,
        policy: checks.CheckPolicy | None = None,
        limits: Limits | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.max_event_bytes = max_event_bytes
        self.policy = policy or checks.CheckPolicy()
        self.limits = limits or Limits()
        self.workdir = workdir

    def _refuse_if_unsendable(self, event: Envelope) -> None:
        # The event's size is bounded by its text fields, not by the file: only a small configured limit trips this.
        size = encoded_size(event)
        if size > self.max_event_bytes:
            raise PayloadTooLarge(
                f"data.published would be {size} bytes, over the {self.max_event_bytes}-byte limit of the message "
                "bus (MLOOP_INGEST_MAX_EVENT_BYTES); shorten the description",
                field="description",
            )

    async def dataset_policy(self, dataset: str) -> DatasetPolicy:
        """The thresholds ``dataset``'s next versions are checked with, and what it overrides."""
        check_name(dataset)
        async with self.store.transaction() as unit:
            stored = await unit.policy(dataset)
        stored = stored or PolicyOverrides(overrides={})
        return DatasetPolicy(
            dataset=dataset, effective=checks.with_overrides(self.policy, stored.overrides), **dict(stored)
        )

    async def set_dataset_policy(self, dataset: str, overrides: dict[str, Any], actor: str | None) -> DatasetPolicy:
        """Replace ``dataset``'s overrides (validated: InvalidInput names the field); versions already recorded
        keep the reports they were checked with."""
        check_name(dataset)
        effective = checks.with_overrides(self.policy, overrides)
        normalised = {name: value for name, value in effective.model_dump(mode="json").items() if name in overrides}
        async with self.store.transaction() as unit:
            stored = await unit.set_policy(dataset, PolicyOverrides(overrides=normalised, updated_by=actor))
        return DatasetPolicy(dataset=dataset, effective=effective, **dict(stored))

    async def publish_version(self, command: PublishVersion) -> Published:
        """Record a new version (or return the one with the same bytes); announce it if it passes the checks."""
        check_name(command.dataset)
        declaration = parse_declaration(command.contract)
        async with self.store.transaction() as unit:
            existing = await unit.version_by_upload(command.dataset, command.upload_sha256)
            latest = await unit.latest_published(command.dataset)
            overrides = await unit.policy(command.dataset)
        if existing is not None:
            return Published(existing, created=False)
        policy = checks.with_overrides(self.policy, overrides.overrides) if overrides else self.policy
        previous = _previous(latest)
        prepared = await asyncio.to_thread(
            prepare,
            command.source,
            filename=command.filename,
            target=command.target,
            time_column=command.time_column,
            declaration=declaration,
            previous=previous,
            policy=policy,
            limits=self.limits,
            workdir=self.workdir,
        )
        try:
            return await self._record(command, prepared, previous)
        finally:
            if prepared.snapshot is not None:
                prepared.snapshot.unlink(missing_ok=True)

    async def _record(self, command: PublishVersion, prepared: Prepared, previous: checks.Previous | None) -> Published:
        # Refuse an unsendable announcement (even for a version the checks rejected) before storing anything;
        # sized with the largest version number, so only longer artifact URIs can make the check below refuse it.
        self._refuse_if_unsendable(
            _announcement(command, MAX_VERSION, _SNAPSHOT_STAND_IN, _CONTRACT_STAND_IN, prepared)
        )
        snapshot = contract = None
        if prepared.snapshot is not None:  # a file copy of up to the upload size: off the event loop
            snapshot = await asyncio.to_thread(
                self.artifacts.put_file, prepared.snapshot, kind="datasets", suffix=".parquet"
            )
            contract_json = prepared.contract.model_dump_json().encode()
            contract = await asyncio.to_thread(self.artifacts.put, contract_json, kind="contracts", suffix=".json")
        accepted = snapshot is not None
        try:
            async with self.store.transaction() as unit:
                number = await unit.allocate_version(command.dataset)
                event = None
                if snapshot is not None and contract is not None:
                    pointer = ArtifactPointer(uri=snapshot.uri, sha256=snapshot.sha256)
                    schema = ArtifactPointer(uri=contract.uri, sha256=contract.sha256)
                    event = _announcement(command, number, pointer, schema, prepared)
                    self._refuse_if_unsendable(event)  # never an outbox row the broker would refuse
                recorded = await unit.add_version(
                    DatasetVersionDetail(
                        dataset=command.dataset,
                        version=number,
                        status="published" if accepted else "rejected",
                        upload_sha256=command.upload_sha256,
                        snapshot_uri=snapshot.uri if snapshot else None,
                        snapshot_sha256=snapshot.sha256 if snapshot else None,
                        rows=prepared.rows,
                        columns=prepared.columns,
                        report=prepared.report,
                        target=command.target,
                        time_column=command.time_column,
                        description=command.description,
                        parent_version=previous.version if previous else None,
                        publisher=command.publisher,
                        source_uri=command.source_uri,
                        column_types=prepared.schema if accepted else {},
                        profile=prepared.profile if accepted else {},
                        contract=prepared.contract if accepted else None,
                        labels=prepared.labels if accepted else None,
                    )
                )
                if event is not None:
                    await unit.stage(event)
        except Conflict:
            # The same bytes arrived concurrently and the other request won: answer with its version.
            async with self.store.transaction() as unit:
                winner = await unit.version_by_upload(command.dataset, command.upload_sha256)
            if winner is None:
                raise
            return Published(winner, created=False)
        return Published(recorded, created=True)
