"""Content-addressed artifact store. URIs look like ``artifact:models/ab/ab12...ef.skops``.

Two stores behind one interface, chosen by ``open_artifact_store(location)``: a local folder (the
default) or a bucket of S3-compatible object storage (``s3://bucket/prefix``). The URI names the
content, not the place, so events and database rows stay the same whichever store holds the bytes.

A reader never sees half an artifact: the folder writes a temporary file and renames it into place,
S3 makes an object visible only when its PUT (or multipart upload) completes. Every read verifies the
sha256 the caller vouches for. A URI is untrusted input: anything but a well-formed store URI is refused.

Retention (a mark-and-sweep in the registry, mloop_registry.artifact_gc) lists what a store holds with its age
(``stored``) and deletes what no service references (``delete``). Storing bytes that are already there refreshes
their age, so content a new row is about to reference is never taken as an old orphan.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from mloop_common.errors import DigestMismatch, InvalidInput, MloopError, NotFound

if TYPE_CHECKING:
    from obstore.store import S3Store

    from mloop_common.settings import S3Settings

SCHEME = "artifact:"
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")
_SUFFIX = re.compile(r"^(\.[a-z0-9]{1,10}){0,2}$")
_RELATIVE = re.compile(r"^[a-z][a-z0-9_-]{0,40}/[0-9a-f]{2}/[0-9a-f]{64}(\.[a-z0-9]{1,10}){0,2}$")


# Storing bytes already in the store refreshes their age when it is older than this (S3 re-uploads them, as an
# object's time cannot be touched), so the sweep's grace period (at least an hour) covers a re-stored artifact.
REFRESH_AFTER = timedelta(minutes=30)


@dataclass(frozen=True)
class ArtifactRef:
    uri: str
    sha256: str
    size: int


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact as the store holds it: its URI, size and when it was last written (UTC)."""

    uri: str
    size: int
    modified: datetime

    @property
    def sha256(self) -> str:
        return sha256_of(self.uri)


def sha256_of(uri: str) -> str:
    """The digest a well-formed store URI names (its file name, without the suffix)."""
    return _relative(uri).split("/")[2][:64]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_kind(kind: str, suffix: str) -> None:
    if not _KIND.match(kind) or not _SUFFIX.match(suffix):
        raise InvalidInput(f"bad artifact kind/suffix {kind!r}/{suffix!r}")


def _relative(uri: str) -> str:
    """``kind/ab/<sha256><suffix>`` of a well-formed store URI; no ``..``, no absolute path, no other scheme."""
    if not uri.startswith(SCHEME) or not _RELATIVE.match(uri[len(SCHEME) :]):
        raise InvalidInput(f"not an artifact URI of this store: {uri!r}", field="uri")
    return uri[len(SCHEME) :]


def _verified(uri: str, data: bytes, sha256: str) -> bytes:
    actual = sha256_hex(data)
    if actual != sha256:
        raise DigestMismatch(f"artifact {uri} has sha256 {actual}, expected {sha256}")
    return data


class Artifacts(Protocol):
    """The artifact store as handlers use it (a port: the local folder below, S3 later, a temp folder in tests)."""

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef: ...

    def get(self, uri: str, sha256: str) -> bytes: ...


class SweptStore(Protocol):
    """The artifact store as retention uses it: what it holds, and deleting one artifact."""

    def stored(self) -> Iterator[StoredArtifact]: ...

    def describe(self, uri: str) -> StoredArtifact | None: ...

    def delete(self, uri: str) -> bool: ...


class ArtifactStore:
    """A local folder of immutable, digest-named files."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef:
        """Store ``data`` under its digest; storing the same bytes twice is a no-op."""
        _check_kind(kind, suffix)
        digest = sha256_hex(data)
        relative = f"{kind}/{digest[:2]}/{digest}{suffix}"
        path = self.root / relative
        if not _touched(path):
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
        _check_kind(kind, suffix)
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
            # The same bytes again replace a file with identical content (and a new modification time).
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return ArtifactRef(uri=SCHEME + relative, sha256=digest.hexdigest(), size=size)

    def stored(self) -> Iterator[StoredArtifact]:
        """Every artifact in the folder with its size and modification time; temporary files and anything not
        named like an artifact are left out (never offered for deletion)."""
        for kind in sorted(self.root.iterdir()):
            if not kind.is_dir() or not _KIND.match(kind.name):
                continue
            for path in sorted(kind.glob("*/*")):
                relative = path.relative_to(self.root).as_posix()
                if not _RELATIVE.match(relative):
                    continue
                found = self.describe(SCHEME + relative)
                if found is not None:
                    yield found

    def describe(self, uri: str) -> StoredArtifact | None:
        """Size and modification time of the artifact ``uri``, None if there is none."""
        try:
            info = self.path_of(uri).stat()
        except FileNotFoundError:
            return None
        return StoredArtifact(uri=uri, size=info.st_size, modified=datetime.fromtimestamp(info.st_mtime, UTC))

    def delete(self, uri: str) -> bool:
        """Remove the artifact ``uri``; False if it was not there. Its folder stays (a put may be writing in it)."""
        try:
            self.path_of(uri).unlink()
        except FileNotFoundError:
            return False
        return True

    def path_of(self, uri: str) -> Path:
        """The file behind ``uri``; refuses anything that is not a well-formed store URI."""
        path = (self.root / _relative(uri)).resolve()
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
        return _verified(uri, data, sha256)

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"


def _touched(path: Path) -> bool:
    """Whether ``path`` exists; if it does, its modification time is now (the same bytes stored again are as young
    as the row about to reference them)."""
    try:
        os.utime(path)
    except FileNotFoundError:
        return False
    return True


# S3 parts: at least 5 MiB (S3's minimum, but for the last part). With a few in flight at once, an upload
# holds about (PART_CONCURRENCY + 1) parts in memory whatever the size of the file.
PART_BYTES = 8 * 1024 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024
PART_CONCURRENCY = 4
READ_CHUNK = 1024 * 1024


class ArtifactStoreUnusable(MloopError):
    """The artifact store cannot be reached or used as configured (``S3ArtifactStore.check``).

    ``transient``: the endpoint did not answer (it may still be starting); otherwise it answered with a refusal
    (no such bucket, credentials refused) that waiting will not change.
    """

    code = "artifact_store_unusable"

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


_S3_CODE = re.compile(r"<Code>([^<]{1,100})</Code>")
_REFUSED_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "AccessDenied",
    "AllAccessDisabled",
}


def s3_problem(error: str, bucket: str) -> tuple[str, bool]:
    """What a failed S3 request means for an operator, and whether waiting may fix it (the endpoint did not
    answer). ``error`` is the text of obstore's error, which carries S3's error code when the endpoint answered."""
    match = _S3_CODE.search(error)
    code = match.group(1) if match else ""
    if code == "NoSuchBucket":
        return f"bucket {bucket!r} does not exist: create it, or name another in MLOOP_ARTIFACTS_ROOT", False
    if code in _REFUSED_CREDENTIALS or re.search(r"status code: 40[13]\b", error):
        return (
            "the endpoint refused the credentials: check MLOOP_S3__ACCESS_KEY_ID and MLOOP_S3__SECRET_ACCESS_KEY "
            "(or the AWS_* variables, the pod's identity) and what they may do on the bucket",
            False,
        )
    if re.search(r"status code: 5\d\d\b", error):
        return f"the endpoint is not ready ({code or 'a server error'})", True  # MinIO answers 503 while it starts
    if code:
        return f"the endpoint answered {code}", False
    if "builder error" in error:
        return "the request could not be made: an http:// endpoint needs MLOOP_S3__ALLOW_HTTP=true", False
    if "error sending request" in error or "timed out" in error.lower() or "HTTP error" in error:
        return "the endpoint cannot be reached (not started yet, or a wrong MLOOP_S3__ENDPOINT_URL)", True
    return "the request failed", False


def _first_lines(error: BaseException) -> str:
    """obstore's message without its multi-line debug dump, the S3 error code and message kept."""
    text = str(error).split("\n\nDebug source")[0]
    return " ".join(text.split())[:600]


def _missing(exc: BaseException) -> bool:
    from obstore.exceptions import NotFoundError

    return isinstance(exc, FileNotFoundError | NotFoundError)


class S3ArtifactStore:
    """Immutable, digest-named objects under ``s3://bucket/prefix`` on S3-compatible object storage.

    The same keys as the folder (``<prefix>/kind/ab/<sha256><suffix>``). An object becomes visible only when
    its PUT or its multipart upload completes (S3 guarantees both are atomic), so a reader never sees half of
    one; an upload that fails midway is aborted. A HEAD comes first: the same bytes twice upload nothing.
    """

    def __init__(self, bucket: str, prefix: str = "", *, store: S3Store, part_bytes: int = PART_BYTES) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"S3 parts are at least {MIN_PART_BYTES} bytes, not {part_bytes}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.store = store
        self.part_bytes = part_bytes

    @classmethod
    def from_url(cls, url: str, settings: S3Settings | None = None, *, part_bytes: int = PART_BYTES) -> S3ArtifactStore:
        """A store for ``s3://bucket/prefix``. Unset settings fall back to the standard ``AWS_*`` variables
        (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``...) and to instance or pod credentials."""
        from obstore.store import S3Store

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError(f"not an s3://bucket/prefix URL: {url!r}")
        prefix = parts.path.strip("/")
        config: dict[str, Any] = {}
        client: dict[str, Any] = {}
        retry: dict[str, Any] = {}
        if settings is not None:
            if settings.endpoint_url:
                config["endpoint"] = settings.endpoint_url
            if settings.region:
                config["region"] = settings.region
            if settings.access_key_id:
                config["access_key_id"] = settings.access_key_id
            if settings.secret_access_key:
                config["secret_access_key"] = settings.secret_access_key.get_secret_value()
            if settings.session_token:
                config["session_token"] = settings.session_token.get_secret_value()
            if settings.virtual_hosted_style:
                config["virtual_hosted_style_request"] = True
            client = {"allow_http": settings.allow_http, "timeout": timedelta(seconds=settings.timeout_seconds)}
            retry = {"max_retries": settings.max_retries, "retry_timeout": timedelta(seconds=settings.retry_seconds)}
        store = S3Store(
            parts.netloc,
            prefix=prefix or None,
            config=config or None,  # type: ignore[arg-type]
            client_options=client or None,  # type: ignore[arg-type]
            retry_config=retry or None,  # type: ignore[arg-type]
        )
        return cls(parts.netloc, prefix, store=store, part_bytes=part_bytes)

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def endpoint(self) -> str:
        configured = self.store.config.get("endpoint")
        return str(configured) if configured else f"AWS S3 ({self.store.config.get('region') or 'default region'})"

    def check(self) -> None:
        """Raise ``ArtifactStoreUnusable`` unless the bucket answers a listing under the prefix.

        Run when a service starts, so that a missing bucket or refused credentials stop it with a message naming
        the bucket and the endpoint, instead of failing the first model or dataset it stores.
        """
        import obstore

        try:
            # One request: the prefix's top level (a few "kind/" folders), not every object below it.
            obstore.list_with_delimiter(self.store)
        except Exception as exc:
            error = _first_lines(exc)
            problem, transient = s3_problem(error, self.bucket)
            raise ArtifactStoreUnusable(
                f"artifact store {self.url} at {self.endpoint}: {problem} ({error})", transient=transient
            ) from exc

    def _head(self, key: str) -> tuple[int, datetime] | None:
        """The size and last modification of the object at ``key``, None if there is none."""
        import obstore

        try:
            meta = obstore.head(self.store, key)
        except Exception as exc:
            if _missing(exc):
                return None
            raise
        return int(meta["size"]), meta["last_modified"]

    def _up_to_date(self, key: str, size: int) -> bool:
        """Whether the object at ``key`` has ``size`` bytes and was written recently enough that storing it again
        need not refresh its age (an object's time cannot be touched on S3: it is uploaded again)."""
        found = self._head(key)
        return found is not None and found[0] == size and datetime.now(UTC) - found[1] < REFRESH_AFTER

    def stored(self) -> Iterator[StoredArtifact]:
        """Every object under the prefix named like an artifact, with its size and last modification."""
        import obstore

        for batch in obstore.list(self.store, chunk_size=1000):
            for meta in batch:
                if _RELATIVE.match(meta["path"]):
                    yield StoredArtifact(
                        uri=SCHEME + meta["path"], size=int(meta["size"]), modified=meta["last_modified"]
                    )

    def describe(self, uri: str) -> StoredArtifact | None:
        """Size and last modification of the artifact ``uri``, None if there is none."""
        found = self._head(self.key_of(uri))
        return None if found is None else StoredArtifact(uri=uri, size=found[0], modified=found[1])

    def delete(self, uri: str) -> bool:
        """Remove the artifact ``uri``; False if it was not there."""
        import obstore

        key = self.key_of(uri)
        if self._head(key) is None:
            return False
        obstore.delete(self.store, key)
        return True

    def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef:
        """Store ``data`` under its digest; storing the same bytes twice is a no-op."""
        import obstore

        _check_kind(kind, suffix)
        digest = sha256_hex(data)
        key = f"{kind}/{digest[:2]}/{digest}{suffix}"
        # An object of another size under this digest was damaged: the upload replaces it.
        if not self._up_to_date(key, len(data)):
            obstore.put(
                self.store, key, data, chunk_size=self.part_bytes, max_concurrency=PART_CONCURRENCY, mode="overwrite"
            )
        return ArtifactRef(uri=SCHEME + key, sha256=digest, size=len(data))

    def put_file(self, source: Path, *, kind: str, suffix: str = "") -> ArtifactRef:
        """Store the file at ``source`` under its digest, streamed (never whole in memory).

        The key needs the digest, so the file is read twice: once to hash it, then while uploading it in
        parts. A file that changed in between fails the upload before it completes (nothing is stored).
        """
        import obstore

        _check_kind(kind, suffix)
        hasher, size = hashlib.sha256(), 0
        with source.open("rb") as reader:
            while chunk := reader.read(READ_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        digest = hasher.hexdigest()
        key = f"{kind}/{digest[:2]}/{digest}{suffix}"
        if not self._up_to_date(key, size):
            obstore.put(
                self.store,
                key,
                _verified_chunks(source, digest),
                chunk_size=self.part_bytes,
                max_concurrency=PART_CONCURRENCY,
                mode="overwrite",
            )
        return ArtifactRef(uri=SCHEME + key, sha256=digest, size=size)

    def key_of(self, uri: str) -> str:
        """The object key behind ``uri`` (below the prefix); refuses anything but a well-formed store URI."""
        return _relative(uri)

    def get(self, uri: str, sha256: str) -> bytes:
        """The bytes behind ``uri``, only if they hash to ``sha256``."""
        import obstore

        key = self.key_of(uri)
        try:
            data = bytes(obstore.get(self.store, key).bytes())
        except Exception as exc:
            if _missing(exc):
                raise NotFound(f"artifact {uri} does not exist in {self.url}") from exc
            raise
        return _verified(uri, data, sha256)

    def __repr__(self) -> str:
        return f"S3ArtifactStore({self.url!r})"


def _verified_chunks(source: Path, digest: str) -> Iterator[bytes]:
    """The file's chunks; raises before the last one is consumed if they no longer hash to ``digest``, so the
    multipart upload is aborted instead of completed under a name its content does not have."""
    hasher = hashlib.sha256()
    with source.open("rb") as reader:
        while chunk := reader.read(READ_CHUNK):
            hasher.update(chunk)
            yield chunk
    if hasher.hexdigest() != digest:
        raise DigestMismatch(f"{source} changed while it was stored")


def open_artifact_store(location: str | Path, s3: S3Settings | None = None) -> ArtifactStore | S3ArtifactStore:
    """The store at ``location``: ``s3://bucket/prefix`` is a bucket, a path or ``file://`` URL a local folder."""
    text = str(location)
    scheme = urlsplit(text).scheme if "://" in text else ""
    if scheme == "s3":
        return S3ArtifactStore.from_url(text, s3)
    if scheme == "file":
        return ArtifactStore(urlsplit(text).path)
    if scheme:
        raise ValueError(f"unsupported artifact store {text!r}: use a folder or s3://bucket/prefix")
    return ArtifactStore(text)
