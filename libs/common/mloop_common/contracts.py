"""The registry's HTTP contract: what it answers and what it accepts, shared by the registry and its clients.

The registry routes declare these as response models (so OpenAPI documents them) and
``RegistryClient`` returns them, so a field renamed on one side fails type checks and tests
on the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mloop_common.events import CANARY as CANARY  # alias names live with the events; re-exported
from mloop_common.events import CHALLENGER as CHALLENGER
from mloop_common.events import PRODUCTION as PRODUCTION
from mloop_common.events import SHADOW as SHADOW
from mloop_common.events import ArtifactPointer
from mloop_common.spec import ModelSpec, Task

VersionStatus = Literal["registered", "pending_approval", "approved", "rejected"]

# PostgreSQL integers are 32-bit: a bigger version number is refused at the edge, not by the database.
MAX_INT = 2**31 - 1
# A version number or row id as a path, query or body value: out of range is a 422 naming it, never a 500.
PositiveInt32 = Annotated[int, Field(ge=1, le=MAX_INT)]
MAX_BIGINT = 2**63 - 1  # a BIGINT column's (an audit entry's id)


class Contract(BaseModel):
    # Tolerant reader: a field added by a newer registry must not break an older client.
    model_config = ConfigDict(extra="ignore")


class SpecView(Contract):
    """One stored version of a model spec."""

    name: str
    spec_version: int
    digest: str
    spec: ModelSpec
    created_at: datetime


class ModelSummary(SpecView):
    """A model with its latest spec and where its aliases point."""

    dataset: str
    aliases: dict[str, int]


class ModelList(Contract):
    models: list[ModelSummary]


class ModelDetail(SpecView):
    """A model: the requested (default latest) spec, its aliases and how many versions it has."""

    aliases: dict[str, int]
    versions: int
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)  # a plain label has the value ""


class VersionView(Contract):
    """A registered model version: what serving loads and drift watches."""

    model: str
    version: int
    run_id: str
    evaluation_id: str
    spec_version: int
    status: VersionStatus
    task: Task
    features: list[str]
    metrics: dict[str, float]
    artifact: ArtifactPointer
    profile: ArtifactPointer
    created_at: datetime
    aliases: list[str] = Field(default_factory=list)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)  # a plain label has the value ""


class VersionList(Contract):
    versions: list[VersionView]


class VersionSearchPage(Contract):
    """One page of ``GET /v1/search/versions``; ask again with ``offset=next_offset`` while it is set."""

    versions: list[VersionView]
    next_offset: int | None


class Tags(BaseModel):
    """Tags of a model or version; as a request, those to set (others stay): ``{"team": "fraud", "gold": ""}``."""

    tags: dict[str, str]


class DescriptionUpdate(BaseModel):
    description: str = Field(max_length=4000)


class Lineage(Contract):
    """Where a version came from: data, code, run and the evaluation that let it in."""

    dataset: str
    dataset_version: int
    dataset_sha256: str
    recent_data_sha256: str | None = None
    trigger: Literal["data.published", "drift.detected", "spec.changed"]
    code_version: str
    estimator_class: str
    params: dict[str, Any]
    seed: int
    training_seconds: float
    trained_event_id: str
    correlation_id: str
    champion_version: int | None = None


class VersionDetail(VersionView):
    lineage: Lineage


class AliasView(VersionView):
    alias: str


class SpecRef(Contract):
    version: int
    digest: str


class LineageView(Lineage):
    """A version's full lineage, from its artifact back to the dataset snapshot and code."""

    model: str
    version: int
    run_id: str
    evaluation_id: str
    artifact: ArtifactPointer
    spec: SpecRef


class AuditEntry(Contract):
    id: int
    at: datetime
    actor: str
    action: str
    model: str | None
    version: int | None
    detail: dict[str, Any]
    prev_hash: str  # the previous entry's hash: the chain GET /v1/audit/verify walks
    hash: str


class AuditPage(Contract):
    entries: list[AuditEntry]


class AuditVerification(Contract):
    """The audit chain checked: ok, or the first entry that was edited, deleted around or moved, and why."""

    ok: bool
    entries: int  # entries verified before the first bad one (all of them when ok)
    first_bad_id: int | None
    reason: str
    last_hash: str


class RegisterVersion(BaseModel):
    """What the validator sends for a candidate that passed its checks."""

    model_config = ConfigDict(extra="forbid")

    run_id: str = Field(min_length=1, max_length=64)
    evaluation_id: str = Field(min_length=1, max_length=64)
    spec_version: int = Field(ge=1, le=MAX_INT)
    task: Task
    artifact: ArtifactPointer
    profile: ArtifactPointer
    features: list[str] = Field(min_length=1)
    metrics: dict[str, float]
    lineage: Lineage
    correlation_id: str | None = Field(None, max_length=100)
    causation_id: str | None = Field(None, max_length=100)


class AliasUpdate(BaseModel):
    """Point an alias at a version (promote, or roll back to an older one)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=MAX_INT)


class Verdict(BaseModel):
    """An approver's comment on approving or rejecting a version."""

    model_config = ConfigDict(extra="forbid")

    comment: str = Field("", max_length=2000)


# --- API keys ---------------------------------------------------------------------------------------

RoleName = Literal["admin", "data-engineer", "data-scientist", "approver", "app", "viewer"]


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,62}$", description="who or what holds the key")
    role: RoleName


class KeyView(Contract):
    key_id: str
    name: str
    role: str
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None


class NewKeyView(KeyView):
    key: str = Field(description="the key itself: shown this once, never stored")


class KeyList(Contract):
    keys: list[KeyView]


class IntrospectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=200)


class Introspection(Contract):
    """Who a key belongs to; ``active: false`` for a key nobody issued or one revoked."""

    active: bool
    name: str | None = None
    role: str | None = None
    key_id: str | None = None
