"""Publishing a dataset version: validate, snapshot, record, announce."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import sqlalchemy.exc

from mloop_common.artifacts import ArtifactStore, sha256_hex
from mloop_common.db import enqueue
from mloop_common.errors import InvalidInput
from mloop_common.events import ArtifactPointer, DataPublished, new_event
from mloop_common.runtime import Runtime
from mloop_ingest import checks, store

SOURCE = "mloop/ingest"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise InvalidInput("dataset name must be 1-63 lowercase letters, digits, '-' or '_'", field="name")


def _prepare(
    data: bytes, filename: str, target: str, time_column: str | None, previous_schema: dict[str, str] | None
) -> dict[str, Any]:
    """CPU-bound part, run in a thread: parse, check, snapshot bytes."""
    frame = checks.parse_table(data, filename)
    report = checks.validate(frame, target=target, time_column=time_column, previous_schema=previous_schema)
    return {
        "frame_rows": len(frame),
        "columns": [str(c) for c in frame.columns],
        "schema": checks.schema_of(frame) if report.accepted else {},
        "stats": checks.column_stats(frame) if report.accepted else {},
        "report": report.to_dict(),
        "snapshot": checks.to_parquet(frame) if report.accepted else None,
    }


async def publish_version(
    runtime: Runtime,
    artifacts: ArtifactStore,
    *,
    name: str,
    data: bytes,
    filename: str,
    target: str,
    time_column: str | None,
    description: str | None,
) -> tuple[dict[str, Any], bool]:
    """Record a new version of ``name`` (or return the one with the same bytes) and announce it if accepted."""
    check_name(name)
    upload_sha = sha256_hex(data)
    async with runtime.transaction() as session:
        existing = await store.by_upload(session, name, upload_sha)
        previous_schema = await store.latest_accepted_schema(session, name)
    if existing is not None:
        return existing, False
    prepared = await asyncio.to_thread(_prepare, data, filename, target, time_column, previous_schema)
    snapshot = artifacts.put(prepared["snapshot"], kind="datasets", suffix=".parquet") if prepared["snapshot"] else None
    try:
        async with runtime.transaction() as session:
            version = await store.allocate_version(session, name)
            row = {
                "name": name,
                "version": version,
                "status": "published" if snapshot else "rejected",
                "upload_sha256": upload_sha,
                "snapshot_uri": snapshot.uri if snapshot else None,
                "snapshot_sha256": snapshot.sha256 if snapshot else None,
                "rows": prepared["frame_rows"],
                "columns": prepared["columns"],
                "schema": prepared["schema"],
                "stats": prepared["stats"],
                "report": prepared["report"],
                "target": target,
                "time_column": time_column,
                "description": description,
            }
            await store.add_version(session, row)
            if snapshot:
                await enqueue(
                    session,
                    new_event(
                        DataPublished(
                            dataset=name,
                            version=version,
                            snapshot=ArtifactPointer(uri=snapshot.uri, sha256=snapshot.sha256),
                            rows=prepared["frame_rows"],
                            columns=prepared["columns"],
                            target=target,
                            time_column=time_column,
                            description=description,
                        ),
                        source=SOURCE,
                        subject=name,
                    ),
                )
    except sqlalchemy.exc.IntegrityError:
        # The same bytes arrived concurrently and the other request won: answer with its version.
        async with runtime.transaction() as session:
            winner = await store.by_upload(session, name, upload_sha)
        if winner is None:
            raise
        return winner, False
    async with runtime.transaction() as session:
        return await store.get_version(session, name, version), True
