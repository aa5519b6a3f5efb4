"""Ingest's records as they leave its store and its API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from mloop_common.datacontract import ColumnType, DatasetContract
from mloop_ingest.checks import CheckPolicy, Report

VersionStatus = Literal["published", "rejected"]


class NumericSummary(BaseModel):
    """A numeric column: moments, quartiles and how many values lie outside the outlier fences."""

    missing: int
    distinct: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    q1: float | None = None
    median: float | None = None
    q3: float | None = None
    outliers: int = 0


class DatetimeSummary(BaseModel):
    missing: int
    distinct: int
    first: str | None
    last: str | None


class CategoricalSummary(BaseModel):
    """A text or boolean column: its ten most frequent values."""

    missing: int
    distinct: int
    top: dict[str, int]


ColumnSummary = NumericSummary | DatetimeSummary | CategoricalSummary


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
    parent_version: int | None = Field(None, description="the published version this one was compared with")
    publisher: str | None = Field(None, description="who published it: the holder of the API key that sent it")
    source_uri: str | None = Field(None, description="the URI it was registered from; null for an upload")
    created_at: datetime | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def sha256(self) -> str | None:
        """sha256 of the stored snapshot, the digest data.published and the lineage carry."""
        return self.snapshot_sha256


class DatasetVersionDetail(DatasetVersion):
    """A version with its schema contract, column types and profile (contract null, others empty when rejected)."""

    # Called "schema" in the API and the table; a pydantic field may not be named so.
    column_types: dict[str, ColumnType] = Field(serialization_alias="schema")
    profile: dict[str, ColumnSummary]
    contract: DatasetContract | None = None
    labels: dict[str, int] | None = Field(None, description="count of each target value, if the target is a label")

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
        failed = [c.message for c in version.report.failures()]
        return cls(**dict(version), error=RejectionError(message="; ".join(failed)))


class VersionList(BaseModel):
    versions: list[DatasetVersion]


class DatasetSummary(BaseModel):
    name: str
    versions: int = Field(description="how many versions, rejected ones included")
    latest_published: int | None


class DatasetList(BaseModel):
    datasets: list[DatasetSummary]


class PolicyOverrides(BaseModel):
    """The check thresholds one dataset sets over the service's defaults, as stored."""

    overrides: dict[str, Any] = Field(description="CheckPolicy fields this dataset replaces, each whole")
    updated_by: str | None = None
    updated_at: datetime | None = None


class DatasetPolicy(PolicyOverrides):
    """A dataset's policy: its overrides and the thresholds its next versions are checked with."""

    dataset: str
    effective: CheckPolicy
