"""The artifacts ingest tells retention to keep: exactly those its published versions' announcements point to."""

from __future__ import annotations

from pathlib import Path

import pytest

from mloop_common.artifacts import ArtifactStore
from mloop_common.events import DataPublished
from mloop_ingest.handlers import DatasetPublisher

from .fakes import memory_store
from .test_handlers import churn, csv, upload


@pytest.fixture(autouse=True)
def spool(tmp_path: Path) -> None:
    from . import test_handlers

    test_handlers.SPOOL[:] = [tmp_path]


async def test_every_published_versions_snapshot_and_contract_are_referenced_and_nothing_else(
    tmp_path: Path,
) -> None:
    artifacts = ArtifactStore(tmp_path / "artifacts")
    store = memory_store()
    publisher = DatasetPublisher(store=store, artifacts=artifacts, max_event_bytes=900_000)
    await publisher.publish_version(upload(csv(churn(seed=1))))
    await publisher.publish_version(upload(csv(churn(seed=2)), dataset="other"))
    constant = churn(seed=3)
    constant["churned"] = "yes"
    rejected = await publisher.publish_version(upload(csv(constant)))
    assert rejected.version.status == "rejected"

    async with store.transaction() as unit:
        references = await unit.artifact_references()

    announced = store.published_payloads(DataPublished)
    expected = {p.snapshot.uri for p in announced} | {p.contract.uri for p in announced if p.contract}
    assert references.service == "ingest" and set(references.uris) == expected and len(expected) == 4
    assert {artifact.uri for artifact in artifacts.stored()} == expected  # nothing stored is left unnamed
