"""Artifact retention: the rule (pure) and the sweep over a real folder store with stand-in services."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from mloop_common.artifact_refs import ArtifactReferences
from mloop_common.artifacts import ArtifactStore, StoredArtifact, sha256_hex
from mloop_common.http import service_app
from mloop_common.testing import ADMIN_HEADERS
from mloop_registry import access, api
from mloop_registry.artifact_gc import ArtifactSweeper, SweepRefused, decide
from mloop_registry.bootstrap import RegistryService
from mloop_registry.config import RegistrySettings
from mloop_registry.handlers import ModelRegistry
from mloop_registry.keys import KeyRing

from .fakes import memory_store
from .test_api import declare
from .test_handlers import registration

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)
GRACE = timedelta(hours=24)


def stored(name: str, *, hours_old: float, kind: str = "models", size: int = 10) -> StoredArtifact:
    digest = sha256_hex(name.encode())
    return StoredArtifact(
        uri=f"artifact:{kind}/{digest[:2]}/{digest}.bin", size=size, modified=NOW - timedelta(hours=hours_old)
    )


def test_only_unreferenced_artifacts_past_the_grace_period_are_deleted() -> None:
    model = stored("model", hours_old=24 * 90)
    snapshot = stored("snapshot", hours_old=24 * 90, kind="datasets")
    fresh_orphan = stored("written a minute ago", hours_old=1 / 60)
    just_young = stored("almost a day", hours_old=23.9)
    old_orphan = stored("rejected candidate", hours_old=25)
    at_the_grace = stored("exactly a day", hours_old=24)
    references = [
        ArtifactReferences(service="registry", uris=[model.uri], sha256=[snapshot.sha256]),
        ArtifactReferences(service="ingest", uris=[]),
    ]

    verdict = decide(
        [model, snapshot, fresh_orphan, just_young, old_orphan, at_the_grace], references, now=NOW, grace=GRACE
    )

    assert verdict.delete == [old_orphan, at_the_grace]
    assert verdict.referenced == [model, snapshot]  # the snapshot by its digest alone (a lineage)
    assert verdict.young == [fresh_orphan, just_young]


def test_content_named_by_digest_is_kept_under_every_name_it_is_stored_under() -> None:
    digest = sha256_hex(b"rows")
    as_recent = StoredArtifact(uri=f"artifact:recent/{digest[:2]}/{digest}.parquet", size=4, modified=NOW - GRACE * 9)
    as_dataset = StoredArtifact(uri=f"artifact:datasets/{digest[:2]}/{digest}.parquet", size=4, modified=NOW - GRACE)

    verdict = decide(
        [as_recent, as_dataset], [ArtifactReferences(service="registry", sha256=[digest])], now=NOW, grace=GRACE
    )

    assert verdict.delete == [] and verdict.referenced == [as_recent, as_dataset]


def test_nothing_is_referenced_by_nobody() -> None:
    orphan = stored("orphan", hours_old=48)

    assert decide([orphan], [], now=NOW, grace=GRACE).delete == [orphan]


# --- the sweep over a folder ------------------------------------------------------------------------------------


def aged(store: ArtifactStore, data: bytes, *, days: float, kind: str = "models") -> str:
    """Store ``data`` as if written ``days`` ago; its URI."""
    ref = store.put(data, kind=kind)
    then = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(store.path_of(ref.uri), (then, then))
    return ref.uri


def answering(service: str, uris: list[str]):  # type: ignore[no-untyped-def]
    async def source() -> ArtifactReferences:
        return ArtifactReferences(service=service, uris=uris)

    return source


async def unreachable() -> ArtifactReferences:
    raise ConnectionError("connection refused")


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def sweeper(store: ArtifactStore, **sources) -> ArtifactSweeper:  # type: ignore[no-untyped-def]
    return ArtifactSweeper(artifacts=store, sources=sources, grace=GRACE, clock=lambda: datetime.now(UTC))


async def test_a_sweep_deletes_old_orphans_keeps_what_is_named_or_young_and_reports_the_bytes(
    store: ArtifactStore,
) -> None:
    model = aged(store, b"the production model", days=30)
    snapshot = aged(store, b"a dataset snapshot", days=30, kind="datasets")
    orphan = aged(store, b"a rejected candidate", days=3)
    young = store.put(b"written just now", kind="models").uri
    sweep = sweeper(store, registry=answering("registry", [model]), ingest=answering("ingest", [snapshot]))

    report = await sweep.sweep()

    assert [a.uri for a in report.deleted] == [orphan]
    assert report.freed_bytes == len(b"a rejected candidate")
    assert (report.stored, report.referenced, report.young) == (4, 2, 1)
    assert report.references == {"registry": 1, "ingest": 1}
    assert {a.uri for a in store.stored()} == {model, snapshot, young}


async def test_a_dry_run_reports_the_same_and_deletes_nothing(store: ArtifactStore) -> None:
    orphan = aged(store, b"an orphan", days=3)

    report = await sweeper(store, registry=answering("registry", [])).sweep(dry_run=True)

    assert report.dry_run and [a.uri for a in report.deleted] == [orphan] and report.freed_bytes == len(b"an orphan")
    assert [a.uri for a in store.stored()] == [orphan]


async def test_when_one_service_cannot_be_asked_nothing_is_deleted_and_the_error_names_it(
    store: ArtifactStore,
) -> None:
    orphan = aged(store, b"an orphan", days=3)
    sweep = sweeper(store, registry=answering("registry", []), trainer=unreachable)

    with pytest.raises(SweepRefused) as refused:
        await sweep.sweep()

    assert "deleted nothing" in refused.value.message and "trainer (connection refused)" in refused.value.message
    assert refused.value.status_code == 503
    assert [a.uri for a in store.stored()] == [orphan]


async def test_an_orphan_stored_again_while_the_services_are_asked_is_kept(store: ArtifactStore) -> None:
    """The same bytes arrive again (a new dataset version equal to an old orphan) after the store was listed: the
    put restarts the artifact's age, and the row about to name it finds it there."""
    orphan = aged(store, b"the same rows", days=3, kind="datasets")

    async def ingest_while_publishing() -> ArtifactReferences:
        store.put(b"the same rows", kind="datasets")  # its row commits after this answer was made
        return ArtifactReferences(service="ingest")

    report = await sweeper(store, ingest=ingest_while_publishing).sweep()

    assert report.deleted == [] and report.young == 1
    assert [a.uri for a in store.stored()] == [orphan]


def test_the_grace_period_must_be_positive(store: ArtifactStore) -> None:
    with pytest.raises(ValueError, match="grace"):
        ArtifactSweeper(artifacts=store, sources={}, grace=timedelta(0), clock=lambda: NOW)


# --- the routes -------------------------------------------------------------------------------------------------


@pytest.fixture
async def client(store: ArtifactStore) -> AsyncIterator[httpx.AsyncClient]:
    """The registry's app over the fake store, its artifact retention over ``store`` with itself as only source."""

    @asynccontextmanager
    async def fake_bootstrap(settings: RegistrySettings, app: FastAPI) -> AsyncIterator[RegistryService]:
        units = memory_store()
        keys = KeyRing(units)
        app.state.access.authenticator.resolver = keys

        async def own() -> ArtifactReferences:
            async with units.transaction() as unit:
                return await unit.artifact_references()

        yield RegistryService(
            registry=ModelRegistry(store=units),
            keys=keys,
            max_spec_bytes=settings.max_spec_bytes,
            sweeper=ArtifactSweeper(
                artifacts=store, sources={"registry": own}, grace=GRACE, clock=lambda: datetime.now(UTC)
            ),
        )

    app = service_app(
        RegistrySettings(), bootstrap=fake_bootstrap, router=api.router, rules=access.RULES, description="tests"
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS
        ) as http,
    ):
        yield http


def plant(store: ArtifactStore, uri: str, *, days: float) -> None:
    """A file at ``uri``, written ``days`` ago."""
    path = store.path_of(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"bytes of " + uri.encode())
    then = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (then, then))


async def test_the_routes_name_the_versions_artifacts_and_collect_only_the_orphan(
    client: httpx.AsyncClient, store: ArtifactStore
) -> None:
    assert (await declare(client)).status_code == 201
    version = registration()
    assert (await client.post("/v1/models/churn/versions", json=version.model_dump(mode="json"))).status_code == 201
    plant(store, version.artifact.uri, days=30)
    plant(store, version.profile.uri, days=30)
    orphan = aged(store, b"a rejected candidate", days=2)

    references = (await client.get("/v1/artifacts/references")).json()
    dry = await client.post("/v1/artifacts/gc", params={"dry_run": "true"})
    kept_by_dry_run = {a.uri for a in store.stored()}
    swept = await client.post("/v1/artifacts/gc")

    assert references == {
        "service": "registry",
        "uris": sorted([version.artifact.uri, version.profile.uri]),
        "sha256": [version.lineage.dataset_sha256],
    }
    assert dry.status_code == 200 and [a["uri"] for a in dry.json()["deleted"]] == [orphan]
    assert dry.json()["dry_run"] is True and kept_by_dry_run == {version.artifact.uri, version.profile.uri, orphan}
    assert swept.status_code == 200, swept.text
    body = swept.json()
    assert [a["uri"] for a in body["deleted"]] == [orphan] and body["freed_bytes"] == len(b"a rejected candidate")
    assert (body["stored"], body["referenced"], body["young"]) == (3, 2, 0)
    assert {a.uri for a in store.stored()} == {version.artifact.uri, version.profile.uri}
