"""Ingest HTTP routes: they translate requests into the use case or store reads and nothing else."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mloop_common.artifact_refs import REFERENCES_PATH, ArtifactReferences
from mloop_common.contracts import PositiveInt32
from mloop_common.datacontract import ContractDiff, DatasetContract
from mloop_common.errors import InvalidInput, PayloadTooLarge
from mloop_common.http import Actor, components
from mloop_ingest.bootstrap import IngestService
from mloop_ingest.checks import CheckPolicy
from mloop_ingest.contract import Declaration
from mloop_ingest.entities import (
    DatasetList,
    DatasetPolicy,
    DatasetVersion,
    DatasetVersionDetail,
    RejectedVersion,
    VersionList,
)
from mloop_ingest.handlers import PublishVersion, check_name, read_contract, read_diff
from mloop_ingest.uploads import receive_form

router = APIRouter(tags=["datasets"])
Service = Annotated[IngestService, Depends(components)]


class PublishForm(BaseModel):
    """The text fields of an upload, beside its ``file``."""

    model_config = ConfigDict(extra="forbid")
    target: str = Field(min_length=1, max_length=200, description="label column")
    time_column: str | None = Field(None, max_length=200, description="event-time column")
    description: str | None = Field(None, max_length=2000)
    contract: str | None = Field(
        None, description='declarations, JSON: {"id_column": "id", "columns": {"age": {"min": 0, "max": 130}}}'
    )

    @field_validator("*")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # The gate scans JSON and urlencoded bodies for NUL; a multipart body also carries a binary file, so its
        # text fields are checked here (PostgreSQL stores a NUL in no text column).
        if value is not None and "\x00" in value:
            raise ValueError("holds a NUL character, which no value may contain")
        return value

    @classmethod
    def of(cls, fields: dict[str, str]) -> PublishForm:
        try:
            return cls.model_validate({k: v for k, v in fields.items() if v != ""})
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ".".join(str(p) for p in first["loc"]) or "form"
            raise InvalidInput(f"{name}: {first['msg']}", field=name) from exc


class RegisterBody(BaseModel):
    """A version registered by URI: a file under one of the configured source roots."""

    model_config = ConfigDict(extra="forbid")
    uri: str = Field(min_length=1, max_length=4096, description="file:///... or https://... under a source root")
    target: str = Field(min_length=1, max_length=200, description="label column")
    time_column: str | None = Field(None, max_length=200, description="event-time column")
    description: str | None = Field(None, max_length=2000)
    contract: Declaration | None = None


_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "target"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "CSV or Parquet"},
                        **{
                            name: {"type": "string", "description": info.description or ""}
                            for name, info in PublishForm.model_fields.items()
                        },
                    },
                }
            },
            "application/json": {"schema": RegisterBody.model_json_schema(ref_template="#/components/schemas/{model}")},
        },
    }
}
_FIELDS = frozenset(PublishForm.model_fields)
MAX_JSON_BYTES = 1024 * 1024


async def _json_body(request: Request) -> RegisterBody:
    """The JSON body, read up to MAX_JSON_BYTES (a chunked body is counted as it arrives)."""
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_JSON_BYTES:
            raise PayloadTooLarge(f"JSON body over {MAX_JSON_BYTES} bytes")
    try:
        return RegisterBody.model_validate_json(bytes(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{name}: {first['msg']}", field=name) from exc


@router.post(
    "/v1/datasets/{name}/versions",
    status_code=201,
    responses={
        200: {"model": DatasetVersion, "description": "These bytes were uploaded before: the existing version."},
        413: {"description": "The file is over the upload limit (counted while it streams) or too wide to announce."},
        422: {"model": RejectedVersion, "description": "The version failed a hard check and is recorded as such."},
    },
    openapi_extra=_REQUEST_BODY,
)
async def publish(
    service: Service, request: Request, response: Response, name: str, actor: Actor
) -> DatasetVersion | RejectedVersion:
    """Publish a version (multipart upload, or JSON naming a URI under a source root): 201 new, 200 same bytes
    as an existing version, 422 rejected with its report."""
    check_name(name)  # before reading a byte of the body
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await _json_body(request)
        spooled = await asyncio.to_thread(
            service.sources.fetch, body.uri, limit=service.max_upload_bytes, directory=service.spool_dir
        )
        try:
            command = PublishVersion(
                dataset=name,
                source=spooled.path,
                upload_sha256=spooled.sha256,
                filename=spooled.filename,
                target=body.target,
                time_column=body.time_column or None,
                description=body.description,
                contract=body.contract.model_dump_json() if body.contract else None,
                publisher=actor,
                source_uri=body.uri,
            )
            published = await service.publisher.publish_version(command)
        finally:
            spooled.path.unlink(missing_ok=True)
    else:
        async with receive_form(
            request.stream(),
            request.headers.get("content-type", ""),
            fields=_FIELDS,
            file_limit=service.max_upload_bytes,
            directory=service.spool_dir,
        ) as form:
            if form.file is None:
                raise InvalidInput("the form has no file: send it as the field 'file'", field="file")
            fields = PublishForm.of(form.fields)
            command = PublishVersion(
                dataset=name,
                source=form.file.path,
                upload_sha256=form.file.sha256,
                filename=form.file.filename,
                target=fields.target,
                time_column=fields.time_column,
                description=fields.description,
                contract=fields.contract,
                publisher=actor,
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
async def get_version(service: Service, name: str, version: PositiveInt32) -> DatasetVersionDetail:
    """One version with its schema contract, column profile and validation report."""
    async with service.store.transaction() as unit:
        return await unit.version(name, version)


@router.get("/v1/datasets/{name}/versions/{version}/contract")
async def get_version_contract(service: Service, name: str, version: PositiveInt32) -> DatasetContract:
    """The schema contract of one version (404 for a rejected version: it has none)."""
    return await read_contract(service.store, name, version)


@router.get("/v1/datasets/{name}/contract")
async def get_contract(service: Service, name: str) -> DatasetContract:
    """The schema contract of the newest published version: what the next version is compared with."""
    return await read_contract(service.store, name)


@router.get("/v1/datasets/{name}/diff")
async def diff(
    service: Service,
    name: str,
    before: Annotated[PositiveInt32, Query(alias="from", description="earlier version")],
    after: Annotated[PositiveInt32, Query(alias="to", description="later version")],
) -> ContractDiff:
    """How the schema contract changed from one version to another."""
    return await read_diff(service.store, name, before, after)


@router.get(REFERENCES_PATH, tags=["artifacts"])
async def artifact_references(service: Service) -> ArtifactReferences:
    """The artifacts ingest needs kept (artifact retention): every published version's snapshot and contract."""
    async with service.store.transaction() as unit:
        return await unit.artifact_references()


@router.get("/v1/datasets/{name}/policy")
async def get_policy(service: Service, name: str) -> DatasetPolicy:
    """The check thresholds the dataset's next versions are judged with, and which of them it overrides."""
    return await service.publisher.dataset_policy(name)


@router.put(
    "/v1/datasets/{name}/policy",
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "CheckPolicy fields to override, each replaced whole; {} restores the defaults",
            "content": {
                "application/json": {
                    "schema": CheckPolicy.model_json_schema(ref_template="#/components/schemas/{model}")
                }
            },
        }
    },
)
async def put_policy(
    service: Service, name: str, overrides: Annotated[dict[str, Any], Body()], actor: Actor
) -> DatasetPolicy:
    """Replace the dataset's threshold overrides (422 naming the field); recorded versions keep their reports."""
    return await service.publisher.set_dataset_policy(name, overrides, actor)
