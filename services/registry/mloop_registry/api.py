"""Registry HTTP routes: they translate requests into registry use cases and answers into contract models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from pydantic import ValidationError

from mloop_common.artifact_refs import REFERENCES_PATH, ArtifactReferences
from mloop_common.contracts import (
    MAX_BIGINT,
    MAX_INT,
    AliasUpdate,
    AliasView,
    AuditPage,
    AuditVerification,
    DescriptionUpdate,
    Introspection,
    IntrospectRequest,
    KeyList,
    KeyRequest,
    KeyView,
    LineageView,
    ModelList,
    NewKeyView,
    PositiveInt32,
    RegisterVersion,
    SpecView,
    Tags,
    Verdict,
    VersionDetail,
    VersionList,
    VersionSearchPage,
    VersionView,
)
from mloop_common.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable
from mloop_common.http import Actor, components
from mloop_common.spec import ModelSpec, SpecError, parse_spec
from mloop_registry.artifact_gc import SweepReport
from mloop_registry.bootstrap import RegistryService
from mloop_registry.entities import ModelStatus

router = APIRouter()
Service = Annotated[RegistryService, Depends(components)]
VersionNumber = PositiveInt32
# The spec body is read by hand (JSON or YAML), so OpenAPI learns its schema from here.
_SPEC_SCHEMA = {"schema": {"$ref": "#/components/schemas/ModelSpec"}}
_SPEC_BODY = {"required": True, "content": {"application/json": _SPEC_SCHEMA, "application/yaml": _SPEC_SCHEMA}}


@router.post(
    "/v1/models",
    status_code=201,
    tags=["models"],
    responses={200: {"model": SpecView, "description": "Identical to the latest spec version, which is returned"}},
    openapi_extra={"requestBody": _SPEC_BODY},
)
async def submit_spec(service: Service, request: Request, response: Response, actor: Actor) -> SpecView:
    """Create a model from a spec (JSON or YAML); a changed spec makes a new spec version (200: unchanged)."""
    spec = await _spec_of(request, service.max_spec_bytes)
    stored, created = await service.registry.submit_spec(spec, actor)
    if not created:
        response.status_code = 200
    return stored


@router.get("/v1/models", tags=["models"])
async def list_models(service: Service, dataset: Annotated[str | None, Query(max_length=63)] = None) -> ModelList:
    """List models, optionally only those trained from ``dataset``, with their latest spec and aliases."""
    return await service.registry.models(dataset)


@router.get("/v1/models/{name}", tags=["models"])
async def get_model(
    service: Service, name: str, spec_version: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None
) -> ModelStatus:
    """One model: its spec (latest, or ``spec_version``), aliases, version count and what serving reports.

    ``problems`` lists every serving instance that could not load the version an alias names.
    """
    return await service.registry.model(name, spec_version)


@router.get("/v1/models/{name}/versions", tags=["versions"])
async def list_versions(service: Service, name: str) -> VersionList:
    """Every registered version of a model, oldest first."""
    return await service.registry.versions(name)


@router.post(
    "/v1/models/{name}/versions",
    status_code=201,
    tags=["versions"],
    responses={200: {"model": VersionView, "description": "This run was already registered: its version"}},
)
async def register_version(
    service: Service, name: str, registration: RegisterVersion, response: Response, actor: Actor
) -> VersionView:
    """Register a validated candidate (called by the validator); idempotent per run id (200: already registered)."""
    version, created = await service.registry.register(name, registration, actor)
    if not created:
        response.status_code = 200
    return version


@router.get("/v1/models/{name}/versions/{version}", tags=["versions"])
async def get_version(service: Service, name: str, version: VersionNumber) -> VersionDetail:
    """One version with its metrics, artifact digests, lineage and aliases."""
    return await service.registry.version(name, version)


@router.get("/v1/models/{name}/aliases/{alias}", tags=["aliases"])
async def get_alias(service: Service, name: str, alias: str) -> AliasView:
    """The version an alias points at (e.g. ``production``)."""
    return await service.registry.alias(name, alias)


@router.put("/v1/models/{name}/aliases/{alias}", tags=["aliases"])
async def put_alias(service: Service, name: str, alias: str, update: AliasUpdate, actor: Actor) -> AliasView:
    """Move an alias: promote a version, or roll back to an older one.

    ``production`` is what serves; ``canary``, ``shadow`` and ``challenger`` are served beside it. A version
    made production leaves the rollout aliases it held.
    """
    return await service.registry.move_alias(name, alias, update.version, actor)


@router.delete("/v1/models/{name}/aliases/{alias}", status_code=204, tags=["aliases"])
async def delete_alias(service: Service, name: str, alias: str, actor: Actor) -> None:
    """Clear a rollout alias (``canary``, ``shadow``, ``challenger``): roll the candidate back out of serving."""
    await service.registry.clear_alias(name, alias, actor)


@router.post("/v1/models/{name}/versions/{version}/approve", tags=["approvals"])
async def approve(
    service: Service,
    name: str,
    version: VersionNumber,
    actor: Actor,
    verdict: Annotated[Verdict, Body()] = Verdict(),
) -> VersionView:
    """Approve a version waiting for a human; it becomes production."""
    return await service.registry.decide(name, version, approve=True, comment=verdict.comment, actor=actor)


@router.post("/v1/models/{name}/versions/{version}/reject", tags=["approvals"])
async def reject(
    service: Service,
    name: str,
    version: VersionNumber,
    actor: Actor,
    verdict: Annotated[Verdict, Body()] = Verdict(),
) -> VersionView:
    """Reject a version waiting for a human."""
    return await service.registry.decide(name, version, approve=False, comment=verdict.comment, actor=actor)


@router.get("/v1/lineage/{name}/{version}", tags=["lineage"])
async def lineage(service: Service, name: str, version: VersionNumber) -> LineageView:
    """Where a version came from: run, dataset version and snapshot sha256, code, spec, evaluation."""
    return await service.registry.lineage(name, version)


@router.put("/v1/models/{name}/tags", tags=["tags"])
async def put_model_tags(service: Service, name: str, update: Tags, actor: Actor) -> Tags:
    """Set tags on a model (others stay): ``{"tags": {"team": "fraud", "gold": ""}}``; answers with all of them."""
    return await service.registry.set_tags(name, None, update.tags, actor)


@router.delete("/v1/models/{name}/tags/{key}", status_code=204, tags=["tags"])
async def delete_model_tag(service: Service, name: str, key: str, actor: Actor) -> None:
    """Remove one tag from a model."""
    await service.registry.delete_tag(name, None, key, actor)


@router.put("/v1/models/{name}/versions/{version}/tags", tags=["tags"])
async def put_version_tags(service: Service, name: str, version: VersionNumber, update: Tags, actor: Actor) -> Tags:
    """Set tags on a version (others stay); answers with all of them."""
    return await service.registry.set_tags(name, version, update.tags, actor)


@router.delete("/v1/models/{name}/versions/{version}/tags/{key}", status_code=204, tags=["tags"])
async def delete_version_tag(service: Service, name: str, version: VersionNumber, key: str, actor: Actor) -> None:
    """Remove one tag from a version."""
    await service.registry.delete_tag(name, version, key, actor)


@router.put("/v1/models/{name}/description", status_code=204, tags=["tags"])
async def put_model_description(service: Service, name: str, update: DescriptionUpdate, actor: Actor) -> None:
    """Replace a model's description."""
    await service.registry.describe(name, None, update.description, actor)


@router.put("/v1/models/{name}/versions/{version}/description", status_code=204, tags=["tags"])
async def put_version_description(
    service: Service, name: str, version: VersionNumber, update: DescriptionUpdate, actor: Actor
) -> None:
    """Replace a version's description."""
    await service.registry.describe(name, version, update.description, actor)


@router.get("/v1/search/versions", tags=["versions"])
async def search_versions(
    service: Service,
    q: Annotated[str, Query(max_length=2000)],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
) -> VersionSearchPage:
    """Versions matching ``q``, e.g. ``name = churn AND (metric.roc_auc > 0.8 OR tag.gold)`` (docs/api.md)."""
    return await service.registry.search(q, limit=limit, offset=offset)


@router.get("/v1/audit", tags=["audit"])
async def audit(
    service: Service,
    model: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_BIGINT)] = None,
) -> AuditPage:
    """The append-only audit log, newest first (page with ``before_id``)."""
    return await service.registry.audit(model=model, limit=limit, before_id=before_id)


@router.get("/v1/audit/verify", tags=["audit"])
async def verify_audit(service: Service) -> AuditVerification:
    """Walk the audit log's hash chain: ``ok``, or the first entry edited, deleted around or reordered, and why."""
    return await service.registry.verify_audit()


@router.post("/v1/keys", status_code=201, tags=["keys"])
async def create_key(service: Service, request: KeyRequest, actor: Actor) -> NewKeyView:
    """Create an API key with a role (admin only); the answer holds the key, shown this once."""
    return await service.keys.create(request, actor)


@router.get("/v1/keys", tags=["keys"])
async def list_keys(service: Service) -> KeyList:
    """Every API key (never the key itself), revoked ones included."""
    return await service.keys.list()


@router.delete("/v1/keys/{key_id}", tags=["keys"])
async def revoke_key(
    service: Service, key_id: Annotated[str, Path(pattern="^[0-9a-f]{12}$")], actor: Actor, request: Request
) -> KeyView:
    """Revoke a key: refused here at once, by the other services within MLOOP_AUTH__CACHE_SECONDS."""
    revoked = await service.keys.revoke(key_id, actor)
    request.app.state.access.authenticator.forget(key_id)
    return revoked


@router.post("/v1/auth/introspect", tags=["keys"])
async def introspect(request: Request, body: IntrospectRequest) -> Introspection:
    """Who a key belongs to, for the other services (their own keys only): ``active: false`` if nobody."""
    principal = await request.app.state.access.authenticator.authenticate(body.key)
    if principal is None:
        return Introspection(active=False)
    return Introspection(active=True, name=principal.name, role=principal.role, key_id=principal.key_id)


@router.get(REFERENCES_PATH, tags=["artifacts"])
async def artifact_references(service: Service) -> ArtifactReferences:
    """The artifacts the registry needs kept (artifact retention): every version's model and profile, and by
    digest the training data its lineage names."""
    async with service.registry.store.transaction() as unit:
        return await unit.artifact_references()


@router.post("/v1/artifacts/gc", tags=["artifacts"])
async def collect_artifacts(
    service: Service,
    actor: Actor,
    dry_run: Annotated[bool, Query(description="report what would be deleted, delete nothing")] = False,
) -> SweepReport:
    """Delete the artifacts no service references that are older than the grace period (retention). 503, and
    nothing deleted, when a service holding references cannot be asked."""
    if service.sweeper is None:
        raise ServiceUnavailable("artifact retention is not set up in this process")
    return await service.sweeper.sweep(dry_run=dry_run, actor=actor)


async def _spec_of(request: Request, max_bytes: int) -> ModelSpec:
    """The model spec in the request body (JSON, or YAML by content type)."""
    body = await request.body()
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"spec over {max_bytes} bytes")
    try:
        return parse_spec(body, request.headers.get("content-type", "application/json"))
    except SpecError as exc:
        raise InvalidInput(str(exc), field="body") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        raise InvalidInput(f"{field}: {first['msg']}" if field else first["msg"], field=field) from exc
