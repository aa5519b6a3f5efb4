"""Registering a dataset version by URI: only under a configured root, copied to the spool while hashed.

Roots are local folders (``file:///srv/data/``), web prefixes (``https://host/exports/``) or S3-compatible
prefixes (``s3://bucket/exports/``, reached with the artifact store's S3 settings, ``MLOOP_S3__*``).

A URI is untrusted input. Refused, each with a 422 naming the ``uri`` field:

- anything not under a configured root (scheme, host, port and path prefix must all match), so
  ``file:///etc/passwd`` is refused unless ``/etc`` is a root;
- ``.`` / ``..`` segments, backslashes, control characters, and percent-encoded ``.``, ``/``, ``\\`` or
  ``%`` (which covers double encoding such as ``%252e%252e``): a path means what it says or nothing;
- credentials in the URI, query strings and fragments;
- a local path that leaves its root once symlinks are resolved, or is not a regular file;
- an HTTP(S) host that resolves to a loopback, private, link-local, multicast, reserved or unspecified
  address (the connection then goes to the vetted address, so a second DNS answer cannot redirect it);
- any redirect: the root's server must serve the file itself.

The bytes are copied to the spool (never whole in memory, refused past the size limit), so the version
is made of exactly the bytes hashed even if the source changes afterwards.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import os
import re
import socket
import ssl
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import SplitResult, unquote, urlsplit

from mloop_common.artifacts import S3ArtifactStore
from mloop_common.errors import InvalidInput, PayloadTooLarge
from mloop_common.settings import S3Settings
from mloop_ingest.uploads import SpooledFile

FIELD = "uri"
CHUNK = 1024 * 1024
SCHEMES = ("file", "http", "https", "s3")
# Percent-encodings that could smuggle a traversal past the checks: ".", "/", "\" and "%" itself.
_SMUGGLED = re.compile(r"%(2e|2f|5c|25)", re.IGNORECASE)
Resolver = Callable[[str, int], list[str]]


def _refuse(message: str) -> InvalidInput:
    return InvalidInput(message, field=FIELD)


@dataclass(frozen=True)
class Root:
    """One configured place versions may come from: ``file:///srv/data/``, ``https://host/exports/`` or
    ``s3://bucket/exports/`` (the bucket is the host)."""

    scheme: str
    host: str
    port: int | None
    path: PurePosixPath

    @classmethod
    def parse(cls, text: str) -> Root:
        parts = urlsplit(text)
        if parts.scheme not in SCHEMES or not parts.path.startswith("/"):
            raise ValueError(f"a source root is a file://, http(s):// or s3:// URL with an absolute path: {text!r}")
        if parts.scheme != "file" and not parts.hostname:
            raise ValueError(f"an http(s) source root names its host, an s3 one its bucket: {text!r}")
        return cls(parts.scheme, (parts.hostname or "").lower(), parts.port, PurePosixPath(parts.path))

    def holds(self, parts: SplitResult, path: PurePosixPath) -> bool:
        host = (parts.hostname or "").lower()
        if self.scheme == "file":
            host = "" if host == "localhost" else host
        same_place = (parts.scheme, host, parts.port) == (self.scheme, self.host, self.port)
        return same_place and (path == self.path or self.path in path.parents)


def check_uri(uri: str, roots: Iterable[Root]) -> tuple[Root, SplitResult, PurePosixPath]:
    """The root that holds ``uri`` and its normalised path; refuses every form of escape listed above."""
    if "\\" in uri or any(ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise _refuse("the URI contains a backslash or a control character")
    if _SMUGGLED.search(uri):
        raise _refuse("the URI percent-encodes '.', '/', '\\' or '%': write the path plainly")
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise _refuse(f"scheme {parts.scheme!r} is not supported (file, http, https, s3 under a configured root)")
    if parts.username is not None or parts.password is not None:
        raise _refuse("the URI carries credentials")
    if parts.query or parts.fragment:
        raise _refuse("the URI has a query or fragment")
    decoded = unquote(parts.path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):
        raise _refuse("the URI path encodes a control character")
    segments = decoded.split("/")
    if not decoded.startswith("/") or any(s in (".", "..") for s in segments):
        raise _refuse("the URI path must be absolute, without '.' or '..' segments")
    path = PurePosixPath(decoded)
    for root in roots:
        if root.holds(parts, path):
            return root, parts, path
    raise _refuse(f"{uri!r} is not under a configured source root (MLOOP_INGEST_SOURCE_ROOTS)")


def _spool(chunks: Iterator[bytes], *, filename: str, limit: int, directory: Path | None) -> SpooledFile:
    digest, size = hashlib.sha256(), 0
    handle = tempfile.NamedTemporaryFile(dir=directory, prefix="source-", delete=False)
    path = Path(handle.name)
    try:
        with handle:
            for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the source is over the {limit}-byte limit", field=FIELD)
                digest.update(chunk)
                handle.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return SpooledFile(path, filename, size, digest.hexdigest())


def _local_chunks(root: Root, path: PurePosixPath) -> Iterator[bytes]:
    base = os.path.realpath(root.path)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base:
        raise _refuse("the path leaves its source root (through a symbolic link)")
    try:
        descriptor = os.open(real, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError as exc:
        raise _refuse(f"no file at {str(path)!r}") from exc
    except OSError as exc:
        raise _refuse(f"cannot read {str(path)!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise _refuse(f"{str(path)!r} is not a regular file")
    with os.fdopen(descriptor, "rb") as reader:
        while chunk := reader.read(CHUNK):
            yield chunk


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver)."""
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise _refuse(f"host {host!r} does not resolve") from exc
    return sorted({str(answer[4][0]) for answer in answers})


def public_address(address: str) -> bool:
    """Whether connecting to ``address`` reaches the public internet (not this machine or its network)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to a vetted address, with the certificate checked against the host name."""

    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


def _http_chunks(
    parts: SplitResult, *, resolve: Resolver, allowed: Callable[[str], bool], timeout: float
) -> Iterator[bytes]:
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = resolve(host, port)
    blocked = [a for a in addresses if not allowed(a)]
    if blocked or not addresses:
        raise _refuse(f"host {host!r} resolves to a loopback, private or link-local address ({', '.join(blocked)})")
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(host, addresses[0], port, timeout)
    try:
        connection.request("GET", parts.path or "/", headers={"User-Agent": "mloop-ingest"})
        with connection.getresponse() as response:
            if 300 <= response.status < 400:
                raise _refuse(f"the source answered with a redirect ({response.status}); redirects are not followed")
            if response.status != 200:
                raise _refuse(f"the source answered {response.status} {response.reason}")
            while chunk := response.read(CHUNK):
                yield chunk
    except OSError as exc:
        raise _refuse(f"cannot fetch from {host!r}: {exc}") from exc
    finally:
        connection.close()


def _s3_chunks(bucket: str, path: PurePosixPath, *, settings: S3Settings | None, limit: int) -> Iterator[bytes]:
    import obstore

    store = S3ArtifactStore.from_url(f"s3://{bucket}", settings).store
    try:
        found = obstore.get(store, str(path).lstrip("/"))
    except FileNotFoundError as exc:
        raise _refuse(f"no object at s3://{bucket}{path}") from exc
    except Exception as exc:  # obstore's errors: credentials, an unreachable endpoint, a missing bucket
        raise _refuse(f"cannot read s3://{bucket}{path}: {exc}") from exc
    if int(found.meta["size"]) > limit:  # refused before a byte is copied
        raise PayloadTooLarge(f"the source is over the {limit}-byte limit", field=FIELD)
    for chunk in found.stream(min_chunk_size=CHUNK):
        yield bytes(chunk)


@dataclass(frozen=True)
class Sources:
    """The configured roots and how to reach them (the resolver and address rule are seams for tests)."""

    roots: tuple[Root, ...]
    resolve: Resolver = resolve_host
    allowed: Callable[[str], bool] = public_address
    timeout: float = 30.0
    s3: S3Settings | None = None  # how s3:// roots are reached (the artifact store's settings)

    @classmethod
    def of(cls, roots: Iterable[str], s3: S3Settings | None = None) -> Sources:
        return cls(tuple(Root.parse(r) for r in roots), s3=s3)

    def fetch(self, uri: str, *, limit: int, directory: Path | None) -> SpooledFile:
        """Copy the file behind ``uri`` into ``directory``, hashing it; blocking (run it in a thread)."""
        root, parts, path = check_uri(uri, self.roots)
        if root.scheme == "file":
            chunks = _local_chunks(root, path)
        elif root.scheme == "s3":
            chunks = _s3_chunks(root.host, path, settings=self.s3, limit=limit)
        else:
            chunks = _http_chunks(parts, resolve=self.resolve, allowed=self.allowed, timeout=self.timeout)
        return _spool(chunks, filename=path.name, limit=limit, directory=directory)
