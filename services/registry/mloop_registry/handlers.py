"""Registry use cases: each runs in the caller's unit of work and stages its events in the outbox."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from mloop_common.db import enqueue
from mloop_common.errors import Conflict, InvalidInput
from mloop_common.events import ArtifactPointer, ModelPromoted, ModelRegistered, new_event
from mloop_common.spec import ModelSpec, spec_digest
from mloop_registry import store
from mloop_registry.policy import initial_status, may_promote

SOURCE = "mloop/registry"
PRODUCTION = "production"


class RegisterVersion(BaseModel):
    """What the validator sends for a candidate that passed its checks."""

    model_config = ConfigDict(extra="forbid")
    run_id: str = Field(min_length=1, max_length=64)
    evaluation_id: str = Field(min_length=1, max_length=64)
    spec_version: int = Field(ge=1)
    task: str
    artifact: ArtifactPointer
    profile: ArtifactPointer
    features: list[str]
    metrics: dict[str, float]
    lineage: dict[str, Any]
    correlation_id: str | None = None
    causation_id: str | None = None


async def create_spec(session: AsyncSession, spec: ModelSpec, actor: str) -> tuple[dict[str, Any], bool]:
    """Store a spec; one identical to the latest returns it and False (an older one comes back as new)."""
    body = spec.model_dump(mode="json", by_alias=True)
    digest = spec_digest(spec)
    await store.get_model(session, spec.name, for_update=True)  # serialise concurrent submissions of one model
    latest = await store.latest_spec(session, spec.name)
    if latest is not None and latest["digest"] == digest:
        return latest, False
    spec_version = await store.add_spec(session, spec.name, spec.dataset, digest, body)
    await store.audit(
        session,
        actor=actor,
        action="spec.created",
        model=spec.name,
        version=None,
        detail={"spec_version": spec_version, "digest": digest},
    )
    return await store.get_spec(session, spec.name, spec_version), True


async def register_version(
    session: AsyncSession, name: str, request: RegisterVersion, actor: str
) -> tuple[dict[str, Any], bool]:
    """Record a new model version (idempotent per run) and promote it when policy allows."""
    existing = await store.version_by_run(session, name, request.run_id)
    if existing is not None:
        return existing, False
    spec = ModelSpec.model_validate((await store.get_spec(session, name, request.spec_version))["body"])
    version = await store.allocate_version(session, name)
    status = initial_status(spec.promotion)
    await store.add_version(
        session,
        {
            "model": name,
            "version": version,
            "run_id": request.run_id,
            "evaluation_id": request.evaluation_id,
            "spec_version": request.spec_version,
            "status": status,
            "task": request.task,
            "artifact_uri": request.artifact.uri,
            "artifact_sha256": request.artifact.sha256,
            "profile_uri": request.profile.uri,
            "profile_sha256": request.profile.sha256,
            "features": request.features,
            "metrics": request.metrics,
            "lineage": request.lineage,
        },
    )
    await store.audit(
        session,
        actor=actor,
        action="version.registered",
        model=name,
        version=version,
        detail={"run_id": request.run_id, "status": status, "metrics": request.metrics},
    )
    ids = {"correlation_id": request.correlation_id, "causation_id": request.causation_id}
    registered = new_event(
        ModelRegistered(
            model=name,
            version=version,
            run_id=request.run_id,
            evaluation_id=request.evaluation_id,
            task=request.task,
            artifact=request.artifact,
            profile=request.profile,
            features=request.features,
            metrics=request.metrics,
            requires_approval=spec.promotion.require_approval,
        ),
        source=SOURCE,
        subject=name,
        **ids,
    )
    await enqueue(session, registered)
    if may_promote(status, spec.promotion):
        await promote(
            session,
            name,
            version,
            reason="policy",
            actor=actor,
            correlation_id=registered.correlationid,
            causation_id=registered.id,
        )
    return await store.get_version(session, name, version), True


async def promote(
    session: AsyncSession,
    name: str,
    version: int,
    *,
    reason: str,
    actor: str,
    alias: str = PRODUCTION,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> dict[str, Any]:
    """Point ``alias`` at ``version`` and announce it; pointing it where it already is changes nothing."""
    row = await store.get_version(session, name, version)
    if row["status"] in ("pending_approval", "rejected"):
        raise Conflict(f"{name} v{version} is {row['status']} and cannot become {alias}")
    previous = await store.get_alias(session, name, alias, for_update=True)
    if previous == version:
        return row
    await store.set_alias(session, name, alias, version)
    await store.audit(
        session,
        actor=actor,
        action="alias.moved",
        model=name,
        version=version,
        detail={"alias": alias, "previous_version": previous, "reason": reason},
    )
    spec = ModelSpec.model_validate((await store.get_spec(session, name, row["spec_version"]))["body"])
    if alias == PRODUCTION:
        await enqueue(
            session,
            new_event(
                ModelPromoted(
                    model=name,
                    version=version,
                    alias=alias,
                    previous_version=previous,
                    reason=reason,
                    task=row["task"],
                    target=spec.target,
                    artifact=ArtifactPointer(uri=row["artifact_uri"], sha256=row["artifact_sha256"]),
                    profile=ArtifactPointer(uri=row["profile_uri"], sha256=row["profile_sha256"]),
                    features=row["features"],
                    metrics=row["metrics"],
                    drift_window=spec.drift.window,
                    cooldown_windows=spec.drift.cooldown_windows,
                ),
                source=SOURCE,
                subject=name,
                correlation_id=correlation_id,
                causation_id=causation_id,
            ),
        )
    return row


async def decide_approval(
    session: AsyncSession, name: str, version: int, *, approve: bool, comment: str, actor: str
) -> dict[str, Any]:
    """An approver's verdict on a version waiting for one; approval promotes it."""
    row = await store.get_version(session, name, version, for_update=True)
    if row["status"] != "pending_approval":
        raise Conflict(f"{name} v{version} is {row['status']}, not waiting for approval")
    status = "approved" if approve else "rejected"
    await store.set_status(session, name, version, status)
    await store.audit(
        session, actor=actor, action=f"version.{status}", model=name, version=version, detail={"comment": comment}
    )
    if approve:
        await promote(session, name, version, reason="approval", actor=actor)
    return await store.get_version(session, name, version)


def check_alias_name(alias: str) -> None:
    if alias not in (PRODUCTION, "challenger"):
        raise InvalidInput(f"unknown alias {alias!r}: use 'production' or 'challenger'", field="alias")
