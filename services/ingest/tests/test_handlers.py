"""Publishing dataset versions through fakes of ingest's ports (no Kafka, no database)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mloop_common.artifacts import ArtifactRef, ArtifactStore
from mloop_common.datacontract import DatasetContract
from mloop_common.errors import InvalidInput, NotFound, PayloadTooLarge
from mloop_common.events import DataPublished
from mloop_ingest.handlers import DatasetPublisher, PublishVersion, encoded_size
from mloop_ingest.reading import Limits

from .fakes import memory_store


def churn(rows: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "usage": rng.normal(10, 2, rows).round(3),
            "plan": rng.choice(["basic", "pro"], rows),
            "churned": rng.choice(["yes", "no"], rows),
        }
    )


def csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


SPOOL: list[Path] = []  # this test's folder for uploads (set by the autouse fixture below)


@pytest.fixture(autouse=True)
def spool(tmp_path: Path) -> None:
    SPOOL[:] = [tmp_path]


def upload(data: bytes, dataset: str = "churn", target: str = "churned", **fields: str | None) -> PublishVersion:
    """The command the route makes once the upload is on disk."""
    with tempfile.NamedTemporaryFile(dir=SPOOL[0], suffix=".csv", delete=False) as handle:
        handle.write(data)
    return PublishVersion(
        dataset=dataset,
        source=Path(handle.name),
        upload_sha256=hashlib.sha256(data).hexdigest(),
        filename="upload.csv",
        target=target,
        **fields,  # type: ignore[arg-type]
    )


def wide(columns: int, rows: int = 1) -> bytes:
    """A CSV of ``columns`` numeric features (long names) and an alternating label."""
    names = [f"sensor_reading_{i:06d}" for i in range(columns)]
    values = np.random.default_rng(0).integers(0, 100, (rows, columns))
    frame = pd.DataFrame(values, columns=names)
    frame["churned"] = ["yes", "no"] * (rows // 2) + ["yes"] * (rows % 2)
    return csv(frame)


@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


async def recorded(store, dataset: str = "churn"):  # type: ignore[no-untyped-def]
    async with store.transaction() as unit:
        try:
            return await unit.versions(dataset)
        except NotFound:
            return []


async def test_a_valid_csv_becomes_version_1_with_a_verified_snapshot_and_is_announced(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    frame = churn()

    published = await publisher.publish_version(upload(csv(frame), time_column=None, description="first"))

    version = published.version
    assert published.created and version.version == 1 and version.status == "published"
    assert version.rows == 40 and version.columns == ["usage", "plan", "churned"] and version.report.accepted
    snapshot = pd.read_parquet(io.BytesIO(artifacts.get(version.snapshot_uri, version.sha256)))
    pd.testing.assert_frame_equal(snapshot, frame, check_dtype=False)
    [announced] = store.published_payloads(DataPublished)
    assert (announced.dataset, announced.version, announced.rows) == ("churn", 1, 40)
    assert (announced.snapshot.uri, announced.snapshot.sha256) == (version.snapshot_uri, version.snapshot_sha256)
    assert announced.column_count == 3 and announced.target == "churned" and announced.warnings == []
    assert announced.contract is not None and announced.schema_digest is not None
    served = DatasetContract.model_validate_json(artifacts.get(announced.contract.uri, announced.contract.sha256))
    assert [c.name for c in served.columns] == version.columns and served.digest == announced.schema_digest
    assert announced.description == "first"
    assert store.published[0].subject == "churn"
    async with store.transaction() as unit:
        detail = await unit.version("churn", 1)
    assert detail.column_types == {"usage": "numeric", "plan": "string", "churned": "string"}
    assert detail.profile["usage"].missing == 0 and set(detail.profile["plan"].top) == {"basic", "pro"}


async def test_the_same_bytes_again_answer_the_existing_version_and_announce_nothing(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    first = await publisher.publish_version(upload(csv(churn())))

    again = await publisher.publish_version(upload(csv(churn()), description="ignored: the bytes decide"))

    assert not again.created and again.version == first.version
    assert len(await recorded(store)) == 1
    assert len(store.published) == 1


async def test_a_new_file_becomes_the_next_version(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    await publisher.publish_version(upload(csv(churn(seed=1))))

    second = await publisher.publish_version(upload(csv(churn(seed=2))))

    assert second.created and second.version.version == 2
    assert [p.version for p in store.published_payloads(DataPublished)] == [1, 2]


async def test_a_file_without_its_target_column_is_refused_naming_the_field_and_nothing_is_recorded(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)

    with pytest.raises(InvalidInput) as refused:
        await publisher.publish_version(upload(csv(churn().drop(columns="churned"))))

    assert refused.value.field == "target" and "'churned'" in refused.value.message
    assert await recorded(store) == [] and store.published == []


async def test_a_version_failing_a_check_is_recorded_as_rejected_and_announces_nothing(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    frame = churn()
    frame["churned"] = "yes"  # a constant target: nothing to learn

    published = await publisher.publish_version(upload(csv(frame)))

    version = published.version
    assert published.created and version.status == "rejected" and not version.report.accepted
    assert [c.name for c in version.report.failures()] == ["constant_columns"]
    assert version.snapshot_uri is None and version.sha256 is None
    assert [v.status for v in await recorded(store)] == ["rejected"]
    assert store.published == [] and not (artifacts.root / "datasets").exists()


async def test_a_file_that_drops_a_published_column_is_rejected(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    await publisher.publish_version(upload(csv(churn())))

    published = await publisher.publish_version(upload(csv(churn(seed=3).drop(columns="plan"))))

    assert published.version.status == "rejected" and published.version.version == 2
    assert any(c.name == "schema" and "plan" in c.message for c in published.version.report.failures())
    assert published.version.parent_version == 1
    assert len(store.published) == 1


async def test_warnings_travel_in_the_announcement(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    frame = churn()
    frame["region"] = "north"  # a constant column warns

    published = await publisher.publish_version(upload(csv(frame)))

    [announced] = store.published_payloads(DataPublished)
    assert [w.check for w in announced.warnings] == [c.name for c in published.version.report.warnings()]
    assert any(w.check == "constant_columns" and "region" in w.message for w in announced.warnings)


async def test_a_50_000_column_file_is_refused_by_the_default_column_limit_before_it_is_parsed(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)

    with pytest.raises(InvalidInput) as refused:
        await publisher.publish_version(upload(wide(50_000, rows=10)))

    assert refused.value.field == "file" and "50001 columns, over the limit of 10000" in refused.value.message
    assert await recorded(store) == [] and store.published == []


async def test_a_50_000_column_file_under_a_raised_limit_is_published_with_a_small_event(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(
        store=store, artifacts=artifacts, max_event_bytes=900_000, limits=Limits(max_columns=60_000)
    )

    published = await publisher.publish_version(upload(wide(50_000, rows=10)))

    assert published.version.status == "published" and len(published.version.columns) == 50_001
    [event] = store.published
    assert encoded_size(event) < 5_000  # the same size as for three columns: nothing in it grows with the width
    announced = event.decode(DataPublished)
    assert announced.column_count == 50_001 and announced.contract is not None
    stored = DatasetContract.model_validate_json(artifacts.get(announced.contract.uri, announced.contract.sha256))
    assert len(stored.columns) == 50_001 and stored.digest == announced.schema_digest


async def test_an_announcement_over_a_small_configured_event_limit_is_refused_and_nothing_is_recorded(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=1_500)

    with pytest.raises(PayloadTooLarge) as refused:
        await publisher.publish_version(upload(csv(churn()), description="x" * 1_000))

    assert refused.value.field == "description" and "1500-byte limit" in refused.value.message
    assert await recorded(store) == [] and store.published == []
    assert not (artifacts.root / "datasets").exists()  # refused before a snapshot was written


async def test_an_announcement_grown_past_the_limit_by_its_snapshot_uri_is_never_staged(artifacts):
    class LongUris:
        """An artifact store whose URIs are much longer than the local store's (e.g. a deep S3 prefix)."""

        def put_file(self, source: Path, *, kind: str, suffix: str = "") -> ArtifactRef:
            ref = artifacts.put_file(source, kind=kind, suffix=suffix)
            return ArtifactRef(uri="s3://bucket/" + "deep/" * 2_000 + ref.uri, sha256=ref.sha256, size=ref.size)

        def put(self, data: bytes, *, kind: str, suffix: str = "") -> ArtifactRef:
            return artifacts.put(data, kind=kind, suffix=suffix)

        def get(self, uri: str, sha256: str) -> bytes:
            raise AssertionError("not read here")

    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=LongUris(), max_event_bytes=5_000)

    with pytest.raises(PayloadTooLarge):
        await publisher.publish_version(upload(csv(churn())))

    assert await recorded(store) == [] and store.published == []
    async with store.transaction() as unit:
        assert await unit.allocate_version("churn") == 1  # the refused attempt used up no version number


@pytest.mark.parametrize("name", ["Churn", "-churn", "churn data", "x" * 64, ""])
async def test_an_invalid_dataset_name_is_refused_naming_the_field(artifacts, name):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)

    with pytest.raises(InvalidInput) as refused:
        await publisher.publish_version(upload(csv(churn()), dataset=name))

    assert refused.value.field == "name"
    assert store.state.tables == {} and store.published == []


async def test_an_unreadable_file_is_refused_naming_the_file_field(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)

    with pytest.raises(InvalidInput) as refused:
        await publisher.publish_version(upload(b""))

    assert refused.value.field == "file"
    assert await recorded(store) == []


async def test_concurrent_uploads_of_the_same_bytes_make_one_version(artifacts):
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    data = csv(churn())

    first, second = await asyncio.gather(
        publisher.publish_version(upload(data)), publisher.publish_version(upload(data))
    )

    assert sorted([first.created, second.created]) == [False, True]
    assert first.version.version == second.version.version == 1
    assert len(await recorded(store)) == 1 and len(store.published) == 1
