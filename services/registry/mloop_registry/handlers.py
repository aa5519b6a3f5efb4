"""Registry use cases: each runs in one unit of work, and stages the events it causes in the same transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from mloop_common.contracts import (
    PRODUCTION,
    AliasView,
    AuditPage,
    LineageView,
    ModelDetail,
    ModelList,
    ModelSummary,
    RegisterVersion,
    SpecRef,
    SpecView,
    VersionDetail,
    VersionList,
    VersionView,
)
from mloop_common.errors import Conflict, NotFound
from mloop_common.events import Envelope, ModelPromoted, ModelRegistered, new_event
from mloop_common.retry import Backoff, retry_call
from mloop_common.spec import ModelSpec, SpecLimits, check_limits, spec_digest
from mloop_common.uow import Store
from mloop_registry.entities import Version
from mloop_registry.policy import (
    check_alias_name,
    governing_policy,
    initial_status,
    may_hold_alias,
    may_promote,
    move_reason,
)
from mloop_registry.store import RegistryUnit

SOURCE = "mloop/registry"
T = TypeVar("T")


class ModelRegistry:
    """Specs, versions, aliases and approvals; its store is passed in by the composition root (or a test)."""

    def __init__(self, *, store: Store[RegistryUnit], limits: SpecLimits | None = None) -> None:
        self.store = store
        self.limits = limits or SpecLimits()

    # --- commands ---------------------------------------------------------------------------

    async def submit_spec(self, spec: ModelSpec, actor: str) -> tuple[SpecView, bool]:
        """Store a spec: (its spec version, True), or (the latest, False) when that one is identical.

        Resubmitting an older spec makes it the latest again, as a new spec version. A spec asking
        for more work than the limits allow is refused (InvalidInput naming the field).
        """
        check_limits(spec, self.limits)
        return await _after_a_lost_race(lambda: self._submit_spec(spec, actor), f"spec of {spec.name}")

    async def _submit_spec(self, spec: ModelSpec, actor: str) -> tuple[SpecView, bool]:
        digest = spec_digest(spec)
        async with self.store.transaction() as unit:
            model = await unit.model(spec.name, for_update=True)  # serialises submissions for one model
            if model is None:
                spec_version = 1  # if a concurrent first submission wins, storing it is a Conflict
            else:
                latest = await unit.spec(spec.name, model.latest_spec_version)
                if latest.digest == digest:
                    return latest, False
                spec_version = model.latest_spec_version + 1
            stored = await unit.add_spec(spec, digest, spec_version)
            await unit.audit(
                actor=actor,
                action="spec.created",
                model=spec.name,
                version=None,
                detail={"spec_version": stored.spec_version, "digest": digest},
            )
            return stored, True

    async def register(self, name: str, request: RegisterVersion, actor: str) -> tuple[VersionView, bool]:
        """Record a validated candidate as a new version (True), or return the one its run already has (False).

        Emits model.registered, and model.promoted when the spec's policy lets the version go
        straight to production.
        """
        return await _after_a_lost_race(lambda: self._register(name, request, actor), f"{name} run {request.run_id}")

    async def _register(self, name: str, request: RegisterVersion, actor: str) -> tuple[VersionView, bool]:
        async with self.store.transaction() as unit:
            existing = await unit.version_by_run(name, request.run_id)
            if existing is not None:
                return existing.view(await unit.aliases(name)), False
            # Allocating the number locks the model's row first, which orders this registration with
            # spec submissions: a spec stored before it commits is the current one read below.
            number = await unit.allocate_version(name)
            # The run's spec version comes from the caller: it must exist, but it can only tighten the
            # rules of the model's current spec, never loosen them.
            run_spec = (await unit.spec(name, request.spec_version)).spec
            current = await unit.spec(name)
            policy = governing_policy(run_spec.promotion, current.spec.promotion)
            status = initial_status(policy)
            version = await unit.add_version(
                Version(
                    model=name,
                    version=number,
                    run_id=request.run_id,
                    evaluation_id=request.evaluation_id,
                    spec_version=request.spec_version,
                    status=status,
                    task=request.task,
                    artifact=request.artifact,
                    profile=request.profile,
                    features=request.features,
                    metrics=request.metrics,
                    lineage=request.lineage,
                )
            )
            await unit.audit(
                actor=actor,
                action="version.registered",
                model=name,
                version=version.version,
                detail={
                    "run_id": request.run_id,
                    "status": status,
                    "metrics": request.metrics,
                    "policy": {
                        "run_spec_version": request.spec_version,
                        "current_spec_version": current.spec_version,
                        "require_approval": policy.require_approval,
                        "canary_percent": policy.canary_percent,
                    },
                },
            )
            registered = new_event(
                ModelRegistered(
                    model=name,
                    version=version.version,
                    run_id=version.run_id,
                    evaluation_id=version.evaluation_id,
                    task=version.task,
                    artifact=version.artifact,
                    profile=version.profile,
                    features=version.features,
                    metrics=version.metrics,
                    requires_approval=policy.require_approval,
                ),
                source=SOURCE,
                subject=name,
                correlation_id=request.correlation_id,
                causation_id=request.causation_id,
            )
            await unit.stage(registered)
            if may_promote(status, policy):
                await _move_alias(unit, version, PRODUCTION, reason="policy", actor=actor, cause=registered)
            return version.view(await unit.aliases(name)), True

    async def move_alias(self, name: str, alias: str, version: int, actor: str) -> AliasView:
        """Point ``alias`` at ``version``: a promotion, or a rollback when the version is older."""
        check_alias_name(alias)
        async with self.store.transaction() as unit:
            target = await unit.version(name, version)
            current = await unit.alias(name, alias, for_update=True)
            await _move_alias(unit, target, alias, reason=move_reason(current, version), actor=actor)
            return target.as_alias(alias, await unit.aliases(name))

    async def decide(self, name: str, version: int, *, approve: bool, comment: str, actor: str) -> VersionView:
        """An approver's verdict on a version waiting for one; an approved version becomes production."""
        async with self.store.transaction() as unit:
            pending = await unit.version(name, version, for_update=True)
            if pending.status != "pending_approval":
                raise Conflict(f"{name} v{version} is {pending.status}, not waiting for approval")
            decided = pending.model_copy(update={"status": "approved" if approve else "rejected"})
            await unit.set_status(name, version, decided.status)
            await unit.audit(
                actor=actor,
                action=f"version.{decided.status}",
                model=name,
                version=version,
                detail={"comment": comment},
            )
            if approve:
                await _move_alias(unit, decided, PRODUCTION, reason="approval", actor=actor)
            return decided.view(await unit.aliases(name))

    # --- queries ----------------------------------------------------------------------------

    async def models(self, dataset: str | None) -> ModelList:
        """Every model (or those trained from ``dataset``) with its latest spec and aliases."""
        async with self.store.transaction() as unit:
            summaries = []
            for model in await unit.models(dataset):
                spec = await unit.spec(model.name)
                summaries.append(
                    ModelSummary(**dict(spec), dataset=model.dataset, aliases=await unit.aliases(model.name))
                )
            return ModelList(models=summaries)

    async def model(self, name: str, spec_version: int | None) -> ModelDetail:
        """A model's spec (the latest, or ``spec_version``), its aliases and its number of versions."""
        async with self.store.transaction() as unit:
            if await unit.model(name) is None:
                raise NotFound(f"model {name!r} does not exist")
            spec = await unit.spec(name, spec_version)
            return ModelDetail(**dict(spec), aliases=await unit.aliases(name), versions=len(await unit.versions(name)))

    async def versions(self, name: str) -> VersionList:
        """Every version of a model, oldest first."""
        async with self.store.transaction() as unit:
            if await unit.model(name) is None:
                raise NotFound(f"model {name!r} does not exist")
            aliases = await unit.aliases(name)
            return VersionList(versions=[v.view(aliases) for v in await unit.versions(name)])

    async def version(self, name: str, version: int) -> VersionDetail:
        """One version with its lineage and aliases."""
        async with self.store.transaction() as unit:
            found = await unit.version(name, version)
            return found.detail(await unit.aliases(name))

    async def alias(self, name: str, alias: str) -> AliasView:
        """The version ``alias`` points at; NotFound when it is not set."""
        async with self.store.transaction() as unit:
            version = await unit.alias(name, alias)
            if version is None:
                raise NotFound(f"model {name!r} has no {alias!r} alias")
            found = await unit.version(name, version)
            return found.as_alias(alias, await unit.aliases(name))

    async def lineage(self, name: str, version: int) -> LineageView:
        """Where a version came from: its run, evaluation, artifact, spec, data and code."""
        async with self.store.transaction() as unit:
            found = await unit.version(name, version)
            spec = await unit.spec(name, found.spec_version)
        return LineageView(
            **dict(found.lineage),
            model=name,
            version=version,
            run_id=found.run_id,
            evaluation_id=found.evaluation_id,
            artifact=found.artifact,
            spec=SpecRef(version=spec.spec_version, digest=spec.digest),
        )

    async def audit(self, *, model: str | None, limit: int, before_id: int | None) -> AuditPage:
        """The audit log, newest first."""
        async with self.store.transaction() as unit:
            return AuditPage(entries=await unit.audit_entries(model=model, limit=limit, before_id=before_id))


async def _move_alias(
    unit: RegistryUnit, version: Version, alias: str, *, reason: str, actor: str, cause: Envelope | None = None
) -> None:
    """Point ``alias`` at ``version`` and, for production, announce it; where it already points, nothing happens."""
    if not may_hold_alias(version.status):
        raise Conflict(f"{version.model} v{version.version} is {version.status} and cannot become {alias}")
    previous = await unit.alias(version.model, alias, for_update=True)
    if previous == version.version:
        return
    await unit.set_alias(version.model, alias, version.version)
    await unit.audit(
        actor=actor,
        action="alias.moved",
        model=version.model,
        version=version.version,
        detail={"alias": alias, "previous_version": previous, "reason": reason},
    )
    if alias != PRODUCTION:
        return  # only production is served; other aliases are bookkeeping
    spec = (await unit.spec(version.model, version.spec_version)).spec
    promoted = ModelPromoted(
        model=version.model,
        version=version.version,
        alias=alias,
        previous_version=previous,
        reason=reason,
        task=version.task,
        target=spec.target,
        artifact=version.artifact,
        profile=version.profile,
        features=version.features,
        metrics=version.metrics,
        drift_window=spec.drift.window,
        cooldown_windows=spec.drift.cooldown_windows,
        drift_policy=spec.drift.model_dump(mode="json"),
        metric=spec.metric,
        time_column=spec.time_column,
    )
    await unit.stage(new_event(promoted, source=SOURCE, subject=version.model, cause=cause))


# The loser of a race (two first submissions of one model, or two registrations of one run) gets a
# Conflict and its unit rolls back; run again, it sees the winner's committed row and answers with it.
_AT_ONCE = Backoff(initial=0.0, maximum=0.0)


async def _after_a_lost_race(action: Callable[[], Awaitable[T]], what: str) -> T:
    return await retry_call(
        action, what=what, backoff=_AT_ONCE, attempts=2, retry_if=lambda exc: isinstance(exc, Conflict)
    )
