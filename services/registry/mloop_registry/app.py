"""Registry HTTP API: the system of record for model specs, versions, aliases, approvals and audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import sqlalchemy.exc
from fastapi import Body, FastAPI, Header, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from mloop_common.errors import InvalidInput, NotFound, PayloadTooLarge
from mloop_common.http import create_app
from mloop_common.runtime import Runtime
from mloop_common.settings import build_settings
from mloop_common.spec import SpecError, parse_spec
from mloop_registry import handlers, store
from mloop_registry.config import RegistrySettings

Actor = Annotated[str, Header(alias="X-Mloop-Actor", max_length=200)]


class AliasUpdate(BaseModel):
    version: int = Field(ge=1)


class Verdict(BaseModel):
    comment: str = Field("", max_length=2000)


def version_view(row: dict[str, Any], aliases: dict[str, int] | None = None) -> dict[str, Any]:
    view = {
        k: row[k]
        for k in (
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
        )
    }
    view["artifact"] = {"uri": row["artifact_uri"], "sha256": row["artifact_sha256"]}
    view["profile"] = {"uri": row["profile_uri"], "sha256": row["profile_sha256"]}
    if aliases is not None:
        view["aliases"] = sorted(a for a, v in aliases.items() if v == row["version"])
    return view


def spec_view(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": row["name"],
        "spec_version": row["spec_version"],
        "digest": row["digest"],
        "spec": row["body"],
        "created_at": row["created_at"],
    }


def create_registry_app() -> tuple[FastAPI, RegistrySettings]:
    common, settings = build_settings("registry", RegistrySettings)
    runtime = Runtime("registry", common, settings, migrations="mloop_registry:migrations")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(app)
        yield
        await runtime.stop()

    app = create_app(
        service="registry",
        lifespan=lifespan,
        description="Model specs, versions, aliases, approvals, lineage and the audit log.",
    )

    @app.post("/v1/models", status_code=201, tags=["models"])
    async def create_model(request: Request, actor: Actor = "anonymous") -> JSONResponse:
        """Create a model from a spec (JSON or YAML); a changed spec makes a new spec version."""
        body = await request.body()
        if len(body) > settings.max_spec_bytes:
            raise PayloadTooLarge(f"spec over {settings.max_spec_bytes} bytes")
        try:
            spec = parse_spec(body, request.headers.get("content-type", "application/json"))
        except SpecError as exc:
            raise InvalidInput(str(exc), field="body") from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or None
            raise InvalidInput(f"{field}: {first['msg']}" if field else first["msg"], field=field) from exc
        try:
            async with runtime.transaction() as session:
                row, created = await handlers.create_spec(session, spec, actor)
        except sqlalchemy.exc.IntegrityError:
            # A concurrent request created the model first; now its row exists and can be locked.
            async with runtime.transaction() as session:
                row, created = await handlers.create_spec(session, spec, actor)
        return JSONResponse(jsonable_encoder(spec_view(row)), status_code=201 if created else 200)

    @app.get("/v1/models", tags=["models"])
    async def list_models(dataset: Annotated[str | None, Query(max_length=63)] = None) -> dict[str, Any]:
        """List models, optionally only those trained from ``dataset``, with their latest spec and aliases."""
        async with runtime.transaction() as session:
            rows = await store.list_models(session, dataset)
            items = []
            for row in rows:
                spec = await store.get_spec(session, row["name"])
                items.append(
                    {
                        "name": row["name"],
                        "dataset": row["dataset"],
                        "aliases": await store.aliases_of(session, row["name"]),
                        **spec_view(spec),
                    }
                )
        return {"models": items}

    @app.get("/v1/models/{name}", tags=["models"])
    async def get_model(name: str, spec_version: Annotated[int | None, Query(ge=1)] = None) -> dict[str, Any]:
        """One model: its spec (latest, or ``spec_version``), aliases and version count."""
        async with runtime.transaction() as session:
            if await store.get_model(session, name) is None:
                raise NotFound(f"model {name!r} does not exist")
            spec = await store.get_spec(session, name, spec_version)
            versions = await store.list_versions(session, name)
            return {**spec_view(spec), "aliases": await store.aliases_of(session, name), "versions": len(versions)}

    @app.get("/v1/models/{name}/versions", tags=["versions"])
    async def list_versions(name: str) -> dict[str, Any]:
        """Every registered version of a model, oldest first."""
        async with runtime.transaction() as session:
            if await store.get_model(session, name) is None:
                raise NotFound(f"model {name!r} does not exist")
            aliases = await store.aliases_of(session, name)
            return {"versions": [version_view(r, aliases) for r in await store.list_versions(session, name)]}

    @app.post("/v1/models/{name}/versions", status_code=201, tags=["versions"])
    async def register(name: str, request: handlers.RegisterVersion, actor: Actor = "anonymous") -> JSONResponse:
        """Register a validated candidate (called by the validator); idempotent per run id."""
        try:
            async with runtime.transaction() as session:
                row, created = await handlers.register_version(session, name, request, actor)
                aliases = await store.aliases_of(session, name)
        except sqlalchemy.exc.IntegrityError:
            # The same run was registered concurrently and the other request won: answer with its version.
            async with runtime.transaction() as session:
                row = await store.version_by_run(session, name, request.run_id)
                if row is None:
                    raise
                created, aliases = False, await store.aliases_of(session, name)
        return JSONResponse(jsonable_encoder(version_view(row, aliases)), status_code=201 if created else 200)

    @app.get("/v1/models/{name}/versions/{version}", tags=["versions"])
    async def get_version(name: str, version: int) -> dict[str, Any]:
        """One version with its metrics, artifact digests, lineage and aliases."""
        async with runtime.transaction() as session:
            row = await store.get_version(session, name, version)
            return {**version_view(row, await store.aliases_of(session, name)), "lineage": row["lineage"]}

    @app.get("/v1/models/{name}/aliases/{alias}", tags=["aliases"])
    async def get_alias(name: str, alias: str) -> dict[str, Any]:
        """The version an alias points at (e.g. ``production``)."""
        async with runtime.transaction() as session:
            version = await store.get_alias(session, name, alias)
            if version is None:
                raise NotFound(f"model {name!r} has no {alias!r} alias")
            row = await store.get_version(session, name, version)
            return {"alias": alias, **version_view(row)}

    @app.put("/v1/models/{name}/aliases/{alias}", tags=["aliases"])
    async def put_alias(name: str, alias: str, update: AliasUpdate, actor: Actor = "anonymous") -> dict[str, Any]:
        """Move an alias: promote a version, or roll back to an older one."""
        handlers.check_alias_name(alias)
        async with runtime.transaction() as session:
            current = await store.get_alias(session, name, alias)
            reason = "rollback" if current is not None and update.version < current else "manual"
            row = await handlers.promote(session, name, update.version, reason=reason, actor=actor, alias=alias)
            return {"alias": alias, **version_view(row)}

    @app.post("/v1/models/{name}/versions/{version}/approve", tags=["approvals"])
    async def approve(
        name: str, version: int, verdict: Annotated[Verdict, Body()] = Verdict(), actor: Actor = "anonymous"
    ) -> dict[str, Any]:
        """Approve a version waiting for a human; it becomes production."""
        async with runtime.transaction() as session:
            row = await handlers.decide_approval(
                session, name, version, approve=True, comment=verdict.comment, actor=actor
            )
            return version_view(row, await store.aliases_of(session, name))

    @app.post("/v1/models/{name}/versions/{version}/reject", tags=["approvals"])
    async def reject(
        name: str, version: int, verdict: Annotated[Verdict, Body()] = Verdict(), actor: Actor = "anonymous"
    ) -> dict[str, Any]:
        """Reject a version waiting for a human."""
        async with runtime.transaction() as session:
            row = await handlers.decide_approval(
                session, name, version, approve=False, comment=verdict.comment, actor=actor
            )
            return version_view(row, await store.aliases_of(session, name))

    @app.get("/v1/lineage/{name}/{version}", tags=["lineage"])
    async def lineage(name: str, version: int) -> dict[str, Any]:
        """Where a version came from: run, dataset version and snapshot sha256, code, spec, evaluation."""
        async with runtime.transaction() as session:
            row = await store.get_version(session, name, version)
            spec = await store.get_spec(session, name, row["spec_version"])
        return {
            "model": name,
            "version": version,
            "run_id": row["run_id"],
            "evaluation_id": row["evaluation_id"],
            "artifact": {"uri": row["artifact_uri"], "sha256": row["artifact_sha256"]},
            "spec": {"version": row["spec_version"], "digest": spec["digest"]},
            **row["lineage"],
        }

    @app.get("/v1/audit", tags=["audit"])
    async def audit(
        model: Annotated[str | None, Query(max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        before_id: Annotated[int | None, Query(ge=1)] = None,
    ) -> dict[str, Any]:
        """The append-only audit log, newest first (page with ``before_id``)."""
        async with runtime.transaction() as session:
            return {"entries": await store.read_audit(session, model=model, limit=limit, before_id=before_id)}

    return app, settings
