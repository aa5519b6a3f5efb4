"""The loop with its artifacts on S3-compatible object storage (moto in server mode, started here).

Six services as processes, on the real broker and database, with ``MLOOP_ARTIFACTS_ROOT=s3://bucket/prefix``:
a dataset is published, trained, validated, registered, promoted and served; every artifact is an object in
the bucket and no service wrote a local artifact folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import obstore
import pytest

from mloop_common.artifacts import S3ArtifactStore
from mloop_common.settings import S3Settings
from mloop_common.testing import local_s3, new_bucket
from tests.conftest import REPO, eventually, running
from tests.e2e.test_release_gate import declare, publish, served_version, spec, version_count
from tests.stack import ServiceStack

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT = 120
PREFIX = "mloop/artifacts"


@pytest.fixture(scope="module")
def s3() -> Iterator[tuple[S3Settings, str]]:
    """A local S3 endpoint with an empty bucket: the settings that reach it and the bucket's name."""
    with local_s3() as settings:
        yield settings, new_bucket(settings)


@pytest.fixture(scope="module")
def stack(
    kafka_bootstrap: str, postgres: str, s3: tuple[S3Settings, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceStack]:
    """The six services with their artifacts in s3://<bucket>/mloop/artifacts."""
    settings, bucket = s3
    services = ServiceStack(
        bootstrap=kafka_bootstrap,
        database_url=postgres,
        root=tmp_path_factory.mktemp("s3-stack"),
        repo=REPO,
        artifacts_url=f"s3://{bucket}/{PREFIX}",
        s3=settings,
    )
    with running(services):
        yield services


def bucket_keys(settings: S3Settings, bucket: str) -> list[str]:
    store = S3ArtifactStore.from_url(f"s3://{bucket}", settings).store
    return sorted(meta["path"] for batch in obstore.list(store) for meta in batch)


async def test_a_published_dataset_is_trained_promoted_and_served_with_every_artifact_in_the_bucket(
    stack: ServiceStack, clients: dict[str, httpx.AsyncClient], s3: tuple[S3Settings, str]
) -> None:
    settings, bucket = s3
    registry, serving, ingest = clients["registry"], clients["serving"], clients["ingest"]
    name = f"s3-loop-{uuid.uuid4().hex[:6]}"
    await declare(registry, spec(name))

    await publish(ingest, name, seed=1)
    await eventually(lambda: version_count(registry, name, 1), timeout=TIMEOUT, interval=1.0)
    assert await eventually(lambda: served_version(serving, name), timeout=TIMEOUT, interval=0.5) == 1
    response = await serving.post(f"/v1/models/{name}:predict", json={"instances": [{"x1": 1, "x2": 0, "x3": 0}]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] in (["yes"], ["no"])

    dataset = (await ingest.get(f"/v1/datasets/{name}/versions/1")).json()
    details = (await registry.get(f"/v1/models/{name}/versions/1")).json()
    keys = bucket_keys(settings, bucket)
    store = stack.artifact_store()
    for uri, sha256 in (
        (dataset["snapshot_uri"], dataset["sha256"]),
        (details["artifact"]["uri"], details["artifact"]["sha256"]),
        (details["profile"]["uri"], details["profile"]["sha256"]),
    ):
        assert f"{PREFIX}/{uri.removeprefix('artifact:')}" in keys
        store.get(uri, sha256)  # the digest recorded in the event and the database matches the object
    assert "production" in details["aliases"]
    assert {key.split("/")[2] for key in keys} >= {"datasets", "models", "profiles"}
    assert all(key.startswith(PREFIX + "/") for key in keys)
    assert not stack.artifacts.exists()  # no service fell back to a local folder
