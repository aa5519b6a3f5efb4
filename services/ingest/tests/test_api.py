"""Ingest's HTTP contract (status codes and bodies), served in-process over fakes of its ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mloop_common.artifacts import ArtifactStore
from mloop_ingest.app import create_app
from mloop_ingest.bootstrap import IngestService
from mloop_ingest.config import IngestSettings
from mloop_ingest.handlers import DatasetPublisher

from .fakes import memory_store
from .test_handlers import churn, csv, wide

VERSION_FIELDS = {
    "dataset",
    "version",
    "status",
    "upload_sha256",
    "snapshot_uri",
    "snapshot_sha256",
    "sha256",
    "rows",
    "columns",
    "report",
    "target",
    "time_column",
    "description",
    "created_at",
}


@pytest.fixture
async def ingest(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngestSettings(max_upload_bytes=100_000, max_event_bytes=20_000)
    app = create_app(settings)
    store = memory_store()
    publisher = DatasetPublisher(
        store=store, artifacts=ArtifactStore(tmp_path), max_event_bytes=settings.max_event_bytes
    )
    # In place of the lifespan's bootstrap (ASGITransport runs no lifespan): the same components over fakes.
    app.state.service = IngestService(store=store, publisher=publisher, max_upload_bytes=settings.max_upload_bytes)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest") as client:
        yield client


async def publish(client: httpx.AsyncClient, data: bytes, target: str = "churned", **form: str) -> httpx.Response:
    return await client.post(
        "/v1/datasets/churn/versions",
        data={"target": target, **form},
        files={"file": ("churn.csv", data, "text/csv")},
    )


async def test_a_new_version_is_201_and_the_same_bytes_again_200_with_the_same_body(ingest):
    created = await publish(ingest, csv(churn()), time_column="", description="first")
    again = await publish(ingest, csv(churn()))

    assert created.status_code == 201 and again.status_code == 200
    body = created.json()
    assert set(body) == VERSION_FIELDS and again.json() == body
    assert body["dataset"] == "churn" and body["version"] == 1 and body["status"] == "published"
    assert body["sha256"] == body["snapshot_sha256"] and body["snapshot_uri"].startswith("artifact:datasets/")
    assert body["time_column"] is None and body["description"] == "first"
    assert body["report"]["accepted"] is True and {"name", "status", "message"} == set(body["report"]["checks"][0])


async def test_a_rejected_version_is_422_with_the_error_beside_the_recorded_version(ingest):
    response = await publish(ingest, csv(churn()), target="nope")

    assert response.status_code == 422
    body = response.json()
    assert set(body) == VERSION_FIELDS | {"error"}
    assert body["error"] == {
        "code": "dataset_rejected",
        "message": "target column 'nope' is not in the file",
        "field": "file",
    }
    assert body["status"] == "rejected" and body["report"]["accepted"] is False and body["sha256"] is None
    assert (await publish(ingest, csv(churn()), target="nope")).status_code == 422


async def test_a_file_too_wide_to_announce_is_413_naming_the_file_and_records_nothing(ingest):
    response = await publish(ingest, wide(1_000))

    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and error["field"] == "file" and "columns" in error["message"]
    assert (await ingest.get("/v1/datasets")).json() == {"datasets": []}


async def test_a_file_over_the_upload_limit_is_413(ingest):
    response = await publish(ingest, b"x" * 100_001)

    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


async def test_a_bad_dataset_name_is_422_naming_it(ingest):
    response = await ingest.post(
        "/v1/datasets/Not%20Valid/versions", data={"target": "churned"}, files={"file": ("a.csv", b"a\n1\n")}
    )

    assert response.status_code == 422 and response.json()["error"]["field"] == "name"


async def test_reading_back_lists_datasets_and_versions_and_details_one(ingest):
    await publish(ingest, csv(churn(seed=1)))
    await publish(ingest, csv(churn(seed=2).drop(columns="churned")))

    datasets = (await ingest.get("/v1/datasets")).json()
    versions = (await ingest.get("/v1/datasets/churn/versions")).json()["versions"]
    detail = (await ingest.get("/v1/datasets/churn/versions/1")).json()
    rejected = (await ingest.get("/v1/datasets/churn/versions/2")).json()

    assert datasets == {"datasets": [{"name": "churn", "versions": 2, "latest_published": 1}]}
    assert [(v["version"], v["status"]) for v in versions] == [(1, "published"), (2, "rejected")]
    assert all(set(v) == VERSION_FIELDS for v in versions)
    assert set(detail) == VERSION_FIELDS | {"schema", "profile"}
    assert detail["schema"] == {"usage": "numeric", "plan": "string", "churned": "string"}
    assert set(detail["profile"]["usage"]) == {"missing", "distinct", "mean", "std", "min", "max"}
    assert set(detail["profile"]["plan"]) == {"missing", "distinct", "top"}
    assert rejected["schema"] == {} and rejected["profile"] == {}


async def test_unknown_datasets_and_versions_are_404(ingest):
    await publish(ingest, csv(churn()))

    assert (await ingest.get("/v1/datasets/other/versions")).status_code == 404
    assert (await ingest.get("/v1/datasets/churn/versions/7")).status_code == 404


async def test_every_route_documents_its_response_model(ingest):
    paths = (await ingest.get("/openapi.json")).json()["paths"]

    publish_responses = paths["/v1/datasets/{name}/versions"]["post"]["responses"]
    assert {"200", "201", "422"} <= set(publish_responses)
    detail = paths["/v1/datasets/{name}/versions/{version}"]["get"]["responses"]["200"]
    assert detail["content"]["application/json"]["schema"]["$ref"].endswith("/DatasetVersionDetail")
