"""The registry's HTTP routes in-process, over the fake store: status codes and the JSON shapes clients rely on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from fastapi import FastAPI

from mloop_common.contracts import PRODUCTION
from mloop_common.http import service_app
from mloop_common.testing import ADMIN_HEADERS
from mloop_registry import access, api
from mloop_registry.app import create_app
from mloop_registry.bootstrap import RegistryService
from mloop_registry.config import RegistrySettings
from mloop_registry.handlers import ModelRegistry
from mloop_registry.keys import KeyRing

from .fakes import memory_store
from .test_handlers import registration

SPEC_YAML = b"""
name: churn
dataset: churn
task: classification
target: churned
estimators: [{class: LogisticRegression, params: {C: [1.0]}}]
metric: accuracy
"""
VERSION_FIELDS = {
    "model",
    "version",
    "run_id",
    "evaluation_id",
    "spec_version",
    "status",
    "task",
    "features",
    "metrics",
    "created_at",
    "artifact",
    "profile",
    "aliases",
    "description",
    "tags",
}
SPEC_FIELDS = {"name", "spec_version", "digest", "spec", "created_at"}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    settings = RegistrySettings(max_spec_bytes=4096)  # default limits: 200 grid points, n_jobs <= 2

    @asynccontextmanager
    async def fake_bootstrap(settings: RegistrySettings, app: FastAPI) -> AsyncIterator[RegistryService]:
        store = memory_store()
        keys = KeyRing(store)
        app.state.access.authenticator.resolver = keys
        yield RegistryService(registry=ModelRegistry(store=store), keys=keys, max_spec_bytes=settings.max_spec_bytes)

    app = service_app(settings, bootstrap=fake_bootstrap, router=api.router, rules=access.RULES, description="tests")
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://localhost", headers=ADMIN_HEADERS
        ) as http,
    ):
        yield http


async def declare(client: httpx.AsyncClient, body: bytes = SPEC_YAML) -> httpx.Response:
    return await client.post("/v1/models", content=body, headers={"content-type": "application/yaml"})


async def register(client: httpx.AsyncClient, run_id: str | None = None) -> httpx.Response:
    body = registration(run_id).model_dump(mode="json")
    return await client.post("/v1/models/churn/versions", json=body)


async def test_a_new_spec_is_created_and_the_same_spec_again_is_answered_with_200(client):
    created = await declare(client)
    again = await declare(client)

    assert (created.status_code, again.status_code) == (201, 200)
    assert set(created.json()) == SPEC_FIELDS and created.json()["spec_version"] == 1
    assert created.json()["spec"]["estimators"][0]["class"] == "LogisticRegression"
    assert again.json() == created.json()


async def test_an_invalid_spec_names_the_offending_field(client):
    response = await declare(client, SPEC_YAML.replace(b"LogisticRegression", b"EvilRegression"))

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "estimators.0.class"


@pytest.mark.parametrize(
    "estimators, search, field",
    [
        (
            "[{class: RandomForestClassifier, params: {n_estimators: [1000000000]}}]",
            "{}",
            "estimators.0.params.n_estimators",
        ),
        ("[{class: RandomForestClassifier, params: {n_jobs: [64]}}]", "{}", "estimators.0.params.n_jobs"),
        ("[{class: RandomForestClassifier, params: {n_jobs: [-1]}}]", "{}", "estimators.0.params.n_jobs"),
        ("[{class: LogisticRegression, params: {C: [1.0]}}]", "{strategy: random, n_iter: 100000}", "search.n_iter"),
        (
            "[{class: LogisticRegression, params: {C: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], tol: [1, 2, 3, 4, 5, 6, 7, "
            "8, 9, 10], max_iter: [1, 2, 3]}}]",
            "{}",
            "estimators",
        ),
    ],
)
async def test_a_spec_asking_for_unbounded_work_is_refused_naming_the_field(client, estimators, search, field):
    body = SPEC_YAML.replace(b"estimators: [{class: LogisticRegression, params: {C: [1.0]}}]", b"")
    body += f"estimators: {estimators}\nsearch: {search}\n".encode()

    response = await declare(client, body)

    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field
    assert (await client.get("/v1/models/churn")).status_code == 404  # nothing was stored


async def test_a_spec_that_is_not_yaml_or_json_is_refused(client):
    response = await client.post("/v1/models", content=b"name=churn", headers={"content-type": "text/plain"})

    assert response.status_code == 422 and response.json()["error"]["field"] == "body"


async def test_a_spec_over_the_size_limit_is_refused(client):
    response = await declare(client, SPEC_YAML + b"#" * 5000)

    assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"


async def test_registering_answers_201_then_200_with_the_same_version(client):
    await declare(client)
    first = await register(client, "run-1")
    again = await register(client, "run-1")

    assert (first.status_code, again.status_code) == (201, 200)
    assert set(first.json()) == VERSION_FIELDS
    assert first.json()["aliases"] == [PRODUCTION] and again.json()["version"] == 1


async def test_a_registration_with_incomplete_lineage_is_refused(client):
    await declare(client)
    body = registration().model_dump(mode="json")
    body["lineage"] = {"dataset": "churn"}

    response = await client.post("/v1/models/churn/versions", json=body)

    assert response.status_code == 422 and response.json()["error"]["field"].startswith("lineage.")


async def test_reads_answer_the_documented_shapes(client):
    await declare(client)
    await register(client)

    models = (await client.get("/v1/models", params={"dataset": "churn"})).json()
    model = (await client.get("/v1/models/churn")).json()
    versions = (await client.get("/v1/models/churn/versions")).json()
    version = (await client.get("/v1/models/churn/versions/1")).json()
    alias = (await client.get(f"/v1/models/churn/aliases/{PRODUCTION}")).json()
    lineage = (await client.get("/v1/lineage/churn/1")).json()
    audit = (await client.get("/v1/audit", params={"model": "churn"})).json()

    assert set(models["models"][0]) == SPEC_FIELDS | {"dataset", "aliases"}
    assert set(model) == SPEC_FIELDS | {"aliases", "versions", "serving", "problems", "description", "tags"}
    assert model["versions"] == 1
    assert [set(v) for v in versions["versions"]] == [VERSION_FIELDS]
    assert set(version) == VERSION_FIELDS | {"lineage"} and version["lineage"]["dataset"] == "churn"
    assert alias["alias"] == PRODUCTION and alias["version"] == 1
    assert {"model", "version", "run_id", "evaluation_id", "artifact", "spec", "dataset_sha256"} <= set(lineage)
    assert lineage["spec"] == {"version": 1, "digest": model["digest"]}
    assert [e["action"] for e in audit["entries"]] == ["alias.moved", "version.registered", "spec.created"]
    assert audit["entries"][-1]["actor"] == "admin"
    assert audit["entries"][0]["prev_hash"] == audit["entries"][1]["hash"]


async def test_audit_verify_answers_with_the_chain_state(client):
    await declare(client)
    await register(client)

    verified = (await client.get("/v1/audit/verify")).json()

    assert verified["ok"] is True and verified["entries"] == 3
    assert verified["first_bad_id"] is None and len(verified["last_hash"]) == 64


async def test_alias_moves_and_approvals_map_refusals_to_statuses(client):
    await declare(client)
    await register(client)

    unknown_alias = await client.put("/v1/models/churn/aliases/Bad%20Alias", json={"version": 1})
    missing_version = await client.put(f"/v1/models/churn/aliases/{PRODUCTION}", json={"version": 9})
    not_pending = await client.post("/v1/models/churn/versions/1/approve", json={"comment": "ok"})
    same_place = await client.put(f"/v1/models/churn/aliases/{PRODUCTION}", json={"version": 1})

    assert (unknown_alias.status_code, unknown_alias.json()["error"]["field"]) == (422, "alias")
    assert missing_version.status_code == 404
    assert not_pending.status_code == 409
    assert same_place.status_code == 200 and same_place.json()["alias"] == PRODUCTION


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/v1/models/churn/versions/{2**31}"),
        ("GET", f"/v1/models/churn/versions/{-(2**63)}"),
        ("POST", "/v1/models/churn/versions/0/approve"),
        ("GET", f"/v1/lineage/churn/{2**40}"),
        ("PUT", f"/v1/models/churn/versions/{-(2**31) - 1}/description"),
    ],
)
async def test_a_version_number_beyond_the_database_range_is_invalid_not_a_server_error(client, method, path):
    response = await client.request(method, path, json={"description": "x", "comment": ""})

    assert response.status_code == 422
    assert response.json()["error"]["field"] == "version"


async def test_an_audit_page_beyond_the_id_range_or_a_nul_in_a_query_is_invalid(client):
    beyond = await client.get("/v1/audit", params={"before_id": 2**63})
    nul = await client.get("/v1/audit", params={"model": "churn\x00"})

    assert (beyond.status_code, beyond.json()["error"]["field"]) == (422, "before_id")
    assert nul.status_code == 422 and "NUL" in nul.json()["error"]["message"]


def test_openapi_documents_the_spec_body_and_the_answers():
    document = create_app(RegistrySettings()).openapi()

    submit = document["paths"]["/v1/models"]["post"]
    ref = submit["requestBody"]["content"]["application/yaml"]["schema"]["$ref"]
    assert ref.removeprefix("#/components/schemas/") in document["components"]["schemas"]
    assert {"200", "201"} <= set(submit["responses"])
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                code, success = next((c, r) for c, r in operation["responses"].items() if c.startswith("2"))
                if code == "204":
                    continue  # no body
                assert "$ref" in success["content"]["application/json"]["schema"], f"{method} {path}"


async def test_tags_and_descriptions_show_in_the_views_and_are_audited(client):
    await declare(client)
    await register(client)

    model_tags = await client.put("/v1/models/churn/tags", json={"tags": {"team": "fraud", "gold": ""}})
    version_tags = await client.put("/v1/models/churn/versions/1/tags", json={"tags": {"stage": "reviewed"}})
    described = await client.put("/v1/models/churn/versions/1/description", json={"description": "first cut"})
    removed = await client.delete("/v1/models/churn/tags/gold")
    removed_again = await client.delete("/v1/models/churn/tags/gold")
    model = (await client.get("/v1/models/churn")).json()
    version = (await client.get("/v1/models/churn/versions/1")).json()
    actions = [e["action"] for e in (await client.get("/v1/audit")).json()["entries"]]

    assert model_tags.json() == {"tags": {"gold": "", "team": "fraud"}} and version_tags.status_code == 200
    assert (described.status_code, removed.status_code, removed_again.status_code) == (204, 204, 404)
    assert model["tags"] == {"team": "fraud"}
    assert (version["tags"], version["description"]) == ({"stage": "reviewed"}, "first cut")
    assert actions[:4] == ["tag.deleted", "description.set", "tags.set", "tags.set"]
    assert (await client.get("/v1/audit/verify")).json()["ok"] is True


async def test_bad_tags_and_queries_are_422_naming_the_part(client):
    await declare(client)

    bad_key = await client.put("/v1/models/churn/tags", json={"tags": {"no spaces": "x"}})
    too_many = await client.put("/v1/models/churn/tags", json={"tags": {f"k{i}": "" for i in range(33)}})
    unknown_model = await client.put("/v1/models/nope/tags", json={"tags": {"a": "b"}})
    bad_query = await client.get("/v1/search/versions", params={"q": "metric.f1 > high"})

    assert (bad_key.status_code, bad_key.json()["error"]["field"]) == (422, "tags.no spaces")
    assert (too_many.status_code, too_many.json()["error"]["field"]) == (422, "tags")
    assert unknown_model.status_code == 404
    assert (bad_query.status_code, bad_query.json()["error"]["field"]) == (422, "q")
    assert "'high' at position 12" in bad_query.json()["error"]["message"]


async def test_a_key_acts_within_its_role_is_named_in_the_audit_log_and_stops_working_when_revoked(client):
    created = await client.post("/v1/keys", json={"name": "alice", "role": "data-scientist"})
    assert created.status_code == 201, created.text
    key = created.json()
    alice = {"Authorization": f"Bearer {key['key']}"}

    declared = await client.post(
        "/v1/models",
        content=SPEC_YAML,
        headers={"content-type": "application/yaml", "X-Mloop-Actor": "mallory", **alice},
    )
    approving = await client.post("/v1/models/churn/versions/1/approve", json={}, headers=alice)
    making_keys = await client.post("/v1/keys", json={"name": "eve", "role": "admin"}, headers=alice)
    listed = (await client.get("/v1/keys")).json()["keys"]

    assert declared.status_code == 201
    assert (approving.status_code, making_keys.status_code) == (403, 403)
    assert "data-scientist" in approving.json()["error"]["message"]
    audit = (await client.get("/v1/audit")).json()["entries"]
    assert audit[0]["action"] == "spec.created" and audit[0]["actor"] == f"alice (key {key['key_id']})"
    assert audit[1] == audit[1] | {"action": "key.created", "actor": "admin"}
    assert [(k["name"], k["role"], k["revoked_at"]) for k in listed] == [("alice", "data-scientist", None)]
    assert key["key"] not in str(listed) and "hash" not in listed[0]

    revoked = await client.delete(f"/v1/keys/{key['key_id']}")
    refused = await client.get("/v1/models", headers=alice)

    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.delete("/v1/keys/0123456789ab")).status_code == 404


async def test_introspection_tells_services_who_holds_a_key_and_nothing_about_a_forged_one(client):
    key = (await client.post("/v1/keys", json={"name": "shop", "role": "app"})).json()
    forged = key["key"][:-4] + ("AAAA" if not key["key"].endswith("AAAA") else "BBBB")

    known = (await client.post("/v1/auth/introspect", json={"key": key["key"]})).json()
    unknown = (await client.post("/v1/auth/introspect", json={"key": forged})).json()
    bad_role = await client.post("/v1/keys", json={"name": "x", "role": "root"})

    assert known == {"active": True, "name": "shop", "role": "app", "key_id": key["key_id"]}
    assert unknown == {"active": False, "name": None, "role": None, "key_id": None}
    assert bad_role.status_code == 422 and bad_role.json()["error"]["field"] == "role"
