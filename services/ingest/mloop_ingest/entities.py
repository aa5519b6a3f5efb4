"""Ingest's records as they leave its store and its API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, computed_field

from mloop_ingest.checks import ColumnSummary, ColumnType, Report

VersionStatus = Literal["published", "rejected"]


class DatasetVersion(BaseModel):
    """One upload of a dataset: published (with its Parquet snapshot) or rejected (with the failed checks)."""

    dataset: str
    version: int
    status: VersionStatus
    upload_sha256: str = Field(description="sha256 of the uploaded bytes: the same bytes again are this version")
    snapshot_uri: str | None
    snapshot_sha256: str | None
    rows: int
    columns: list[str]
    report: Report
    target: str
    time_column: str | None
    description: str | None
    created_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sha256(self) -> str | None:
        """sha256 of the stored snapshot, the digest data.published and the lineage carry."""
        return self.snapshot_sha256


class DatasetVersionDetail(DatasetVersion):
    """A version with its column types and column profile (both empty for a rejected version)."""

    # Called "schema" in the API and the table; a pydantic field may not be named so.
    column_types: dict[str, ColumnType] = Field(serialization_alias="schema")
    profile: dict[str, ColumnSummary]

    def summary(self) -> DatasetVersion:
        return DatasetVersion.model_validate({name: getattr(self, name) for name in DatasetVersion.model_fields})


class RejectionError(BaseModel):
    code: Literal["dataset_rejected"] = "dataset_rejected"
    message: str
    field: Literal["file"] = "file"


class RejectedVersion(DatasetVersion):
    """A version recorded as rejected, answered with status 422 and the error beside the version."""

    error: RejectionError

    @classmethod
    def of(cls, version: DatasetVersion) -> RejectedVersion:
        failed = [c.message for c in version.report.checks if c.status == "fail"]
        return cls(**dict(version), error=RejectionError(message="; ".join(failed)))


class VersionList(BaseModel):
    versions: list[DatasetVersion]


class DatasetSummary(BaseModel):
    name: str
    versions: int = Field(description="how many versions, rejected ones included")
    latest_published: int | None


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]
