"""The registry's records as they leave its store; the API answers with their views in mloop_common.contracts."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

from mloop_common.contracts import AliasView, Lineage, ModelDetail, VersionDetail, VersionStatus, VersionView
from mloop_common.events import ArtifactPointer
from mloop_common.spec import Task


class Model(BaseModel):
    """A declared model: its name, the dataset that trains it and its newest spec version."""

    name: str
    dataset: str
    latest_spec_version: int
    created_at: datetime
    description: str = ""


class Version(BaseModel):
    """A registered model version as recorded: artifacts, metrics, status and where it came from."""

    model: str
    version: int
    run_id: str
    evaluation_id: str
    spec_version: int
    status: VersionStatus
    task: Task
    artifact: ArtifactPointer
    profile: ArtifactPointer
    features: list[str]
    metrics: dict[str, float]
    lineage: Lineage
    created_at: datetime | None = None  # set by the database when the version is added
    description: str = ""
    tags: dict[str, str] = {}  # kept in their own table, read with the version

    def view(self, aliases: dict[str, int]) -> VersionView:
        """The version as the API shows it, with the names of the model's ``aliases`` that point at it."""
        return VersionView.model_validate(self._fields(aliases))

    def detail(self, aliases: dict[str, int]) -> VersionDetail:
        """The version with its lineage."""
        return VersionDetail.model_validate({**self._fields(aliases), "lineage": self.lineage})

    def as_alias(self, alias: str, aliases: dict[str, int]) -> AliasView:
        """The version as the target of ``alias``."""
        return AliasView.model_validate({**self._fields(aliases), "alias": alias})

    def _fields(self, aliases: dict[str, int]) -> dict[str, object]:
        pointing_here = sorted(name for name, version in aliases.items() if version == self.version)
        return {**dict(self), "aliases": pointing_here}


class ServingReport(BaseModel):
    """What a serving instance last reported on loading the version an alias names."""

    model: str
    instance: str
    alias: str
    version: int  # the version the alias named when serving tried it
    loaded: bool
    error: str | None = None
    serving_version: int | None = None  # what that instance serves under the alias (an older one after a failure)
    at: datetime


class ModelStatus(ModelDetail):
    """A model as ``GET /v1/models/{name}`` shows it: its spec, aliases, and what serving made of them."""

    serving: list[ServingReport]
    problems: list[str]  # e.g. "serving-1 failed to load production v3 (...); serving v2"


class ApiKey(BaseModel):
    """A stored API key: its hash only; the key itself was shown once, when it was created."""

    key_id: str
    name: str
    role: str
    hash: str
    created_by: str
    created_at: datetime | None = None  # set by the store
    revoked_at: datetime | None = None
