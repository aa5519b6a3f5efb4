"""Content-addressed artifact store. URIs look like ``artifact:models/ab/ab12...ef.skops``.

Writes go to a temporary file and are renamed into place, so a reader never sees half a file.
Every read verifies the sha256 the caller vouches for. A URI is untrusted input: one that
would resolve outside the root is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from mloop_common.errors import DigestMismatch, InvalidInput, NotFound

SCHEME = "artifact:"
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
_SUFFIX = re.compile(r"^(\.[a-z0-9]{1,10}){0,2}$")
_RELATIVE = re.compile(r"^[a-z][a-z0-9_-]{0,40}/[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,10}){0,2}$")


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size: int


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Artifacts(Protocol):
    """The artifact store as handlers use it (a port: the local folder below, S3 later, a temp folder in tests)."""

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef: ...

    def get(self, uri: str, sha256: str) -> bytes: ...


class ArtifactStore:
    """A local folder of immutable, digest-named files."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef:
        """Store ``data`` under its digest; storing the same bytes twice is a no-op."""
        if not _KIND.match(kind) or not _SUFFIX.match(suffix):
            raise InvalidInput(f"bad artifact kind/suffix {kind!r}/{suffix!r}")
        digest = sha256_hex(data)
        relative = f"{kind}/{digest[:2]}/{digest}{suffix}"
        path = self.root / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return ArtifactRef(uri=SCHEME + relative, sha256=digest, size=len(data))

    def put_file(self, source: Path, *, kind: str, suffix: str = "") -> ArtifactRef:
        """Store the file at ``source`` under its digest, copied in chunks (never whole in memory)."""
        if not _KIND.match(kind) or not _SUFFIX.match(suffix):
            raise InvalidInput(f"bad artifact kind/suffix {kind!r}/{suffix!r}")
        (self.root / kind).mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / kind, prefix=".tmp-")
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as handle, source.open("rb") as reader:
                while chunk := reader.read(1024 * 1024):
                    digest.update(chunk)
                    handle.write(chunk)
                    size += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            relative = f"{kind}/{digest.hexdigest()[:2]}/{digest.hexdigest()}{suffix}"
            path = self.root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)  # the same bytes again replace a file with identical content
        finally:
            Path(tmp).unlink(missing_ok=True)
        return ArtifactRef(uri=SCHEME + relative, sha256=digest.hexdigest(), size=size)

    def path_of(self, uri: str) -> Path:
        """The file behind ``uri``; refuses anything that is not a well-formed store URI."""
        if not uri.startswith(SCHEME) or not _RELATIVE.match(uri[len(SCHEME) :]):
            raise InvalidInput(f"not an artifact URI of this store: {uri!r}", field="uri")
        path = (self.root / uri[len(SCHEME) :]).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidInput(f"artifact URI escapes the store: {uri!r}", field="uri")
        return path

    def get(self, uri: str, sha256: str) -> bytes:
        """The bytes behind ``uri``, only if they hash to ``sha256``."""
        path = self.path_of(uri)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"artifact {uri} does not exist") from exc
        actual = sha256_hex(data)
        if actual != sha256:
            raise DigestMismatch(f"artifact {uri} has sha256 {actual}, expected {sha256}")
        return data
