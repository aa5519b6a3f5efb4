"""``mloop publish`` and ``mloop datasets`` against the real ingest app (its ports faked), served on a local port."""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from typer.testing import CliRunner

from mloop_cli.client import auth_headers
from mloop_cli.datasets import CHUNK, multipart, stream
from mloop_cli.main import app, console, err
from mloop_common.artifacts import ArtifactStore
from mloop_common.auth import Principal, StaticKeys, new_key
from mloop_ingest.app import create_app
from mloop_ingest.bootstrap import IngestService
from mloop_ingest.config import IngestSettings
from mloop_ingest.handlers import DatasetPublisher
from mloop_ingest.sources import Sources

ROOT = Path(__file__).resolve().parents[2]


def ingest_fakes():  # type: ignore[no-untyped-def]
    """Ingest's in-memory store, from its own tests (not an importable package)."""
    spec = importlib.util.spec_from_file_location("ingest_fakes", ROOT / "services/ingest/tests/fakes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    folder.mkdir()
    return folder


@pytest.fixture
def ingest(tmp_path: Path, exports: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ingest app over an in-memory store, served by uvicorn in a thread; MLOOP_INGEST_URL points at it."""
    spool = tmp_path / "spool"
    spool.mkdir()
    settings = IngestSettings(max_upload_bytes=10 * 1024 * 1024, spool_dir=spool)
    application = create_app(settings)
    store = ingest_fakes().memory_store()
    publisher = DatasetPublisher(
        store=store, artifacts=ArtifactStore(tmp_path / "artifacts"), max_event_bytes=900_000, workdir=spool
    )
    application.state.service = IngestService(
        store=store,
        publisher=publisher,
        max_upload_bytes=settings.max_upload_bytes,
        spool_dir=spool,
        sources=Sources.of([f"file://{exports}/"]),
    )
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=0, lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)  # waits for the listening socket, asserts nothing about time
    port = server.servers[0].sockets[0].getsockname()[1]
    monkeypatch.setenv("MLOOP_INGEST_URL", f"http://127.0.0.1:{port}")
    alice = new_key()  # the CLI's calls carry a data engineer's key, whose holder is the publisher
    application.state.access.authenticator.resolver = StaticKeys(
        {alice.key: Principal("alice", "data-engineer", key_id=alice.key_id)}
    )
    monkeypatch.setenv("MLOOP_API_KEY", alice.key)
    for output in (console, err):
        monkeypatch.setattr(output, "width", 200)  # whole table rows, whatever the terminal
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join()


def churn(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.normal(10, 2, rows).round(3),
            "plan": rng.choice(["basic", "pro"], rows),
            "churned": rng.choice(["yes", "no"], rows),
        }
    )


def write(folder: Path, frame: pd.DataFrame, name: str = "churn.csv") -> Path:
    path = folder / name
    frame.to_csv(path, index=False)
    return path


runner = CliRunner()


def mloop(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_publish_streams_the_file_and_the_service_stores_exactly_its_bytes(ingest, tmp_path):
    path = write(tmp_path, churn(), name='odd "name".csv')

    first = mloop("publish", "churn", str(path), "--target", "churned")
    again = mloop("publish", "churn", str(path), "--target", "churned")
    shown = mloop("datasets", "show", "churn")

    assert first.exit_code == 0, first.output
    assert "churn v1 published: 40 rows" in first.output
    assert again.exit_code == 0 and "churn v1 already published (same bytes)" in again.output
    assert shown.exit_code == 0 and "published" in shown.output and "alice" in shown.output
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sha[:12] not in shown.output  # the table shows the snapshot digest, not the upload's
    version = httpx.get(f"{ingest}/v1/datasets/churn/versions/1", headers=auth_headers()).json()
    assert version["upload_sha256"] == sha and version["publisher"].startswith("alice (key ")


def test_the_body_is_read_from_disk_a_chunk_at_a_time(tmp_path):
    path = tmp_path / "big.csv"
    path.write_bytes(b"x" * (2 * CHUNK + 10))
    head, tail = multipart({"target": "y"}, "big.csv", "b0undary")
    advanced: list[int] = []

    parts = list(stream(head, path, tail, advanced.append))

    assert parts[0] == head and parts[-1] == tail
    assert [len(p) for p in parts[1:-1]] == [CHUNK, CHUNK, 10] and advanced == [CHUNK, CHUNK, 10]
    assert b'name="target"\r\n\r\ny\r\n' in head and b'filename="big.csv"' in head


def test_a_rejected_version_exits_1_listing_the_failed_checks(ingest, tmp_path):
    frame = churn()
    frame["churned"] = "yes"

    result = mloop("publish", "churn", str(write(tmp_path, frame)), "--target", "churned")

    assert result.exit_code == 1
    assert "rejected: churn v1" in result.output and "constant_columns" in result.output


def test_bad_input_exits_1_naming_the_field(ingest, tmp_path):
    result = mloop("publish", "churn", str(write(tmp_path, churn())), "--target", "nope")

    assert result.exit_code == 1 and "error 422" in result.output and "(field: target)" in result.output


def test_a_missing_file_is_a_usage_error(ingest, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a short path: the message fits on one line of the error box

    result = mloop("publish", "churn", "absent.csv", "--target", "churned")

    assert result.exit_code == 2 and "is not a file" in result.output


def test_a_uri_is_registered_not_uploaded(ingest, exports):
    path = write(exports, churn())

    result = mloop("publish", "churn", f"file://{path}", "--target", "churned", "--description", "nightly")
    outside = mloop("publish", "churn", "file:///etc/passwd", "--target", "churned")
    shown = mloop("datasets", "show", "churn:1")

    assert result.exit_code == 0 and "churn v1 published" in result.output
    assert outside.exit_code == 1 and "(field: uri)" in outside.output
    assert f"source file://{path}" in shown.output.replace("\n", "")


def test_datasets_list_show_and_diff(ingest, tmp_path):
    mloop("publish", "churn", str(write(tmp_path, churn(seed=1), "v1.csv")), "--target", "churned")
    grown = churn(seed=2).assign(region="north")
    published = mloop("publish", "churn", str(write(tmp_path, grown, "v2.csv")), "--target", "churned")

    listed = mloop("datasets", "list")
    version = mloop("datasets", "show", "churn:2")
    diff = mloop("datasets", "diff", "churn", "1", "2")
    bad = mloop("datasets", "show", "churn:two")
    unknown = mloop("datasets", "show", "other")

    assert published.exit_code == 0 and "constant_columns" in published.output  # its warning is shown
    assert listed.exit_code == 0 and "churn" in listed.output and "v2" in listed.output
    assert version.exit_code == 0
    assert "label_balance" in version.output and "region" in version.output and "compared with v1" in version.output
    assert diff.exit_code == 0 and "schema changed" in diff.output and "+ region" in diff.output
    assert bad.exit_code == 2 and "NAME:VERSION" in bad.output
    assert unknown.exit_code == 1 and "error 404" in unknown.output
