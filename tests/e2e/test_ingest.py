"""Ingest as a real process (uvicorn, its database, the broker): an upload streamed in chunks is counted as it
arrives, and one over the limit is refused without being buffered, in memory or on disk."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, running
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")
LIMIT = 1024 * 1024
BOUNDARY = "mloop-e2e-boundary"
ROWS_PER_CHUNK = 4096


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ingest-spool")


@pytest.fixture(scope="module")
def ingest(
    kafka_bootstrap: str, postgres: str, spool: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    """Only the ingest process, with a 1 MiB upload limit."""
    services = ServiceStack(
        bootstrap=kafka_bootstrap, database_url=postgres, root=tmp_path_factory.mktemp("stack"), repo=REPO
    )
    services.env.update({"MLOOP_INGEST_MAX_UPLOAD_BYTES": str(LIMIT), "MLOOP_INGEST_SPOOL_DIR": str(spool)})
    with running(services, "ingest"):
        yield services


class Body:
    """A multipart body made while it is sent (no Content-Length: chunked), counting the bytes pulled from it."""

    def __init__(self, file_bytes: int) -> None:
        self.file_bytes, self.pulled = file_bytes, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="target"\r\n\r\nchurned\r\n'
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
            "Content-Type: text/csv\r\n\r\nusage,plan,churned\n"
        ).encode()
        self.pulled += len(head)
        yield head
        sent = row = 0
        while sent < self.file_bytes:
            # Distinct rows (no duplicates to reject), made only when pulled.
            chunk = "".join(
                f"{i},{'basic' if i % 3 else 'pro'},{'yes' if i % 2 else 'no'}\n"
                for i in range(row, row + ROWS_PER_CHUNK)
            ).encode()
            row += ROWS_PER_CHUNK
            sent += len(chunk)
            self.pulled += len(chunk)
            yield chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def post(url: str, body: Body, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=60, headers=headers) as client:
        return await client.post(
            "/v1/datasets/chunked/versions",
            content=body,
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )


def peak_memory(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024


async def largest_spool_file(spool: Path, done: asyncio.Event) -> int:
    """The largest spool file seen while the upload runs (sampled)."""
    largest = 0
    while not done.is_set():
        for path in spool.iterdir():
            try:
                largest = max(largest, path.stat().st_size)
            except FileNotFoundError:  # removed between listing and stat
                pass
        await asyncio.sleep(0.005)
    return largest


async def test_a_chunked_upload_over_the_limit_is_refused_without_being_buffered(ingest, spool):
    body = Body(file_bytes=256 * LIMIT)
    pid = ingest.processes["ingest"].pid
    before = peak_memory(pid)
    done = asyncio.Event()
    watching = asyncio.create_task(largest_spool_file(spool, done))

    response = await post(ingest.urls["ingest"], body, ingest.headers)
    done.set()

    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and error["field"] == "file" and str(LIMIT) in error["message"]
    assert body.pulled > 256 * LIMIT  # the whole body was sent (the server reads and discards what follows)...
    assert peak_memory(pid) - before < 64 * LIMIT  # ...but never held: a quarter of it would show here
    assert await watching <= LIMIT and list(spool.iterdir()) == []  # on disk, never past the limit
    async with httpx.AsyncClient(base_url=ingest.urls["ingest"], headers=ingest.headers) as client:
        assert (await client.get("/v1/datasets")).json() == {"datasets": []}


async def test_a_chunked_upload_within_the_limit_is_published(ingest, spool):
    body = Body(file_bytes=LIMIT // 2)

    response = await post(ingest.urls["ingest"], body, ingest.headers)

    assert response.status_code == 201, response.text
    version = response.json()
    assert version["dataset"] == "chunked" and version["rows"] > 10_000 and version["report"]["accepted"]
    assert list(spool.iterdir()) == []
