"""Where the prediction log keeps events Kafka did not take: a local append-only file, replayed in order.

File format: one line per event, JSON ``{"n": <records>, "value": <the Kafka record value>, "headers":
[[name, value], ...]}`` (the CloudEvents Kafka binding, so an event comes back exactly as it would have
been sent). Each append is written and fsynced before it returns, so a spilled event survives a crash
or a power cut. Replay progress is a byte offset in ``<file>.offset``, rewritten (not fsynced) after
each event Kafka takes: a crash mid-replay re-sends at most the events since the last rewrite
(at least once, as everywhere in mloop). When every event has been replayed the file is emptied.
A line cut short by a crash during an append has no newline; it is skipped and counted as lost.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from mloop_common.events import Envelope, from_record, to_record

log = logging.getLogger(__name__)


class Spill(Protocol):
    """Events waiting for Kafka, oldest first."""

    @property
    def empty(self) -> bool: ...

    @property
    def size(self) -> int: ...

    def append(self, events: Sequence[tuple[Envelope, int]]) -> int:
        """Keep ``(event, records in it)`` pairs in order; returns how many fit (the rest are refused)."""
        ...

    def head(self) -> tuple[Envelope, int] | None:
        """The oldest event still waiting, and its record count."""
        ...

    def pop(self) -> None:
        """The head was published: forget it."""
        ...


def encode_line(event: Envelope, records: int) -> bytes:
    _, value, headers = to_record(event)
    line = {"n": records, "value": value.decode(), "headers": [[name, raw.decode()] for name, raw in headers]}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def decode_line(line: bytes) -> tuple[Envelope, int]:
    document = json.loads(line)
    headers = [(name, raw.encode()) for name, raw in document["headers"]]
    return from_record(document["value"].encode(), headers), int(document["n"])


class MemorySpill:
    """The spill in memory, bounded by encoded bytes: for tests, and when no spill folder is configured
    (a restart then loses what it holds)."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024) -> None:
        self._max_bytes = max_bytes
        self._events: deque[tuple[Envelope, int, int]] = deque()
        self._bytes = 0

    @property
    def empty(self) -> bool:
        return not self._events

    @property
    def size(self) -> int:
        return self._bytes

    def append(self, events: Sequence[tuple[Envelope, int]]) -> int:
        for taken, (event, records) in enumerate(events):
            size = len(encode_line(event, records))
            if self._bytes + size > self._max_bytes:
                return taken
            self._events.append((event, records, size))
            self._bytes += size
        return len(events)

    def head(self) -> tuple[Envelope, int] | None:
        if not self._events:
            return None
        event, records, _ = self._events[0]
        return event, records

    def pop(self) -> None:
        _, _, size = self._events.popleft()
        self._bytes -= size


class SpillFile:
    """The spill as an append-only file of at most ``max_bytes`` (module docstring: format and durability)."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self._offset_path = path.with_name(path.name + ".offset")
        self._max_bytes = max_bytes
        self._head: tuple[Envelope, int, int] | None = None  # event, records, offset after it
        self.lost_lines = 0
        self._offset = self._read_offset()
        self._size = self._without_torn_tail()
        if self._offset >= self._size:
            self._clear()

    @property
    def empty(self) -> bool:
        return self._head is None and self._offset >= self._size

    @property
    def size(self) -> int:
        return self._size

    def append(self, events: Sequence[tuple[Envelope, int]]) -> int:
        lines = []
        size = self._size
        for event, records in events:
            line = encode_line(event, records)
            if size + len(line) > self._max_bytes:
                break
            lines.append(line)
            size += len(line)
        if lines:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # only once something needs to wait for Kafka
            with self.path.open("ab") as file:
                file.write(b"".join(lines))
                file.flush()
                os.fsync(file.fileno())
            self._size = size
        return len(lines)

    def head(self) -> tuple[Envelope, int] | None:
        while self._head is None and self._offset < self._size:
            with self.path.open("rb") as file:
                file.seek(self._offset)
                line = file.readline()
            end = self._offset + len(line)
            if not line.endswith(b"\n"):
                self._skip(end, "an append cut short (no newline)")
                continue
            try:
                event, records = decode_line(line)
            except Exception as exc:
                self._skip(end, f"an unreadable line ({type(exc).__name__}: {exc})")
                continue
            self._head = (event, records, end)
        if self._head is None:
            return None
        event, records, _ = self._head
        return event, records

    def pop(self) -> None:
        if self._head is None:
            raise RuntimeError("pop without a head")
        _, _, end = self._head
        self._head = None
        self._advance(end)

    def _skip(self, end: int, why: str) -> None:
        self.lost_lines += 1
        log.error("prediction log spill %s: skipping %s at byte %d", self.path, why, self._offset)
        self._advance(end)

    def _advance(self, offset: int) -> None:
        self._offset = offset
        if self._offset >= self._size:
            self._clear()
            return
        partial = self._offset_path.with_name(self._offset_path.name + ".tmp")
        partial.write_text(str(self._offset))
        partial.replace(self._offset_path)

    def _clear(self) -> None:
        """Everything was replayed: start the file afresh."""
        if self._size:
            with self.path.open("r+b") as file:
                file.truncate(0)
        self._offset_path.unlink(missing_ok=True)
        self._offset = self._size = 0

    def _without_torn_tail(self) -> int:
        """The file's size once an append cut short by a crash is cut off (else the next append would join it)."""
        if not self.path.exists():
            return 0
        with self.path.open("r+b") as file:
            size = file.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            file.seek(size - 1)
            if file.read(1) == b"\n":
                return size
            # Scan back for the last complete line; a torn tail is one event at most.
            start = max(0, size - 4 * 1024 * 1024)
            file.seek(start)
            tail = file.read()
            keep = start + tail.rfind(b"\n") + 1 if b"\n" in tail else start
            file.truncate(keep)
        self.lost_lines += 1
        log.error("prediction log spill %s: dropped an append cut short by a crash (%d bytes)", self.path, size - keep)
        return keep

    def _read_offset(self) -> int:
        try:
            return int(self._offset_path.read_text())
        except (FileNotFoundError, ValueError):
            return 0
