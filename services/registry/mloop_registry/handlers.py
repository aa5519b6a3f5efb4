"""Registry use cases: each runs in one unit of work, and stages the events it causes in the same transaction."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Gauge

from mloop_common.contracts import (
    PRODUCTION,
    AliasView,
    AuditPage,
    AuditVerification,
    LineageView,
    ModelList,
    ModelSummary,
    RegisterVersion,
    SpecRef,
    SpecView,
    Tags,
    VersionDetail,
    VersionList,
    VersionSearchPage,
    VersionView,
)
from mloop_common.errors import Conflict, InvalidInput, NotFound
from mloop_common.events import (
    Envelope,
    ModelPromoted,
    ModelRegistered,
    ModelRollout,
    ModelServed,
    SpecChanged,
    new_event,
)
from mloop_common.retry import Backoff, retry_call
from mloop_common.spec import ModelSpec, PromotionPolicy, SpecLimits, check_limits, spec_digest
from mloop_common.uow import Store
from mloop_registry.audit_chain import ChainedEntry, verify_chain
from mloop_registry.entities import ModelStatus, ServingReport, Version
from mloop_registry.policy import (
    ROLLOUT_ALIASES,
    canary_share,
    check_alias_name,
    check_clearable,
    governing_policy,
    initial_status,
    is_label,
    may_hold_alias,
    may_promote,
    move_reason,
    release_alias,
)
from mloop_registry.search import SearchError, parse_query
from mloop_registry.store import RegistryUnit
from mloop_registry.tags import check_tags

SOURCE = "mloop/registry"
T = TypeVar("T")
_CHAIN_PAGE = 5000  # audit entries read per query while verifying the chain
# For the "model stale" alert. Each registry process knows the moves it made and, from its start, the table's.
PRODUCTION_SINCE = Gauge(
    "mloop_registry_production_since_timestamp_seconds",
    "When each model's production alias last moved (Unix time)",
    ["model"],
)


class ModelRegistry:
    """Specs, versions, aliases and approvals; its store is passed in by the composition root (or a test)."""

    def __init__(self, *, store: Store[RegistryUnit], limits: SpecLimits | None = None) -> None:
        self.store = store
        self.limits = limits or SpecLimits()

    # --- commands ---------------------------------------------------------------------------

    async def load_metrics(self) -> None:
        """Set the gauges that describe stored state, at start."""
        async with self.store.transaction() as unit:
            moved = await unit.alias_moved_at(PRODUCTION)
        for model, at in moved.items():
            PRODUCTION_SINCE.labels(model).set(at.timestamp())

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
            # The trainer trains it on the dataset's newest version now, not at the next publication.
            changed = SpecChanged(
                model=spec.name, spec_version=stored.spec_version, spec_digest=digest, dataset=spec.dataset
            )
            await unit.stage(new_event(changed, source=SOURCE, subject=spec.name))
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
                alias = release_alias(policy, await unit.alias(name, PRODUCTION))
                await _move_alias(unit, version, alias, reason="policy", actor=actor, cause=registered)
            return version.view(await unit.aliases(name)), True

    async def move_alias(self, name: str, alias: str, version: int, actor: str) -> AliasView:
        """Point ``alias`` at ``version``: a promotion, or a rollback when the version is older."""
        check_alias_name(alias)
        async with self.store.transaction() as unit:
            target = await unit.version(name, version)
            current = await unit.alias(name, alias, for_update=True)
            await _move_alias(unit, target, alias, reason=move_reason(current, version), actor=actor)
            return target.as_alias(alias, await unit.aliases(name))

    async def clear_alias(self, name: str, alias: str, actor: str) -> None:
        """Take a rollout alias off its version (a canary or shadow rolled back: serving stops hosting it), or
        a label off its version."""
        check_clearable(alias)
        async with self.store.transaction() as unit:
            previous = await unit.alias(name, alias, for_update=True)
            if previous is None:
                raise NotFound(f"model {name!r} has no {alias!r} alias")
            reason = "removed" if is_label(alias) else "rollback"
            await _clear_alias(unit, name, alias, previous, reason=reason, actor=actor)

    async def on_model_served(self, served: ModelServed, event: Envelope) -> None:
        """Remember what a serving instance made of an alias: the version it loaded, or why it could not."""
        async with self.store.transaction() as unit:
            if not await unit.claim(event):
                return
            if await unit.model(served.model) is None:
                return  # a model this registry does not know (another deployment's topic): nothing to attach it to
            await unit.report_serving(
                ServingReport(
                    model=served.model,
                    instance=served.instance,
                    alias=served.alias,
                    version=served.version,
                    loaded=served.loaded,
                    error=served.error,
                    serving_version=served.serving_version,
                    at=event.time,
                )
            )

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
                policy = await _policy_of(unit, decided)
                alias = release_alias(policy, await unit.alias(name, PRODUCTION))
                await _move_alias(unit, decided, alias, reason="approval", actor=actor)
            return decided.view(await unit.aliases(name))

    async def set_tags(self, name: str, version: int | None, tags: dict[str, str], actor: str) -> Tags:
        """Set tags (others stay) on a model, or on one of its versions; answers with all its tags."""
        async with self.store.transaction() as unit:
            await _lock_target(unit, name, version)
            check_tags(tags, await unit.tags(name, version))
            await unit.set_tags(name, version, tags)
            await unit.audit(actor=actor, action="tags.set", model=name, version=version, detail={"tags": tags})
            return Tags(tags=await unit.tags(name, version))

    async def delete_tag(self, name: str, version: int | None, key: str, actor: str) -> None:
        """Remove one tag from a model or version; NotFound when it has no such tag."""
        async with self.store.transaction() as unit:
            await _lock_target(unit, name, version)
            if not await unit.delete_tag(name, version, key):
                raise NotFound(f"{_target(name, version)} has no tag {key!r}")
            await unit.audit(actor=actor, action="tag.deleted", model=name, version=version, detail={"key": key})

    async def describe(self, name: str, version: int | None, description: str, actor: str) -> None:
        """Replace the description of a model or version."""
        async with self.store.transaction() as unit:
            await _lock_target(unit, name, version)
            await unit.set_description(name, version, description)
            await unit.audit(
                actor=actor, action="description.set", model=name, version=version, detail={"description": description}
            )

    # --- queries ----------------------------------------------------------------------------

    async def search(self, query: str, *, limit: int, offset: int) -> VersionSearchPage:
        """Versions matching ``query`` (grammar: mloop_registry.search), by model and version; one page."""
        try:
            tree = parse_query(query)
        except SearchError as exc:
            raise InvalidInput(str(exc), field="q") from exc
        async with self.store.transaction() as unit:
            found = await unit.search_versions(tree, limit=limit + 1, offset=offset)
            views = [v.view(await unit.aliases(v.model)) for v in found[:limit]]
        return VersionSearchPage(versions=views, next_offset=offset + limit if len(found) > limit else None)

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

    async def model(self, name: str, spec_version: int | None) -> ModelStatus:
        """A model's spec (the latest, or ``spec_version``), aliases, number of versions and serving's reports."""
        async with self.store.transaction() as unit:
            found = await unit.model(name)
            if found is None:
                raise NotFound(f"model {name!r} does not exist")
            spec = await unit.spec(name, spec_version)
            aliases = await unit.aliases(name)
            # A cleared alias's reports are history, not state: only those of aliases still set are shown.
            reports = [r for r in await unit.serving_reports(name) if r.alias in aliases]
            return ModelStatus(
                **dict(spec),
                description=found.description,
                tags=await unit.tags(name, None),
                aliases=aliases,
                versions=len(await unit.versions(name)),
                serving=reports,
                problems=serving_problems(aliases, reports),
            )

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

    async def verify_audit(self) -> AuditVerification:
        """Walk the whole audit chain in id order, page by page, and say where it first breaks, if it does."""
        async with self.store.transaction() as unit:
            entries: list[ChainedEntry] = []
            while page := await unit.audit_chain(after_id=entries[-1].id if entries else 0, limit=_CHAIN_PAGE):
                entries.extend(page)
        return AuditVerification.model_validate(verify_chain(entries).model_dump())


def serving_problems(aliases: dict[str, int], reports: list[ServingReport]) -> list[str]:
    """One line per serving instance that failed to load the version an alias still names."""
    return [
        f"{r.instance} failed to load {r.alias} v{r.version} ({r.error}); "
        + (f"serving v{r.serving_version}" if r.serving_version is not None else f"{r.alias} not served there")
        for r in reports
        if not r.loaded and aliases.get(r.alias) == r.version
    ]


def _target(name: str, version: int | None) -> str:
    return f"model {name!r}" if version is None else f"{name} v{version}"


async def _lock_target(unit: RegistryUnit, name: str, version: int | None) -> None:
    """Hold the row of the model or version being annotated (NotFound when there is none)."""
    if version is not None:
        await unit.version(name, version, for_update=True)
    elif await unit.model(name, for_update=True) is None:
        raise NotFound(f"model {name!r} does not exist")


async def _policy_of(unit: RegistryUnit, version: Version) -> PromotionPolicy:
    run_spec = await unit.spec(version.model, version.spec_version)
    return governing_policy(run_spec.spec.promotion, (await unit.spec(version.model)).spec.promotion)


async def _move_alias(
    unit: RegistryUnit, version: Version, alias: str, *, reason: str, actor: str, cause: Envelope | None = None
) -> None:
    """Point ``alias`` at ``version`` and announce it (model.promoted for production, else model.rollout).

    Where it already points, nothing happens. A version becoming production leaves its rollout aliases.
    """
    if not is_label(alias) and not may_hold_alias(version.status):
        raise Conflict(f"{version.model} v{version.version} is {version.status} and cannot become {alias}")
    share = canary_share(alias, await _policy_of(unit, version))
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
    if is_label(alias):
        return  # a name for people and tools: serving hosts no label
    if alias != PRODUCTION:
        rollout = ModelRollout(
            model=version.model,
            alias=alias,
            version=version.version,
            previous_version=previous,
            reason=reason,
            canary_percent=share,
        )
        await unit.stage(new_event(rollout, source=SOURCE, subject=version.model, cause=cause))
        return
    PRODUCTION_SINCE.labels(version.model).set(time.time())
    for rollout_alias in ROLLOUT_ALIASES:
        if await unit.alias(version.model, rollout_alias, for_update=True) == version.version:
            await _clear_alias(unit, version.model, rollout_alias, version.version, reason="promoted", actor=actor)
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


async def _clear_alias(unit: RegistryUnit, model: str, alias: str, previous: int, *, reason: str, actor: str) -> None:
    await unit.clear_alias(model, alias)
    await unit.audit(
        actor=actor,
        action="alias.cleared",
        model=model,
        version=previous,
        detail={"alias": alias, "reason": reason},
    )
    if is_label(alias):
        return
    cleared = ModelRollout(model=model, alias=alias, version=None, previous_version=previous, reason=reason)
    await unit.stage(new_event(cleared, source=SOURCE, subject=model))


# The loser of a race (two first submissions of one model, or two registrations of one run) gets a
# Conflict and its unit rolls back; run again, it sees the winner's committed row and answers with it.
_AT_ONCE = Backoff(initial=0.0, maximum=0.0)


async def _after_a_lost_race(action: Callable[[], Awaitable[T]], what: str) -> T:
    return await retry_call(
        action, what=what, backoff=_AT_ONCE, attempts=2, retry_if=lambda exc: isinstance(exc, Conflict)
    )
