"""The audit log's hash chain: how an entry is hashed and how a log is checked for edits, deletions and reordering.

Each entry's hash is sha256 over a canonical JSON of its own fields (not its id: the chain fixes the order)
plus the previous entry's hash; the first entry chains from GENESIS. Registry migration 0003 spells the same
function out (frozen), so the two must never diverge: entries already written are hashed this way forever.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

GENESIS = "0" * 64


class ChainedEntry(BaseModel):
    """An audit entry as stored, with its place in the chain."""

    id: int
    at: datetime
    actor: str
    action: str
    model: str | None
    version: int | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class ChainReport(BaseModel):
    """What walking the chain found: ok, or the first entry that breaks it and why."""

    ok: bool
    entries: int
    first_bad_id: int | None = None
    reason: str = ""
    last_hash: str = GENESIS  # the head: kept elsewhere, it also reveals entries cut off the end


def entry_hash(
    *,
    at: datetime,
    actor: str,
    action: str,
    model: str | None,
    version: int | None,
    detail: dict[str, Any],
    prev_hash: str,
) -> str:
    """The hash of an entry with these fields that follows the entry hashed ``prev_hash``."""
    canonical = json.dumps(
        {
            "at": at.astimezone(UTC).isoformat(),
            "actor": actor,
            "action": action,
            "model": model,
            "version": version,
            "detail": detail,
            "prev_hash": prev_hash,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def content_hash(entry: ChainedEntry) -> str:
    """What ``entry``'s hash should be, from its content."""
    return entry_hash(
        at=entry.at,
        actor=entry.actor,
        action=entry.action,
        model=entry.model,
        version=entry.version,
        detail=entry.detail,
        prev_hash=entry.prev_hash,
    )


def verify_chain(entries: Iterable[ChainedEntry]) -> ChainReport:
    """Walk ``entries`` in id order; stop at the first that was edited, or does not follow its predecessor.

    A missing predecessor with a jump in ids is reported as a deletion; one without a jump as reordering
    (ids swapped or an entry replaced). Entries removed from the end leave no trace in the chain itself:
    compare ``last_hash`` with a copy kept elsewhere to catch that.
    """
    expected_prev, previous_id, count = GENESIS, None, 0
    for entry in entries:
        if entry.prev_hash != expected_prev:
            after = f"entry {previous_id}" if previous_id is not None else "the start of the log"
            if (previous_id is not None and entry.id > previous_id + 1) or (previous_id is None and entry.id > 1):
                first_missing = previous_id + 1 if previous_id is not None else 1
                reason = (
                    f"deleted: entry {entry.id} does not follow {after}; "
                    f"entries {first_missing}..{entry.id - 1} are missing"
                )
            else:
                reason = f"reordered: entry {entry.id} does not follow {after} (ids swapped or an entry replaced)"
            return ChainReport(ok=False, entries=count, first_bad_id=entry.id, reason=reason, last_hash=expected_prev)
        if content_hash(entry) != entry.hash:
            reason = f"edited: entry {entry.id}'s content does not match its hash"
            return ChainReport(ok=False, entries=count, first_bad_id=entry.id, reason=reason, last_hash=expected_prev)
        expected_prev, previous_id, count = entry.hash, entry.id, count + 1
    return ChainReport(ok=True, entries=count, last_hash=expected_prev)
