"""Multipart uploads streamed to a temporary file, hashed and size-limited as the bytes arrive.

Starlette's form parser reads a whole request before the route runs (spooling files to disk), so a
file limit checked afterwards only refuses an upload once it has been received in full. Here the body is
fed chunk by chunk to python-multipart: the file part goes straight to disk and is refused the moment it
passes the limit, whatever ``Content-Length`` said or whether the body was chunked.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from mloop_common.errors import InvalidInput, PayloadTooLarge

FILE_FIELD = "file"
MAX_FIELD_BYTES = 64 * 1024  # any text field (the contract declaration is the longest)


@dataclass(frozen=True)
class SpooledFile:
    path: Path
    filename: str
    size: int
    sha256: str


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    file: SpooledFile | None = None


class _Receiver:
    """python-multipart callbacks: text fields into memory (small), the file part onto disk."""

    def __init__(self, *, fields: frozenset[str], file_limit: int, directory: Path | None) -> None:
        self.allowed = fields
        self.file_limit = file_limit
        self.directory = directory
        self.form = Form()
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name = ""
        self._filename: str | None = None
        self._value = bytearray()
        self._out: IO[bytes] | None = None
        self._path: Path | None = None
        self._size = 0
        self._digest = hashlib.sha256()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda data, start, end: self._header_name.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self._headers, self._value, self._filename = {}, bytearray(), None

    def header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename is not None or self._name == FILE_FIELD:
            if self._name != FILE_FIELD:
                raise InvalidInput(f"unexpected file field {self._name!r}: send the file as 'file'", field=self._name)
            if self.form.file is not None or self._out is not None:
                raise InvalidInput("send one file per request", field=FILE_FIELD)
            self._filename = (filename or b"").decode("utf-8", "replace")
            handle = tempfile.NamedTemporaryFile(dir=self.directory, prefix="upload-", delete=False)
            self._out, self._path = handle, Path(handle.name)
        elif self._name not in self.allowed:
            raise InvalidInput(f"unknown form field {self._name!r}", field=self._name or "form")
        elif self._name in self.form.fields:
            raise InvalidInput(f"form field {self._name!r} sent twice", field=self._name)

    def part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._out is None:
            if len(self._value) + len(chunk) > MAX_FIELD_BYTES:
                raise PayloadTooLarge(f"form field {self._name!r} over {MAX_FIELD_BYTES} bytes", field=self._name)
            self._value.extend(chunk)
            return
        self._size += len(chunk)
        if self._size > self.file_limit:
            raise PayloadTooLarge(f"file over the {self.file_limit}-byte limit", field=FILE_FIELD)
        self._digest.update(chunk)
        # A plain (blocking) write: a local disk takes a chunk of the request in microseconds, and the
        # alternative, a thread hop per chunk, costs more than the write.
        self._out.write(chunk)

    def part_end(self) -> None:
        if self._out is None:
            try:
                self.form.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput(f"form field {self._name!r} is not UTF-8 text", field=self._name) from exc
            return
        self._out.close()
        assert self._path is not None and self._filename is not None
        self.form.file = SpooledFile(self._path, self._filename, self._size, self._digest.hexdigest())
        self._out = None

    def discard(self) -> None:
        if self._out is not None:
            self._out.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)


def boundary_of(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not options.get(b"boundary"):
        raise InvalidInput("send the file as multipart/form-data", field=FILE_FIELD)
    return options[b"boundary"]


@asynccontextmanager
async def receive_form(
    body: AsyncIterable[bytes],
    content_type: str,
    *,
    fields: frozenset[str],
    file_limit: int,
    directory: Path | None = None,
) -> AsyncIterator[Form]:
    """The form in ``body``, its file spooled to ``directory``; the file is deleted when the block ends."""
    receiver = _Receiver(fields=fields, file_limit=file_limit, directory=directory)
    parser = MultipartParser(boundary_of(content_type), receiver.callbacks())  # type: ignore[arg-type]
    try:
        try:
            async for chunk in body:
                parser.write(chunk)
            parser.finalize()
        except MultipartParseError as exc:
            raise InvalidInput(f"malformed multipart body: {exc}", field=FILE_FIELD) from exc
        if receiver._out is not None:  # the body ended inside the file part
            raise InvalidInput("the upload ended before the file was complete", field=FILE_FIELD)
        yield receiver.form
    finally:
        receiver.discard()
