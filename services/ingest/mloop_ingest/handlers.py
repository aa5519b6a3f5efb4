"""Publishing a dataset version: validate, snapshot, record, announce."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import pandas as pd

from mloop_common.artifacts import Artifacts, sha256_hex
from mloop_common.errors import Conflict, InvalidInput, PayloadTooLarge
from mloop_common.events import ArtifactPointer, DataPublished, Envelope, new_event, to_record
from mloop_common.uow import Store
from mloop_ingest import checks
from mloop_ingest.entities import DatasetVersion, DatasetVersionDetail
from mloop_ingest.store import MAX_VERSION, IngestUnit

SOURCE = "mloop/ingest"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Stands in for the snapshot while sizing the announcement before the snapshot exists (a local store's shape).
_SNAPSHOT_STAND_IN = ArtifactPointer(uri=f"artifact:datasets/00/{'0' * 64}.parquet", sha256="0" * 64)


@dataclass(frozen=True)
class PublishVersion:
    """Publish ``data`` (CSV or Parquet bytes) as the next version of ``dataset``."""

    dataset: str
    data: bytes
    filename: str
    target: str
    time_column: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Published:
    version: DatasetVersion
    created: bool  # False: the same bytes were uploaded before and this is that version


@dataclass(frozen=True)
class _Inspected:
    report: checks.Report
    schema: dict[str, checks.ColumnType]
    profile: dict[str, checks.ColumnSummary]
    snapshot: bytes | None


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise InvalidInput("dataset name must be 1-63 lowercase letters, digits, '-' or '_'", field="name")


def _inspect(
    frame: pd.DataFrame, target: str, time_column: str | None, previous_schema: dict[str, checks.ColumnType] | None
) -> _Inspected:
    """CPU-bound part, run in a thread: check, profile and snapshot an accepted frame."""
    report = checks.validate(frame, target=target, time_column=time_column, previous_schema=previous_schema)
    if not report.accepted:
        return _Inspected(report, {}, {}, None)
    return _Inspected(report, checks.schema_of(frame), checks.column_stats(frame), checks.to_parquet(frame))


def _announcement(command: PublishVersion, version: int, snapshot: ArtifactPointer, frame: pd.DataFrame) -> Envelope:
    published = DataPublished(
        dataset=command.dataset,
        version=version,
        snapshot=snapshot,
        rows=len(frame),
        columns=[str(c) for c in frame.columns],
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

    def __init__(self, *, store: Store[IngestUnit], artifacts: Artifacts, max_event_bytes: int) -> None:
        self.store = store
        self.artifacts = artifacts
        self.max_event_bytes = max_event_bytes

    def _refuse_if_unsendable(self, event: Envelope, frame: pd.DataFrame) -> None:
        size = encoded_size(event)
        if size > self.max_event_bytes:
            raise PayloadTooLarge(
                f"the file has {len(frame.columns)} columns and data.published lists every column name: "
                f"the event would be {size} bytes, over the {self.max_event_bytes}-byte limit of the message bus; "
                "publish fewer columns or shorter column names",
                field="file",
            )

    async def publish_version(self, command: PublishVersion) -> Published:
        """Record a new version (or return the one with the same bytes); announce it if it passes the checks."""
        check_name(command.dataset)
        upload_sha256 = sha256_hex(command.data)
        async with self.store.transaction() as unit:
            existing = await unit.version_by_upload(command.dataset, upload_sha256)
            previous_schema = await unit.latest_published_schema(command.dataset)
        if existing is not None:
            return Published(existing, created=False)
        frame = await asyncio.to_thread(checks.parse_table, command.data, command.filename)
        # Refuse an unsendable file now (even one the checks would reject), before minutes of profiling a
        # very wide frame; sized with the largest version number, so only a longer snapshot URI can make
        # the exact check below refuse what this one let through.
        self._refuse_if_unsendable(_announcement(command, MAX_VERSION, _SNAPSHOT_STAND_IN, frame), frame)
        inspected = await asyncio.to_thread(_inspect, frame, command.target, command.time_column, previous_schema)
        snapshot = None
        if inspected.snapshot is not None:  # a file write of up to the upload size: off the event loop too
            snapshot = await asyncio.to_thread(
                self.artifacts.put, inspected.snapshot, kind="datasets", suffix=".parquet"
            )
        try:
            async with self.store.transaction() as unit:
                number = await unit.allocate_version(command.dataset)
                event = None
                if snapshot is not None:
                    pointer = ArtifactPointer(uri=snapshot.uri, sha256=snapshot.sha256)
                    event = _announcement(command, number, pointer, frame)
                    self._refuse_if_unsendable(event, frame)  # never an outbox row the broker would refuse
                recorded = await unit.add_version(
                    DatasetVersionDetail(
                        dataset=command.dataset,
                        version=number,
                        status="published" if snapshot else "rejected",
                        upload_sha256=upload_sha256,
                        snapshot_uri=snapshot.uri if snapshot else None,
                        snapshot_sha256=snapshot.sha256 if snapshot else None,
                        rows=len(frame),
                        columns=[str(c) for c in frame.columns],
                        report=inspected.report,
                        target=command.target,
                        time_column=command.time_column,
                        description=command.description,
                        column_types=inspected.schema,
                        profile=inspected.profile,
                    )
                )
                if event is not None:
                    await unit.stage(event)
        except Conflict:
            # The same bytes arrived concurrently and the other request won: answer with its version.
            async with self.store.transaction() as unit:
                winner = await unit.version_by_upload(command.dataset, upload_sha256)
            if winner is None:
                raise
            return Published(winner, created=False)
        return Published(recorded, created=True)
