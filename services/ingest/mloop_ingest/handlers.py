"""Publishing a dataset version: prepare (parse, check, snapshot) off the event loop, record, announce."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mloop_common.artifacts import ArtifactRef
from mloop_common.errors import Conflict, InvalidInput, PayloadTooLarge
from mloop_common.events import ArtifactPointer, DataPublished, Envelope, new_event, to_record
from mloop_common.uow import Store
from mloop_ingest import checks
from mloop_ingest.contract import parse_declaration
from mloop_ingest.entities import DatasetVersion, DatasetVersionDetail
from mloop_ingest.prepare import Prepared, prepare
from mloop_ingest.reading import Limits
from mloop_ingest.store import MAX_VERSION, IngestUnit

SOURCE = "mloop/ingest"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Stands in for the snapshot while sizing the announcement before the snapshot exists (a local store's shape).
_SNAPSHOT_STAND_IN = ArtifactPointer(uri=f"artifact:datasets/00/{'0' * 64}.parquet", sha256="0" * 64)


class SnapshotStore(Protocol):
    """Where snapshots go: the artifact store, taking a file (a snapshot may be gigabytes)."""

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


def _previous(detail: DatasetVersionDetail | None) -> checks.Previous | None:
    if detail is None or detail.contract is None:
        return None  # none published yet, or published before contracts were recorded: nothing to compare
    return checks.Previous(version=detail.version, rows=detail.rows, contract=detail.contract, labels=detail.labels)


def _announcement(command: PublishVersion, version: int, snapshot: ArtifactPointer, prepared: Prepared) -> Envelope:
    published = DataPublished(
        dataset=command.dataset,
        version=version,
        snapshot=snapshot,
        rows=prepared.rows,
        columns=prepared.columns,
        target=command.target,
        time_column=command.time_column,
        description=command.description,
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

    def _refuse_if_unsendable(self, event: Envelope, prepared: Prepared) -> None:
        size = encoded_size(event)
        if size > self.max_event_bytes:
            raise PayloadTooLarge(
                f"the file has {len(prepared.columns)} columns and data.published lists every column name: "
                f"the event would be {size} bytes, over the {self.max_event_bytes}-byte limit of the message bus; "
                "publish fewer columns or shorter column names",
                field="file",
            )

    async def publish_version(self, command: PublishVersion) -> Published:
        """Record a new version (or return the one with the same bytes); announce it if it passes the checks."""
        check_name(command.dataset)
        declaration = parse_declaration(command.contract)
        async with self.store.transaction() as unit:
            existing = await unit.version_by_upload(command.dataset, command.upload_sha256)
            latest = await unit.latest_published(command.dataset)
        if existing is not None:
            return Published(existing, created=False)
        previous = _previous(latest)
        prepared = await asyncio.to_thread(
            prepare,
            command.source,
            filename=command.filename,
            target=command.target,
            time_column=command.time_column,
            declaration=declaration,
            previous=previous,
            policy=self.policy,
            limits=self.limits,
            workdir=self.workdir,
        )
        try:
            return await self._record(command, prepared, previous)
        finally:
            if prepared.snapshot is not None:
                prepared.snapshot.unlink(missing_ok=True)

    async def _record(self, command: PublishVersion, prepared: Prepared, previous: checks.Previous | None) -> Published:
        # Refuse an unsendable file (even one the checks rejected) before storing anything; sized with the
        # largest version number, so only a longer snapshot URI can make the exact check below refuse it.
        self._refuse_if_unsendable(_announcement(command, MAX_VERSION, _SNAPSHOT_STAND_IN, prepared), prepared)
        snapshot = None
        if prepared.snapshot is not None:  # a file copy of up to the upload size: off the event loop
            snapshot = await asyncio.to_thread(
                self.artifacts.put_file, prepared.snapshot, kind="datasets", suffix=".parquet"
            )
        accepted = snapshot is not None
        try:
            async with self.store.transaction() as unit:
                number = await unit.allocate_version(command.dataset)
                event = None
                if snapshot is not None:
                    pointer = ArtifactPointer(uri=snapshot.uri, sha256=snapshot.sha256)
                    event = _announcement(command, number, pointer, prepared)
                    self._refuse_if_unsendable(event, prepared)  # never an outbox row the broker would refuse
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
