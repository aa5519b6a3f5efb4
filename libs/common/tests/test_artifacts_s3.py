"""The artifact store on S3-compatible object storage, against a local endpoint (moto in server mode)."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import timedelta
from pathlib import Path

import obstore
import pytest

from mloop_common import artifacts
from mloop_common.artifacts import (
    MIN_PART_BYTES,
    ArtifactStore,
    S3ArtifactStore,
    open_artifact_store,
    sha256_hex,
)
from mloop_common.errors import DigestMismatch, InvalidInput, NotFound
from mloop_common.settings import CommonSettings, S3Settings


def some_bytes() -> bytes:
    return f"model bytes {uuid.uuid4()}".encode()


def objects(settings: S3Settings, bucket: str) -> dict[str, dict]:
    """Every object in ``bucket`` (the whole bucket, not only the store's prefix) by key."""
    raw = S3ArtifactStore.from_url(f"s3://{bucket}", settings).store
    return {meta["path"]: dict(meta) for batch in obstore.list(raw) for meta in batch}


@pytest.fixture
def store(s3_endpoint: S3Settings, s3_bucket: str) -> S3ArtifactStore:
    opened = open_artifact_store(f"s3://{s3_bucket}/team/artifacts", s3_endpoint)
    assert isinstance(opened, S3ArtifactStore)
    return opened


def test_round_trip_keeps_the_folders_uris_and_keys_under_the_prefix(
    store: S3ArtifactStore, s3_endpoint: S3Settings, s3_bucket: str
) -> None:
    data = some_bytes()
    digest = sha256_hex(data)

    ref = store.put(data, kind="models", suffix=".skops")

    assert ref.uri == f"artifact:models/{digest[:2]}/{digest}.skops"
    assert (ref.sha256, ref.size) == (digest, len(data))
    assert store.get(ref.uri, ref.sha256) == data
    assert list(objects(s3_endpoint, s3_bucket)) == [f"team/artifacts/models/{digest[:2]}/{digest}.skops"]


def test_the_same_bytes_twice_give_the_same_uri_and_upload_once(
    store: S3ArtifactStore, s3_endpoint: S3Settings, s3_bucket: str
) -> None:
    data = some_bytes()
    first = store.put(data, kind="models")
    before = objects(s3_endpoint, s3_bucket)

    second = store.put(data, kind="models")

    assert second == first
    assert objects(s3_endpoint, s3_bucket) == before  # same object, same ETag and modification time


def test_a_digest_that_does_not_match_is_refused(store: S3ArtifactStore) -> None:
    ref = store.put(some_bytes(), kind="models")

    with pytest.raises(DigestMismatch):
        store.get(ref.uri, "0" * 64)


def test_an_object_replaced_behind_the_stores_back_is_refused(store: S3ArtifactStore) -> None:
    ref = store.put(some_bytes(), kind="models")
    obstore.put(store.store, store.key_of(ref.uri), b"something else entirely")

    with pytest.raises(DigestMismatch):
        store.get(ref.uri, ref.sha256)


def test_a_damaged_object_is_replaced_by_the_next_put_of_its_bytes(store: S3ArtifactStore) -> None:
    data = some_bytes()
    ref = store.put(data, kind="models")
    obstore.put(store.store, store.key_of(ref.uri), b"truncated")

    store.put(data, kind="models")

    assert store.get(ref.uri, ref.sha256) == data


def test_a_missing_object_is_not_found(store: S3ArtifactStore) -> None:
    digest = "ab" * 32

    with pytest.raises(NotFound):
        store.get(f"artifact:models/ab/{digest}.skops", digest)


@pytest.mark.parametrize(
    "uri",
    [
        "artifact:../../etc/passwd",
        "artifact:models/../../secret",
        "artifact:/models/ab/" + "ab" * 32,
        "s3://other-bucket/models/ab/" + "ab" * 32,
        "artifact:models/ab/" + "ab" * 31,
        "artifact:Models/ab/" + "ab" * 32,
        "artifact:models/ab/" + "ab" * 32 + "/../x",
    ],
)
def test_a_uri_that_is_not_one_of_the_store_is_refused(store: S3ArtifactStore, uri: str) -> None:
    with pytest.raises(InvalidInput):
        store.get(uri, "ab" * 32)


@pytest.mark.parametrize(("kind", "suffix"), [("../models", ""), ("models", "/../x"), ("Models", ""), ("m", "..")])
def test_a_bad_kind_or_suffix_is_refused_before_anything_is_uploaded(
    store: S3ArtifactStore, s3_endpoint: S3Settings, s3_bucket: str, kind: str, suffix: str, tmp_path: Path
) -> None:
    source = tmp_path / "data"
    source.write_bytes(some_bytes())
    with pytest.raises(InvalidInput):
        store.put(some_bytes(), kind=kind, suffix=suffix)
    with pytest.raises(InvalidInput):
        store.put_file(source, kind=kind, suffix=suffix)
    assert objects(s3_endpoint, s3_bucket) == {}


def test_a_file_larger_than_a_part_is_uploaded_in_parts_and_reads_back_whole(
    s3_endpoint: S3Settings, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3ArtifactStore.from_url(f"s3://{s3_bucket}/big", s3_endpoint, part_bytes=MIN_PART_BYTES)
    source = tmp_path / "snapshot.parquet"
    with source.open("wb") as handle:
        for _ in range(11):  # 11 MiB: three parts of at most 5 MiB
            handle.write(os.urandom(1024 * 1024))
    expected = hashlib.sha256(source.read_bytes()).hexdigest()

    ref = store.put_file(source, kind="datasets", suffix=".parquet")

    assert (ref.sha256, ref.size) == (expected, source.stat().st_size)
    [meta] = objects(s3_endpoint, s3_bucket).values()
    assert meta["path"] == f"big/datasets/{expected[:2]}/{expected}.parquet"
    assert str(meta["e_tag"]).strip('"').endswith("-3")  # S3's ETag of a completed three-part upload
    assert store.get(ref.uri, ref.sha256) == source.read_bytes()
    again = store.put_file(source, kind="datasets", suffix=".parquet")
    assert again == ref and objects(s3_endpoint, s3_bucket)[meta["path"]] == meta


def test_a_file_that_changes_during_its_upload_is_not_stored(
    s3_endpoint: S3Settings, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = S3ArtifactStore.from_url(f"s3://{s3_bucket}", s3_endpoint, part_bytes=MIN_PART_BYTES)
    source = tmp_path / "snapshot.parquet"
    source.write_bytes(os.urandom(6 * 1024 * 1024))
    real_check = store._up_to_date

    def check_then_change(key: str, size: int) -> bool:
        found = real_check(key, size)
        source.write_bytes(os.urandom(6 * 1024 * 1024))  # another writer, between hashing and uploading
        return found

    monkeypatch.setattr(store, "_up_to_date", check_then_change)

    with pytest.raises(DigestMismatch):
        store.put_file(source, kind="datasets", suffix=".parquet")
    assert objects(s3_endpoint, s3_bucket) == {}  # the multipart upload was aborted, never completed


def test_the_location_picks_the_store() -> None:
    assert isinstance(open_artifact_store("s3://bucket/some/prefix"), S3ArtifactStore)
    s3 = open_artifact_store("s3://bucket/some/prefix/")
    assert isinstance(s3, S3ArtifactStore) and (s3.bucket, s3.prefix) == ("bucket", "some/prefix")


def test_a_path_or_file_url_is_a_local_folder(tmp_path: Path) -> None:
    for location in (tmp_path / "a", str(tmp_path / "b"), f"file://{tmp_path / 'c'}"):
        local = open_artifact_store(location)
        assert isinstance(local, ArtifactStore) and local.root.is_dir()


@pytest.mark.parametrize("location", ["gs://bucket/x", "s3:///prefix-without-bucket", "s3://bucket/x?versionId=1"])
def test_an_unsupported_location_is_refused(location: str) -> None:
    with pytest.raises(ValueError, match="s3://bucket/prefix"):
        open_artifact_store(location)


def test_settings_read_an_s3_location_and_its_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOOP_ARTIFACTS_ROOT", "s3://models-bucket/mloop")
    monkeypatch.setenv("MLOOP_S3__ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("MLOOP_S3__ACCESS_KEY_ID", "AKIA")
    monkeypatch.setenv("MLOOP_S3__SECRET_ACCESS_KEY", "shh")
    monkeypatch.setenv("MLOOP_S3__ALLOW_HTTP", "true")

    settings = CommonSettings()

    assert settings.artifacts_root == "s3://models-bucket/mloop"
    assert settings.s3.endpoint_url == "http://minio:9000" and settings.s3.allow_http
    assert "shh" not in repr(settings)
    assert isinstance(open_artifact_store(settings.artifacts_root, settings.s3), S3ArtifactStore)


def test_settings_refuse_a_location_without_a_bucket_and_half_a_key_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOOP_ARTIFACTS_ROOT", "s3:///mloop")
    with pytest.raises(ValueError, match="names no bucket"):
        CommonSettings()
    monkeypatch.setenv("MLOOP_ARTIFACTS_ROOT", "s3://bucket")
    monkeypatch.setenv("MLOOP_S3__ACCESS_KEY_ID", "AKIA")
    with pytest.raises(ValueError, match="go together"):
        CommonSettings()


def test_the_default_is_still_the_local_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLOOP_ARTIFACTS_ROOT", raising=False)

    assert CommonSettings().artifacts_root == ".run/artifacts"


def test_stored_lists_the_prefixs_artifacts_and_delete_removes_one(
    store: S3ArtifactStore, s3_endpoint: S3Settings, s3_bucket: str
) -> None:
    model = store.put(some_bytes(), kind="models", suffix=".skops")
    orphan = store.put(some_bytes(), kind="recent", suffix=".parquet")
    raw = S3ArtifactStore.from_url(f"s3://{s3_bucket}", s3_endpoint).store
    obstore.put(raw, "elsewhere/models/ab/" + "a" * 64, b"outside the prefix")
    obstore.put(store.store, "models/notes.txt", b"not an artifact")

    found = {artifact.uri: artifact for artifact in store.stored()}

    assert set(found) == {model.uri, orphan.uri}
    assert found[orphan.uri].size == orphan.size and found[orphan.uri].sha256 == orphan.sha256
    assert found[orphan.uri].modified.tzinfo is not None
    assert store.describe(orphan.uri) == found[orphan.uri]

    assert store.delete(orphan.uri) is True
    assert store.delete(orphan.uri) is False
    assert [artifact.uri for artifact in store.stored()] == [model.uri]
    assert store.describe(orphan.uri) is None
    with pytest.raises(NotFound):
        store.get(orphan.uri, orphan.sha256)
    assert "elsewhere/models/ab/" + "a" * 64 in objects(s3_endpoint, s3_bucket)


def test_the_same_bytes_stored_again_long_after_are_uploaded_again_so_their_age_restarts(
    store: S3ArtifactStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = some_bytes()
    ref = store.put(data, kind="models")
    first = store.describe(ref.uri)
    assert first is not None
    uploads: list[str] = []
    real_put = obstore.put

    def counted(store: object, key: str, *args: object, **kwargs: object) -> object:
        uploads.append(key)
        return real_put(store, key, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(obstore, "put", counted)
    store.put(data, kind="models")
    assert uploads == []  # stored moments ago: nothing to refresh
    monkeypatch.setattr(artifacts, "REFRESH_AFTER", timedelta(0))  # as if stored long ago

    store.put(data, kind="models")

    assert uploads == [store.key_of(ref.uri)]
    again = store.describe(ref.uri)
    assert again is not None and again.modified >= first.modified
    assert store.get(ref.uri, ref.sha256) == data
