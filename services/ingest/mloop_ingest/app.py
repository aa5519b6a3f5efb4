"""Ingest HTTP API: publish dataset versions and read them back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from mloop_common.errors import PayloadTooLarge
from mloop_common.http import create_app
from mloop_common.runtime import Runtime
from mloop_common.settings import build_settings
from mloop_ingest import handlers, store
from mloop_ingest.config import IngestSettings

CHUNK = 1024 * 1024


def version_view(row: dict[str, Any]) -> dict[str, Any]:
    view = {"dataset": row["name"], **{k: v for k, v in row.items() if k not in ("name", "stats", "schema")}}
    view["sha256"] = row["snapshot_sha256"]
    return jsonable_encoder(view)


def create_ingest_app() -> tuple[FastAPI, IngestSettings]:
    common, settings = build_settings("ingest", IngestSettings)
    runtime = Runtime("ingest", common, settings, migrations="mloop_ingest:migrations")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await runtime.start(app)
        yield
        await runtime.stop()

    app = create_app(
        service="ingest",
        lifespan=lifespan,
        max_body_bytes=settings.max_upload_bytes + CHUNK,
        description="Publish dataset versions; each accepted version emits data.published.",
    )

    async def read_limited(upload: UploadFile) -> bytes:
        chunks, size = [], 0
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > settings.max_upload_bytes:
                raise PayloadTooLarge(f"file over the {settings.max_upload_bytes}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)

    @app.post("/v1/datasets/{name}/versions", status_code=201, tags=["datasets"])
    async def publish(
        name: str,
        file: Annotated[UploadFile, File(description="CSV or Parquet")],
        target: Annotated[str, Form(min_length=1, max_length=200)],
        time_column: Annotated[str | None, Form(max_length=200)] = None,
        description: Annotated[str | None, Form(max_length=2000)] = None,
    ) -> JSONResponse:
        """Publish a version: 201 new, 200 same bytes as an existing version, 422 rejected with its report."""
        data = await read_limited(file)
        row, created = await handlers.publish_version(
            runtime,
            runtime.artifacts,
            name=name,
            data=data,
            filename=file.filename or "",
            target=target,
            time_column=time_column or None,
            description=description,
        )
        view = version_view(row)
        if row["status"] == "rejected":
            failed = [c["message"] for c in row["report"]["checks"] if c["status"] == "fail"]
            return JSONResponse(
                {"error": {"code": "dataset_rejected", "message": "; ".join(failed), "field": "file"}, **view},
                status_code=422,
            )
        return JSONResponse(view, status_code=201 if created else 200)

    @app.get("/v1/datasets", tags=["datasets"])
    async def list_datasets() -> dict[str, Any]:
        """Every dataset with its version count and latest published version."""
        async with runtime.transaction() as session:
            return {"datasets": await store.list_datasets(session)}

    @app.get("/v1/datasets/{name}/versions", tags=["datasets"])
    async def list_versions(name: str) -> dict[str, Any]:
        """All versions of a dataset (published and rejected), oldest first."""
        async with runtime.transaction() as session:
            return {"versions": [version_view(r) for r in await store.list_versions(session, name)]}

    @app.get("/v1/datasets/{name}/versions/{version}", tags=["datasets"])
    async def get_version(name: str, version: int) -> dict[str, Any]:
        """One version with its schema, column profile and validation report."""
        async with runtime.transaction() as session:
            row = await store.get_version(session, name, version)
        return {**version_view(row), "schema": row["schema"], "profile": row["stats"]}

    return app, settings
