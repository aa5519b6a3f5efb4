"""Ingest HTTP routes: they translate requests into the use case or store reads and nothing else."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Response, UploadFile

from mloop_common.errors import PayloadTooLarge
from mloop_common.http import components
from mloop_ingest.bootstrap import IngestService
from mloop_ingest.entities import DatasetList, DatasetVersion, DatasetVersionDetail, RejectedVersion, VersionList
from mloop_ingest.handlers import PublishVersion

CHUNK = 1024 * 1024

router = APIRouter(tags=["datasets"])
Service = Annotated[IngestService, Depends(components)]


async def read_limited(upload: UploadFile, limit: int) -> bytes:
    """The uploaded bytes, refused as soon as they pass ``limit`` (counted while streaming)."""
    chunks, size = [], 0
    while chunk := await upload.read(CHUNK):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"file over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/v1/datasets/{name}/versions",
    status_code=201,
    responses={
        200: {"model": DatasetVersion, "description": "These bytes were uploaded before: the existing version."},
        422: {"model": RejectedVersion, "description": "The version failed a hard check and is recorded as such."},
    },
)
async def publish(
    service: Service,
    response: Response,
    name: str,
    file: Annotated[UploadFile, File(description="CSV or Parquet")],
    target: Annotated[str, Form(min_length=1, max_length=200)],
    time_column: Annotated[str | None, Form(max_length=200)] = None,
    description: Annotated[str | None, Form(max_length=2000)] = None,
) -> DatasetVersion | RejectedVersion:
    """Publish a version: 201 new, 200 same bytes as an existing version, 422 rejected with its report."""
    command = PublishVersion(
        dataset=name,
        data=await read_limited(file, service.max_upload_bytes),
        filename=file.filename or "",
        target=target,
        time_column=time_column or None,
        description=description,
    )
    published = await service.publisher.publish_version(command)
    if published.version.status == "rejected":
        response.status_code = 422
        return RejectedVersion.of(published.version)
    response.status_code = 201 if published.created else 200
    return published.version


@router.get("/v1/datasets")
async def list_datasets(service: Service) -> DatasetList:
    """Every dataset with its version count and latest published version."""
    async with service.store.transaction() as unit:
        return DatasetList(datasets=await unit.datasets())


@router.get("/v1/datasets/{name}/versions")
async def list_versions(service: Service, name: str) -> VersionList:
    """All versions of a dataset (published and rejected), oldest first."""
    async with service.store.transaction() as unit:
        return VersionList(versions=await unit.versions(name))


@router.get("/v1/datasets/{name}/versions/{version}")
async def get_version(service: Service, name: str, version: int) -> DatasetVersionDetail:
    """One version with its schema, column profile and validation report."""
    async with service.store.transaction() as unit:
        return await unit.version(name, version)
