import errno
import os
import tempfile
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from mloop_common.artifacts import ArtifactStore, sha256_hex
from mloop_common.bus import classify
from mloop_common.errors import DigestMismatch, InvalidInput, NotFound
from tests.faults import summary
from tests.faults.summary import Row


@pytest.fixture(scope="module")
def rows():
    """This module's row of the fault suite's summary table (scenario 9 of issue 10, disk full)."""
    return []


def some_bytes():
    return f"model bytes {uuid.uuid4()}".encode()


def leftovers(root):
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def test_put_names_the_file_by_its_digest(tmp_path):
    store = ArtifactStore(tmp_path)
    data = some_bytes()
    digest = sha256_hex(data)

    ref = store.put(data, kind="models", suffix=".skops")

    assert ref.uri == f"artifact:models/{digest[:2]}/{digest}.skops"
    assert (ref.sha256, ref.size) == (digest, len(data))
    assert store.get(ref.uri, ref.sha256) == data


def test_putting_the_same_bytes_twice_gives_the_same_uri_and_writes_once(tmp_path):
    store = ArtifactStore(tmp_path)
    data = some_bytes()
    first = store.put(data, kind="models")
    os.utime(store.path_of(first.uri), (1_000_000_000, 1_000_000_000))  # stored long ago
    before = os.stat(store.path_of(first.uri))

    second = store.put(data, kind="models")
    after = os.stat(store.path_of(second.uri))

    assert second == first
    assert after.st_ino == before.st_ino  # not written again
    assert after.st_mtime > before.st_mtime  # but as young as the row about to reference it (retention)
    assert len([p for p in tmp_path.rglob("*") if p.is_file()]) == 1


def test_different_bytes_get_different_uris(tmp_path):
    store = ArtifactStore(tmp_path)

    assert store.put(some_bytes(), kind="models").uri != store.put(some_bytes(), kind="models").uri


def test_put_leaves_no_temporary_files(tmp_path):
    store = ArtifactStore(tmp_path)

    for _ in range(3):
        store.put(some_bytes(), kind="datasets", suffix=".parquet")

    assert leftovers(tmp_path) == []


def test_failed_write_leaves_no_temporary_file_and_no_artifact(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    data = some_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        store.put(data, kind="models")
    monkeypatch.undo()

    assert leftovers(tmp_path) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize(
    "kind, suffix",
    [("Models", ""), ("../models", ""), ("", ""), ("models", "skops"), ("models", "/../x"), ("models", ".a.b.c")],
)
def test_put_refuses_unsafe_kind_or_suffix(tmp_path, kind, suffix):
    store = ArtifactStore(tmp_path)

    with pytest.raises(InvalidInput):
        store.put(some_bytes(), kind=kind, suffix=suffix)


def test_get_refuses_a_tampered_file(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.put(some_bytes(), kind="models")
    store.path_of(ref.uri).write_bytes(b"something else entirely")

    with pytest.raises(DigestMismatch, match=ref.sha256):
        store.get(ref.uri, ref.sha256)


def test_get_refuses_a_digest_the_bytes_do_not_have(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.put(some_bytes(), kind="models")

    with pytest.raises(DigestMismatch):
        store.get(ref.uri, sha256_hex(some_bytes()))


def test_get_of_a_missing_artifact_is_not_found(tmp_path):
    store = ArtifactStore(tmp_path)
    digest = sha256_hex(some_bytes())

    with pytest.raises(NotFound):
        store.get(f"artifact:models/{digest[:2]}/{digest}", digest)


@pytest.mark.parametrize(
    "uri",
    [
        "artifact:../../etc/passwd",
        "artifact:models/ab/../../x",
        "artifact:models/ab/../../../etc/passwd",
        "artifact:/etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "artifact:models/ab/" + "a" * 64 + "/../../../../etc/passwd",
        "artifact:models\\ab\\" + "a" * 64,
        "artifact:models/ab/" + "a" * 64 + "\x00.skops",
        "",
    ],
)
def test_uris_that_could_escape_the_store_are_refused(tmp_path, uri):
    store = ArtifactStore(tmp_path / "store")

    with pytest.raises(InvalidInput) as caught:
        store.get(uri, "a" * 64)
    assert caught.value.field == "uri"


def test_symlinked_file_pointing_outside_the_store_is_refused(tmp_path):
    secret = b"outside the store"
    digest = sha256_hex(secret)
    (tmp_path / "secret").write_bytes(secret)
    store = ArtifactStore(tmp_path / "store")
    planted = store.root / "models" / digest[:2] / digest
    planted.parent.mkdir(parents=True)
    planted.symlink_to(tmp_path / "secret")

    with pytest.raises(InvalidInput, match="escapes the store"):
        store.get(f"artifact:models/{digest[:2]}/{digest}", digest)


def test_symlinked_folder_pointing_outside_the_store_is_refused(tmp_path):
    secret = b"outside the store"
    digest = sha256_hex(secret)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / digest).write_bytes(secret)
    store = ArtifactStore(tmp_path / "store")
    (store.root / "models").mkdir()
    (store.root / "models" / digest[:2]).symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidInput, match="escapes the store"):
        store.get(f"artifact:models/{digest[:2]}/{digest}", digest)


def test_store_reached_through_a_symlinked_root_still_reads(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    store = ArtifactStore(tmp_path / "link")
    data = some_bytes()

    ref = store.put(data, kind="models")

    assert store.get(ref.uri, ref.sha256) == data


def test_a_full_disk_leaves_no_artifact_and_fails_with_an_error_the_consumer_waits_out(tmp_path, monkeypatch, rows):
    store = ArtifactStore(tmp_path)
    real_mkstemp = tempfile.mkstemp
    temporary: list[str] = []

    def onto_a_full_disk(**kwargs: Any) -> tuple[int, str]:
        fd, path = real_mkstemp(**kwargs)
        os.close(fd)
        temporary.append(path)
        return os.open("/dev/full", os.O_WRONLY), path  # every write there fails with ENOSPC, from the kernel

    monkeypatch.setattr(tempfile, "mkstemp", onto_a_full_disk)
    with pytest.raises(OSError) as full:
        store.put(b"model bytes" * 1000, kind="models", suffix=".skops")
    monkeypatch.undo()
    left = [p for p in tmp_path.rglob("*") if p.is_file()]
    temporary_removed = bool(temporary) and not os.path.exists(temporary[0])
    kind = classify(full.value)
    stored = store.put(b"model bytes" * 1000, kind="models", suffix=".skops")  # space back: it works
    read_back = store.get(stored.uri, stored.sha256) == b"model bytes" * 1000
    rows.append(
        Row(
            "9 disk full during an artifact write",
            "every write of the artifact's temporary file fails with ENOSPC (it is /dev/full); then space comes back",
            "the write fails with a clear error, classed transient (retried in place, never dead-lettered); no "
            "partial artifact or temporary left; the same write works later",
            f"{errno.errorcode.get(full.value.errno, full.value.errno)}: {full.value.strerror}; classed {kind}; "
            f"{len(left)} files left, temporary removed: {'yes' if temporary_removed else 'no'}; "
            f"the write afterwards stored and read back: {'yes' if read_back else 'no'}",
            full.value.errno == errno.ENOSPC and kind == "transient" and left == [] and temporary_removed and read_back,
        )
    )

    assert full.value.errno == errno.ENOSPC
    assert kind == "transient"  # retried in place until space comes back, never dead-lettered
    assert left == []  # no partial artifact, no temporary left
    assert temporary_removed
    assert read_back


def test_stored_lists_every_artifact_with_its_size_and_age_and_nothing_else(tmp_path):
    store = ArtifactStore(tmp_path)
    model = store.put(b"a model", kind="models", suffix=".skops")
    snapshot = store.put(b"a snapshot", kind="datasets", suffix=".parquet")
    os.utime(store.path_of(snapshot.uri), (1_000_000_000, 1_000_000_000))
    (tmp_path / "models" / ".tmp-half-written").write_bytes(b"x")  # a write in progress
    (tmp_path / "notes.txt").write_text("an operator's file")
    (tmp_path / "models" / "ab").mkdir(exist_ok=True)
    (tmp_path / "models" / "ab" / "not-a-digest.skops").write_bytes(b"x")

    found = {artifact.uri: artifact for artifact in store.stored()}

    assert set(found) == {model.uri, snapshot.uri}
    assert found[model.uri].size == len(b"a model") and found[model.uri].sha256 == model.sha256
    assert found[snapshot.uri].modified == datetime.fromtimestamp(1_000_000_000, UTC)
    assert store.describe(model.uri) == found[model.uri]


def test_delete_removes_one_artifact_and_says_whether_it_was_there(tmp_path):
    store = ArtifactStore(tmp_path)
    gone = store.put(b"an orphan", kind="recent", suffix=".parquet")
    kept = store.put(b"a model", kind="models")

    assert store.delete(gone.uri) is True
    assert store.delete(gone.uri) is False

    assert [artifact.uri for artifact in store.stored()] == [kept.uri]
    assert store.describe(gone.uri) is None
    with pytest.raises(NotFound):
        store.get(gone.uri, gone.sha256)
    with pytest.raises(InvalidInput):
        store.delete("artifact:../../etc/passwd")


def test_a_deleted_artifact_stored_again_is_back(tmp_path):
    store = ArtifactStore(tmp_path)
    ref = store.put(b"bytes", kind="models")
    store.delete(ref.uri)

    assert store.put(b"bytes", kind="models") == ref
    assert store.get(ref.uri, ref.sha256) == b"bytes"


def test_summary_rows(rows):
    """Merges this module's row into tests/faults/results/summary.md and .json."""
    assert rows, "no scenario ran"
    summary.write(rows)
    assert all(r.passed for r in rows)
