"""Ingest's HTTP contract (status codes and bodies), served in-process over fakes of its ports."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mloop_common.artifacts import ArtifactStore
from mloop_common.testing import ADMIN_HEADERS
from mloop_ingest.app import create_app
from mloop_ingest.bootstrap import IngestService
from mloop_ingest.config import IngestSettings
from mloop_ingest.handlers import DatasetPublisher
from mloop_ingest.sources import Sources

from .fakes import memory_store
from .test_handlers import churn, csv

VERSION_FIELDS = {
    "parent_version",
    "publisher",
    "source_uri",
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
def spool(tmp_path: Path) -> Path:
    """Where the service spools uploads and snapshots: empty again after every request."""
    folder = tmp_path / "spool"
    folder.mkdir()
    return folder


@pytest.fixture
async def ingest(tmp_path: Path, spool: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = IngestSettings(max_upload_bytes=100_000, max_event_bytes=20_000, spool_dir=spool)
    app = create_app(settings)
    store = memory_store()
    publisher = DatasetPublisher(
        store=store, artifacts=ArtifactStore(tmp_path), max_event_bytes=settings.max_event_bytes, workdir=spool
    )
    # In place of the lifespan's bootstrap (ASGITransport runs no lifespan): the same components over fakes.
    exports = tmp_path / "exports"
    exports.mkdir()
    app.state.service = IngestService(
        store=store,
        publisher=publisher,
        max_upload_bytes=settings.max_upload_bytes,
        spool_dir=spool,
        sources=Sources.of([f"file://{exports}/"]),
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS
    ) as client:
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
    assert body["report"]["accepted"] is True
    assert {"name", "severity", "message", "observed", "threshold", "columns", "examples"} == set(
        body["report"]["checks"][0]
    )


async def test_a_rejected_version_is_422_with_the_error_beside_the_recorded_version(ingest):
    constant = churn().assign(churned="yes")
    response = await publish(ingest, csv(constant))

    assert response.status_code == 422
    body = response.json()
    assert set(body) == VERSION_FIELDS | {"error"}
    assert body["error"] == {
        "code": "dataset_rejected",
        "message": "target 'churned' has a single value: nothing to learn",
        "field": "file",
    }
    assert body["status"] == "rejected" and body["report"]["accepted"] is False and body["sha256"] is None
    assert (await publish(ingest, csv(constant))).status_code == 422


async def test_a_target_not_in_the_file_is_422_naming_the_target_field_and_records_nothing(ingest):
    response = await publish(ingest, csv(churn()), target="nope")

    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_input",
        "message": "target column 'nope' is not in the file",
        "field": "target",
    }
    assert (await ingest.get("/v1/datasets")).json() == {"datasets": []}


async def test_a_file_over_the_column_limit_is_422_naming_the_file_and_records_nothing(ingest):
    header = ",".join(f"c{i}" for i in range(10_000)) + ",churned\n"
    response = await publish(ingest, (header + "1," * 10_000 + "yes\n").encode())

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["field"] == "file" and "10001 columns, over the limit of 10000" in error["message"]
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
    await publish(ingest, csv(churn(seed=2).drop(columns="plan")))

    datasets = (await ingest.get("/v1/datasets")).json()
    versions = (await ingest.get("/v1/datasets/churn/versions")).json()["versions"]
    detail = (await ingest.get("/v1/datasets/churn/versions/1")).json()
    rejected = (await ingest.get("/v1/datasets/churn/versions/2")).json()

    assert datasets == {"datasets": [{"name": "churn", "versions": 2, "latest_published": 1}]}
    assert [(v["version"], v["status"]) for v in versions] == [(1, "published"), (2, "rejected")]
    assert all(set(v) == VERSION_FIELDS for v in versions)
    assert set(detail) == VERSION_FIELDS | {"schema", "profile", "contract", "labels"}
    assert detail["schema"] == {"usage": "numeric", "plan": "string", "churned": "string"}
    assert set(detail["profile"]["usage"]) == {
        "missing",
        "distinct",
        "mean",
        "std",
        "min",
        "max",
        "q1",
        "median",
        "q3",
        "outliers",
    }
    assert set(detail["profile"]["plan"]) == {"missing", "distinct", "top"}
    assert sum(detail["labels"].values()) == 40 and set(detail["labels"]) == {"yes", "no"}
    assert rejected["schema"] == {} and rejected["profile"] == {} and rejected["contract"] is None


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


BOUNDARY = "mloop-test-boundary"


def multipart_head(filename: str = "big.csv", **fields: str) -> bytes:
    parts = [f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n' for k, v in fields.items()]
    parts.append(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: text/csv\r\n\r\n"
    )
    return "".join(parts).encode()


class Stream:
    """A request body made on the fly: ``total`` bytes of one CSV row repeated, counting what was pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total, self.sent = total, 0
        self.chunk = b"1.0,basic,yes\n" * (chunk // 14)  # whole rows: the file stays valid CSV

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = multipart_head(target="churned") + b"usage,plan,churned\n"
        self.sent += len(head)
        yield head
        while self.sent < self.total:
            self.sent += len(self.chunk)
            yield self.chunk  # the same object every time: the test itself allocates nothing per chunk
        yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def test_a_chunked_upload_over_the_limit_is_refused_while_streaming_without_being_buffered(ingest, spool):
    body = Stream(total=5_000_000)  # 50 times the 100,000-byte limit; no Content-Length: chunked
    tracemalloc.start()
    try:
        response = await ingest.post(
            "/v1/datasets/churn/versions",
            content=body,
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert response.status_code == 413 and response.json()["error"]["field"] == "file"
    assert "100000-byte limit" in response.json()["error"]["message"]
    assert body.sent < 100_000 + 3 * len(body.chunk)  # the server stopped reading at the limit
    assert peak < 2_000_000  # nothing close to the 5 MB body was held in memory
    assert list(spool.iterdir()) == []  # the partial file is gone
    assert (await ingest.get("/v1/datasets")).json() == {"datasets": []}


async def test_a_body_larger_than_its_content_length_claims_is_still_refused_at_the_limit(ingest, spool):
    body = Stream(total=1_000_000)

    response = await ingest.post(
        "/v1/datasets/churn/versions",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": "500"},
    )

    assert response.status_code == 413 and body.sent < 300_000
    assert list(spool.iterdir()) == []


async def test_a_content_length_over_the_limit_is_refused_before_reading(ingest):
    body = Stream(total=1_000_000)

    response = await ingest.post(
        "/v1/datasets/churn/versions",
        content=body,
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}", "content-length": str(5 * 1024**2)},
    )

    assert response.status_code == 413 and body.sent == 0


async def test_a_chunked_upload_within_the_limit_is_published_and_the_spool_emptied(ingest, spool):
    data = multipart_head(target="churned") + csv(churn()) + f"\r\n--{BOUNDARY}--\r\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(data), 100):  # boundaries and rows split across chunks
            yield data[start : start + 100]

    response = await ingest.post(
        "/v1/datasets/churn/versions",
        content=chunks(),
        # A self-asserted name is ignored: the publisher is whoever the key belongs to.
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}", "x-mloop-actor": "mallory"},
    )

    assert response.status_code == 201, response.text
    body = response.json()
    assert body["rows"] == 40 and body["upload_sha256"] == hashlib.sha256(csv(churn())).hexdigest()
    assert body["publisher"] == "admin" and body["parent_version"] is None and body["source_uri"] is None
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize(
    ("form", "files", "field", "message"),
    [
        ({}, {"file": ("a.csv", b"a,b\n1,2\n")}, "target", "target"),
        ({"target": "churned", "colour": "red"}, {"file": ("a.csv", b"a,b\n1,2\n")}, "colour", "unknown form field"),
        ({"target": "churned"}, {"upload": ("a.csv", b"a,b\n1,2\n")}, "upload", "send the file as 'file'"),
        ({"target": "churned", "contract": "{not json"}, {"file": ("a.csv", b"a,b\n1,2\n")}, "contract", "contract"),
        ({"target": "churned", "description": "a\x00b"}, {"file": ("a.csv", b"a,b\n1,2\n")}, "description", "NUL"),
    ],
)
async def test_a_malformed_form_is_422_naming_the_field(ingest, spool, form, files, field, message):
    response = await ingest.post("/v1/datasets/churn/versions", data=form, files=files)

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field and message in error["message"]
    assert list(spool.iterdir()) == []


async def test_a_form_without_a_file_is_422_naming_the_file_field(ingest):
    body = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="target"\r\n\r\nchurned\r\n--{BOUNDARY}--\r\n'

    response = await ingest.post(
        "/v1/datasets/churn/versions",
        content=body.encode(),
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )

    assert response.status_code == 422 and response.json()["error"]["field"] == "file"


async def test_a_body_that_is_not_multipart_is_422(ingest):
    response = await ingest.post("/v1/datasets/churn/versions", content=b"usage,churned\n1,yes\n")

    assert response.status_code == 422 and "multipart/form-data" in response.json()["error"]["message"]


async def test_the_schema_contract_is_served_with_the_version_and_declarations_carry_over(ingest):
    declared = '{"id_column": "id", "columns": {"usage": {"min": 0, "max": 100, "nullable": false}}}'
    first = await publish(ingest, csv(churn().assign(id=range(40))), contract=declared)
    second = await publish(ingest, csv(churn(seed=5).assign(id=range(40))))
    assert (first.status_code, second.status_code) == (201, 201)

    contract = (await ingest.get("/v1/datasets/churn/versions/2")).json()["contract"]

    assert contract["contract_version"] == 1 and contract["target"] == "churned" and contract["id_column"] == "id"
    assert len(contract["digest"]) == 64
    usage = next(c for c in contract["columns"] if c["name"] == "usage")
    assert usage["type"] == "numeric" and usage["physical_type"] == "double" and usage["nullable"] is False
    assert usage["declared"] == {"min": 0.0, "max": 100.0, "nullable": False}
    assert usage["observed_range"]["min"] > 0 and usage["missing_rate"] == 0
    plan = next(c for c in contract["columns"] if c["name"] == "plan")
    assert plan["categories"] == ["basic", "pro"] and plan["observed_range"] is None
    assert (await ingest.get("/v1/datasets/churn/versions/2")).json()["parent_version"] == 1


async def test_values_outside_a_declared_range_reject_the_version(ingest):
    response = await publish(ingest, csv(churn()), contract='{"columns": {"usage": {"max": 5}}}')

    assert response.status_code == 422 and response.json()["error"]["code"] == "dataset_rejected"
    assert "outside its declared range" in response.json()["error"]["message"]


async def test_a_declaration_naming_an_unknown_column_is_422_naming_the_contract_field(ingest):
    response = await publish(ingest, csv(churn()), contract='{"columns": {"nope": {"max": 5}}}')

    assert response.status_code == 422 and response.json()["error"]["field"] == "contract"
    assert (await ingest.get("/v1/datasets")).json() == {"datasets": []}


async def test_a_file_under_a_source_root_is_registered_by_uri_and_records_where_it_came_from(ingest, tmp_path, spool):
    (tmp_path / "exports" / "churn.csv").write_bytes(csv(churn()))
    uri = f"file://{tmp_path}/exports/churn.csv"

    registered = await ingest.post(
        "/v1/datasets/churn/versions", json={"uri": uri, "target": "churned", "contract": {"columns": {}}}
    )
    uploaded = await publish(ingest, csv(churn()))  # the same bytes by upload: the same version

    assert registered.status_code == 201, registered.text
    assert registered.json()["source_uri"] == uri and registered.json()["rows"] == 40
    assert uploaded.status_code == 200 and uploaded.json()["version"] == 1
    assert list(spool.iterdir()) == []


async def test_registering_a_uri_outside_the_roots_is_422_naming_the_uri_and_records_nothing(ingest, spool):
    response = await ingest.post("/v1/datasets/churn/versions", json={"uri": "file:///etc/passwd", "target": "x"})

    assert response.status_code == 422 and response.json()["error"]["field"] == "uri"
    assert (await ingest.get("/v1/datasets")).json() == {"datasets": []}


async def test_a_registration_body_missing_its_target_is_422_naming_it(ingest):
    response = await ingest.post("/v1/datasets/churn/versions", json={"uri": "file:///x.csv"})

    assert response.status_code == 422 and response.json()["error"]["field"] == "target"


def labelled(yes: int, no: int, seed: int = 0) -> bytes:
    frame = churn(rows=yes + no, seed=seed)
    frame["churned"] = ["yes"] * yes + ["no"] * no
    return csv(frame.sample(frac=1, random_state=seed))


async def test_a_dataset_policy_is_stored_served_and_judges_its_later_versions(ingest):
    assert (await publish(ingest, labelled(20, 20))).status_code == 201
    default = (await ingest.get("/v1/datasets/churn/policy")).json()
    assert default["overrides"] == {} and default["effective"]["label_shift"] == {"warning": 0.1, "error": 0.25}

    put = await ingest.put(
        "/v1/datasets/churn/policy", json={"label_shift": {"warning": 0.05, "error": 0.15}, "holdout": 0.25}
    )
    served = (await ingest.get("/v1/datasets/churn/policy")).json()
    shifted = await publish(ingest, labelled(28, 12, seed=1))  # 50/50 -> 70/30: distance 0.2

    assert put.status_code == 200 and served == put.json()
    assert served["overrides"] == {"label_shift": {"warning": 0.05, "error": 0.15}, "holdout": 0.25}
    assert served["effective"]["label_shift"] == {"warning": 0.05, "error": 0.15}
    assert served["effective"]["missing_rate"] == default["effective"]["missing_rate"]  # not overridden
    assert shifted.status_code == 422 and "label shares" in shifted.json()["error"]["message"]
    [balance] = [c for c in shifted.json()["report"]["checks"] if c["name"] == "label_balance"]
    assert (balance["severity"], balance["threshold"]) == ("error", 0.15)


async def test_the_default_policy_publishes_the_same_shift_with_a_warning(ingest):
    await publish(ingest, labelled(20, 20))

    shifted = await publish(ingest, labelled(28, 12, seed=1))

    assert shifted.status_code == 201
    [balance] = [c for c in shifted.json()["report"]["checks"] if c["name"] == "label_balance"]
    assert balance["severity"] == "warning"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label_shift": {"warning": 0.3, "error": 0.2}}, "label_shift"),
        ({"label_shift": {"warning": -1}}, "label_shift.warning"),
        ({"label_shift": {"warnings": 0.1}}, "label_shift.warnings"),
        ({"holdout": 2}, "holdout"),
        ({"constant_columns": "fatal"}, "constant_columns"),
        ({"no_such_threshold": 1}, "no_such_threshold"),
    ],
)
async def test_an_invalid_policy_is_422_naming_the_field_and_changes_nothing(ingest, body, field):
    response = await ingest.put("/v1/datasets/churn/policy", json=body)

    assert response.status_code == 422 and response.json()["error"]["field"] == field
    assert (await ingest.get("/v1/datasets/churn/policy")).json()["overrides"] == {}


async def test_a_policy_body_that_is_not_an_object_is_422(ingest):
    response = await ingest.put("/v1/datasets/churn/policy", json=[1, 2])

    assert response.status_code == 422


async def test_the_contract_is_served_latest_and_per_version_and_a_rejected_version_has_none(ingest):
    await publish(ingest, csv(churn(seed=1)))
    await publish(ingest, csv(churn(seed=2)))
    await publish(ingest, csv(churn(seed=3).drop(columns="plan")))  # rejected: a column removed

    latest = await ingest.get("/v1/datasets/churn/contract")
    first = await ingest.get("/v1/datasets/churn/versions/1/contract")
    detail = (await ingest.get("/v1/datasets/churn/versions/2")).json()
    rejected = await ingest.get("/v1/datasets/churn/versions/3/contract")

    assert latest.status_code == first.status_code == 200
    assert latest.json() == detail["contract"] and latest.json()["digest"] == first.json()["digest"]
    assert [c["name"] for c in first.json()["columns"]] == ["usage", "plan", "churned"]
    assert rejected.status_code == 404 and "rejected" in rejected.json()["error"]["message"]
    assert (await ingest.get("/v1/datasets/other/contract")).status_code == 404


async def test_the_diff_between_versions_names_added_columns_new_categories_and_moved_ranges(ingest):
    await publish(ingest, csv(churn(seed=1)))
    grown = churn(seed=2).assign(region="north")
    grown.loc[0, "plan"], grown.loc[1, "usage"] = "team", 1_000.0
    assert (await publish(ingest, csv(grown))).status_code == 201

    response = await ingest.get("/v1/datasets/churn/diff", params={"from": 1, "to": 2})
    same = (await ingest.get("/v1/datasets/churn/diff", params={"from": 2, "to": 2})).json()

    diff = response.json()
    assert response.status_code == 200 and diff["same_schema"] is False
    assert diff["added"] == ["region"] and diff["removed"] == [] and diff["retyped"] == []
    assert diff["categories"] == [{"name": "plan", "added": ["team"], "removed": []}]
    [usage] = [r for r in diff["ranges"] if r["name"] == "usage"]
    assert usage["after"]["max"] == 1_000.0
    assert same["same_schema"] is True and same["added"] == same["ranges"] == same["categories"] == []


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        (f"/v1/datasets/churn/versions/{2**31}", {}, "version"),
        (f"/v1/datasets/churn/versions/{-(2**40)}/contract", {}, "version"),
        ("/v1/datasets/churn/diff", {"from": 1, "to": 2**31}, "to"),
    ],
)
async def test_a_version_number_beyond_the_database_range_is_422_naming_it(ingest, path, params, field):
    response = await ingest.get(path, params=params)

    assert (response.status_code, response.json()["error"]["field"]) == (422, field)


async def test_a_diff_needs_both_versions_as_positive_numbers(ingest):
    await publish(ingest, csv(churn()))

    missing = await ingest.get("/v1/datasets/churn/diff", params={"from": 1})
    zero = await ingest.get("/v1/datasets/churn/diff", params={"from": 0, "to": 1})
    unknown = await ingest.get("/v1/datasets/churn/diff", params={"from": 1, "to": 9})

    assert (missing.status_code, missing.json()["error"]["field"]) == (422, "to")
    assert (zero.status_code, zero.json()["error"]["field"]) == (422, "from")
    assert unknown.status_code == 404
