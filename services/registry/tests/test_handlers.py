"""The registry's use cases through a fake of its store (no database, no Kafka); events go through the real codec."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from mloop_common.contracts import CHALLENGER, PRODUCTION, Lineage, RegisterVersion
from mloop_common.errors import Conflict, InvalidInput, NotFound
from mloop_common.events import (
    CANARY,
    SHADOW,
    ArtifactPointer,
    Envelope,
    ModelPromoted,
    ModelRegistered,
    ModelRollout,
    ModelServed,
    SpecChanged,
    new_event,
)
from mloop_common.spec import ModelSpec, spec_digest
from mloop_common.testing import MemoryStore
from mloop_registry.handlers import ModelRegistry

from .fakes import MemoryRegistryUnit, memory_store


def spec(*, target: str = "churned", **promotion: Any) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "churn",
            "dataset": "churn",
            "task": "classification",
            "target": target,
            "estimators": [{"class": "LogisticRegression", "params": {"C": [1.0]}}],
            "metric": "accuracy",
            "promotion": promotion,
        }
    )


def registration(run_id: str | None = None, *, accuracy: float = 0.9) -> RegisterVersion:
    digest = uuid.uuid4().hex * 2
    return RegisterVersion(
        run_id=run_id or uuid.uuid4().hex,
        evaluation_id=uuid.uuid4().hex,
        spec_version=1,
        task="classification",
        artifact=ArtifactPointer(uri=f"artifact:models/{digest[:2]}/{digest}.skops", sha256=digest),
        profile=ArtifactPointer(uri=f"artifact:profiles/{digest[:2]}/{digest}.json", sha256=digest),
        features=["age", "plan"],
        metrics={"accuracy": accuracy},
        lineage=Lineage(
            dataset="churn",
            dataset_version=1,
            dataset_sha256="e" * 64,
            trigger="data.published",
            code_version="test",
            estimator_class="LogisticRegression",
            params={"C": 1.0},
            seed=42,
            training_seconds=0.5,
            trained_event_id=str(uuid.uuid4()),
            correlation_id="chain-1",
        ),
        correlation_id="chain-1",
        causation_id="trained-1",
    )


async def registry_with(model_spec: ModelSpec) -> tuple[ModelRegistry, MemoryStore[MemoryRegistryUnit]]:
    store = memory_store()
    registry = ModelRegistry(store=store)
    await registry.submit_spec(model_spec, "alice")
    return registry, store


def release_events(store: MemoryStore[MemoryRegistryUnit]) -> list[str]:
    """The types of the events staged, but for the spec.changed each stored spec version announces."""
    return [e.type for e in store.published if e.type != "spec.changed"]


def lost_race(store: MemoryStore[MemoryRegistryUnit]) -> MemoryStore[MemoryRegistryUnit]:
    """The same records, seen by a request whose first unit of work looked before the winner committed."""
    blind = [True]

    class LateUnit(MemoryRegistryUnit):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.blind = blind.pop() if blind else False

        async def model(self, name: str, *, for_update: bool = False) -> Any:
            return None if self.blind else await super().model(name, for_update=for_update)

        async def version_by_run(self, model: str, run_id: str) -> Any:
            return None if self.blind else await super().version_by_run(model, run_id)

    return MemoryStore(LateUnit, tables=store.state.tables)


async def production_of(registry: ModelRegistry) -> int | None:
    return (await registry.model("churn", None)).aliases.get(PRODUCTION)


# --- registration and the promotion policy --------------------------------------------------


async def test_a_first_version_goes_to_production_under_the_default_policy():
    registry, store = await registry_with(spec())
    request = registration()

    version, created = await registry.register("churn", request, "validator")

    assert created and (version.version, version.status, version.aliases) == (1, "registered", [PRODUCTION])
    assert release_events(store) == ["model.registered", "model.promoted"]
    [registered_event, promoted_event] = [e for e in store.published if e.type != "spec.changed"]
    [registered] = store.published_payloads(ModelRegistered)
    [promoted] = store.published_payloads(ModelPromoted)
    assert (registered.version, registered.run_id, registered.requires_approval) == (1, request.run_id, False)
    assert (promoted.version, promoted.previous_version, promoted.reason) == (1, None, "policy")
    assert (promoted.target, promoted.artifact) == ("churned", request.artifact)
    assert registered_event.correlationid == promoted_event.correlationid == "chain-1"
    assert (registered_event.causationid, promoted_event.causationid) == ("trained-1", registered_event.id)


async def test_a_later_better_version_replaces_the_champion():
    registry, store = await registry_with(spec())
    await registry.register("churn", registration(), "validator")

    version, _ = await registry.register("churn", registration(), "validator")

    assert version.version == 2 and await production_of(registry) == 2
    assert store.published_payloads(ModelPromoted)[-1].previous_version == 1


async def test_a_version_needing_approval_waits_and_is_promoted_only_once_approved():
    registry, store = await registry_with(spec(require_approval=True))

    version, _ = await registry.register("churn", registration(), "validator")

    assert version.status == "pending_approval" and version.aliases == []
    assert await production_of(registry) is None
    assert release_events(store) == ["model.registered"]
    assert store.published_payloads(ModelRegistered)[0].requires_approval is True
    with pytest.raises(Conflict):
        await registry.move_alias("churn", PRODUCTION, 1, "alice")

    approved = await registry.decide("churn", 1, approve=True, comment="slices look fine", actor="bob")

    assert (approved.status, approved.aliases) == ("approved", [PRODUCTION])
    [promoted] = store.published_payloads(ModelPromoted)
    assert (promoted.version, promoted.reason) == (1, "approval")
    audit = await registry.audit(model="churn", limit=10, before_id=None)
    assert audit.entries[1].action == "version.approved" and audit.entries[1].detail == {"comment": "slices look fine"}


async def test_naming_an_older_spec_version_does_not_skip_the_approval_the_current_spec_demands():
    registry, store = await registry_with(spec())  # spec version 1: no approver
    await registry.submit_spec(spec(require_approval=True), "alice")  # spec version 2: an approver decides
    request = registration()  # the caller says spec version 1

    version, _ = await registry.register("churn", request, "validator")

    assert (version.spec_version, version.status, version.aliases) == (1, "pending_approval", [])
    assert await production_of(registry) is None
    assert release_events(store) == ["model.registered"]
    assert store.published_payloads(ModelRegistered)[0].requires_approval is True
    [registered, *_] = (await registry.audit(model="churn", limit=10, before_id=None)).entries
    assert registered.detail["policy"] == {
        "run_spec_version": 1,
        "current_spec_version": 2,
        "require_approval": True,
        "canary_percent": 0,
    }


async def test_a_run_trained_under_a_spec_demanding_approval_still_needs_it_after_the_spec_dropped_it():
    registry, store = await registry_with(spec(require_approval=True))
    await registry.submit_spec(spec(), "alice")  # spec version 2 no longer asks for approval

    version, _ = await registry.register("churn", registration(), "validator")  # trained under version 1

    assert version.status == "pending_approval" and await production_of(registry) is None
    assert store.published_payloads(ModelPromoted) == []


async def test_a_canary_asked_for_by_the_current_spec_holds_a_run_of_an_older_spec_to_a_canary():
    registry, store = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    await registry.submit_spec(spec(canary_percent=10), "alice")

    version, _ = await registry.register("churn", registration(), "validator")

    assert (version.status, version.aliases) == ("registered", [CANARY])
    assert [p.version for p in store.published_payloads(ModelPromoted)] == [1]
    [rollout] = store.published_payloads(ModelRollout)
    assert (rollout.alias, rollout.version, rollout.canary_percent, rollout.reason) == (CANARY, 2, 10, "policy")


async def test_a_rejected_version_is_never_promoted():
    registry, store = await registry_with(spec(require_approval=True))
    await registry.register("churn", registration(), "validator")

    rejected = await registry.decide("churn", 1, approve=False, comment="biased", actor="bob")

    assert rejected.status == "rejected"
    with pytest.raises(Conflict):
        await registry.move_alias("churn", PRODUCTION, 1, "alice")
    assert await production_of(registry) is None
    assert store.published_payloads(ModelPromoted) == []


async def test_the_first_version_of_a_canary_policy_goes_to_production_having_no_champion_beside_it():
    registry, store = await registry_with(spec(canary_percent=10))

    version, _ = await registry.register("churn", registration(), "validator")

    assert version.status == "registered" and version.aliases == [PRODUCTION]
    assert release_events(store) == ["model.registered", "model.promoted"]


@pytest.mark.parametrize("rollout, alias", [({"canary_percent": 20}, CANARY), ({"shadow": True}, SHADOW)])
async def test_a_rollout_policy_never_stops_promotion_it_serves_the_candidate_beside_the_champion(rollout, alias):
    registry, store = await registry_with(spec(**rollout))
    await registry.register("churn", registration(), "validator")

    candidate, _ = await registry.register("churn", registration(), "validator")

    assert candidate.aliases == [alias]
    assert await production_of(registry) == 1
    assert release_events(store)[-2:] == ["model.registered", "model.rollout"]


async def test_an_approved_candidate_of_a_canary_policy_becomes_the_canary():
    registry, store = await registry_with(spec(canary_percent=10, require_approval=True))
    await registry.register("churn", registration(), "validator")
    await registry.decide("churn", 1, approve=True, comment="", actor="bob")
    await registry.register("churn", registration(), "validator")

    approved = await registry.decide("churn", 2, approve=True, comment="ok", actor="bob")

    assert approved.aliases == [CANARY]
    assert await production_of(registry) == 1


async def test_promoting_the_canary_by_hand_makes_it_production_and_clears_the_canary_alias():
    registry, store = await registry_with(spec(canary_percent=10))
    await registry.register("churn", registration(), "validator")
    await registry.register("churn", registration(), "validator")

    promoted = await registry.move_alias("churn", PRODUCTION, 2, "alice")

    assert promoted.aliases == [PRODUCTION]
    [*_, announced] = store.published_payloads(ModelPromoted)
    assert (announced.version, announced.previous_version, announced.reason) == (2, 1, "manual")
    [*_, cleared] = store.published_payloads(ModelRollout)
    assert (cleared.alias, cleared.version, cleared.previous_version, cleared.reason) == (CANARY, None, 2, "promoted")


async def test_rolling_back_a_canary_clears_its_alias_and_tells_serving():
    registry, store = await registry_with(spec(canary_percent=10))
    await registry.register("churn", registration(), "validator")
    await registry.register("churn", registration(), "validator")
    report, event = served(2, loaded=True, serving_version=2)
    await registry.on_model_served(report.model_copy(update={"alias": CANARY}), event)
    assert [r.alias for r in (await registry.model("churn", None)).serving] == [CANARY]

    await registry.clear_alias("churn", CANARY, "alice")

    assert (await registry.model("churn", None)).serving == []

    with pytest.raises(NotFound):
        await registry.alias("churn", CANARY)
    assert await production_of(registry) == 1
    [*_, cleared] = store.published_payloads(ModelRollout)
    assert (cleared.alias, cleared.version, cleared.reason) == (CANARY, None, "rollback")
    [entry, *_] = (await registry.audit(model="churn", limit=10, before_id=None)).entries
    assert (entry.action, entry.actor, entry.version) == ("alias.cleared", "alice", 2)
    with pytest.raises(NotFound):
        await registry.clear_alias("churn", CANARY, "alice")


async def test_production_cannot_be_cleared_only_rolled_back():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")

    with pytest.raises(InvalidInput):
        await registry.clear_alias("churn", PRODUCTION, "alice")
    assert await production_of(registry) == 1


async def test_a_canary_by_hand_needs_a_share_in_the_spec():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")

    with pytest.raises(Conflict, match="canary_percent"):
        await registry.move_alias("churn", CANARY, 1, "alice")


def served(version: int, *, loaded: bool, serving_version: int | None, at: int = 0) -> tuple[ModelServed, Envelope]:
    payload = ModelServed(
        model="churn",
        alias=PRODUCTION,
        version=version,
        instance="serving-1",
        loaded=loaded,
        error=None if loaded else "UnsafeModel: untrusted type",
        serving_version=serving_version,
    )
    event = new_event(payload, source="mloop/serving", subject="churn")
    event = replace(event, time=event.time + timedelta(seconds=at))
    return payload, event


async def test_a_version_serving_failed_to_load_shows_on_the_model_until_it_loads():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    await registry.register("churn", registration(), "validator")

    await registry.on_model_served(*served(2, loaded=False, serving_version=1))
    failing = await registry.model("churn", None)
    await registry.on_model_served(*served(2, loaded=True, serving_version=2, at=1))
    healed = await registry.model("churn", None)

    assert failing.problems == ["serving-1 failed to load production v2 (UnsafeModel: untrusted type); serving v1"]
    assert [(r.version, r.loaded) for r in failing.serving] == [(2, False)]
    assert healed.problems == [] and [(r.version, r.loaded) for r in healed.serving] == [(2, True)]


async def test_a_failed_load_of_a_version_no_longer_aliased_is_no_problem():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    await registry.register("churn", registration(), "validator")
    await registry.on_model_served(*served(2, loaded=False, serving_version=1))

    await registry.move_alias("churn", PRODUCTION, 1, "alice")

    assert (await registry.model("churn", None)).problems == []


async def test_an_older_report_delivered_late_does_not_replace_a_newer_one():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    await registry.register("churn", registration(), "validator")
    newer = served(2, loaded=True, serving_version=2, at=5)
    older = served(2, loaded=False, serving_version=1)

    await registry.on_model_served(*newer)
    await registry.on_model_served(*older)
    await registry.on_model_served(*older)  # redelivered

    assert (await registry.model("churn", None)).problems == []


async def test_registering_the_same_run_twice_returns_the_same_version_and_announces_nothing_new():
    registry, store = await registry_with(spec())
    request = registration("run-1")
    first, first_created = await registry.register("churn", request, "validator")
    published = len(store.published)

    again, created_again = await registry.register("churn", request, "validator")

    assert (first_created, created_again) == (True, False)
    assert again == first
    assert len(store.published) == published
    assert len((await registry.versions("churn")).versions) == 1


async def test_a_registration_that_loses_a_race_answers_with_the_winners_version():
    registry, store = await registry_with(spec())
    request = registration("run-1")
    winner, _ = await registry.register("churn", request, "validator")
    late = lost_race(store)

    loser, created = await ModelRegistry(store=late).register("churn", request, "validator")

    assert (loser.version, created) == (winner.version, False)
    assert late.published == []
    assert len((await registry.versions("churn")).versions) == 1


async def test_registering_for_an_unknown_model_or_spec_version_is_not_found():
    registry, store = await registry_with(spec())

    with pytest.raises(NotFound):
        await registry.register("unknown", registration(), "validator")
    with pytest.raises(NotFound):
        await registry.register("churn", registration().model_copy(update={"spec_version": 2}), "validator")
    assert release_events(store) == []


# --- aliases ---------------------------------------------------------------------------------


async def test_promoting_the_version_already_in_production_changes_nothing():
    registry, store = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    published = len(store.published)
    audited = len((await registry.audit(model=None, limit=100, before_id=None)).entries)

    view = await registry.move_alias("churn", PRODUCTION, 1, "alice")

    assert (view.alias, view.version, view.aliases) == (PRODUCTION, 1, [PRODUCTION])
    assert len(store.published) == published
    assert len((await registry.audit(model=None, limit=100, before_id=None)).entries) == audited


async def test_rolling_back_moves_production_to_the_older_version_and_announces_a_rollback():
    registry, store = await registry_with(spec())
    first = registration(accuracy=0.8)
    await registry.register("churn", first, "validator")
    await registry.register("churn", registration(accuracy=0.9), "validator")

    view = await registry.move_alias("churn", PRODUCTION, 1, "alice")

    assert (view.version, view.aliases) == (1, [PRODUCTION])
    assert await production_of(registry) == 1
    rollback = store.published_payloads(ModelPromoted)[-1]
    assert (rollback.version, rollback.previous_version, rollback.reason) == (1, 2, "rollback")
    assert (rollback.artifact, rollback.metrics) == (first.artifact, {"accuracy": 0.8})
    [moved, *_] = (await registry.audit(model="churn", limit=10, before_id=None)).entries
    assert (moved.action, moved.actor) == ("alias.moved", "alice")
    assert moved.detail == {"alias": PRODUCTION, "previous_version": 2, "reason": "rollback"}


async def test_moving_the_challenger_alias_is_audited_and_announced_to_serving_as_a_rollout():
    registry, store = await registry_with(spec(require_approval=True))
    await registry.register("churn", registration(), "validator")
    await registry.decide("churn", 1, approve=True, comment="", actor="bob")
    published = len(release_events(store))

    view = await registry.move_alias("churn", CHALLENGER, 1, "alice")

    assert view.aliases == [CHALLENGER, PRODUCTION]
    assert (await registry.alias("churn", CHALLENGER)).version == 1
    assert release_events(store)[published:] == ["model.rollout"]
    [moved, *_] = (await registry.audit(model="churn", limit=10, before_id=None)).entries
    assert moved.detail["alias"] == CHALLENGER


async def test_a_malformed_alias_name_is_refused():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")

    with pytest.raises(InvalidInput) as refused:
        await registry.move_alias("churn", "Staging Area", 1, "alice")

    assert refused.value.field == "alias"


async def test_a_label_names_any_version_is_audited_and_announces_nothing_to_serving():
    registry, store = await registry_with(spec(require_approval=True))
    await registry.register("churn", registration(), "validator")  # waits for an approver: no serving alias
    published = len(store.published)

    view = await registry.move_alias("churn", "reviewed-by-risk", 1, "alice")
    await registry.clear_alias("churn", "reviewed-by-risk", "alice")

    assert view.aliases == ["reviewed-by-risk"]
    assert len(store.published) == published  # nothing for serving to host
    with pytest.raises(NotFound):
        await registry.alias("churn", "reviewed-by-risk")
    entries = (await registry.audit(model="churn", limit=10, before_id=None)).entries
    assert [(e.action, e.detail["alias"]) for e in entries[:2]] == [
        ("alias.cleared", "reviewed-by-risk"),
        ("alias.moved", "reviewed-by-risk"),
    ]


async def test_an_alias_that_is_not_set_is_not_found():
    registry, _ = await registry_with(spec(require_approval=True))
    await registry.register("churn", registration(), "validator")

    with pytest.raises(NotFound):
        await registry.alias("churn", PRODUCTION)


async def test_promoting_a_version_that_does_not_exist_is_not_found():
    registry, store = await registry_with(spec())

    with pytest.raises(NotFound):
        await registry.move_alias("churn", PRODUCTION, 7, "alice")
    assert release_events(store) == []


# --- approvals -------------------------------------------------------------------------------


async def test_approving_a_version_that_is_not_pending_is_a_conflict():
    registry, store = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    published = len(store.published)

    with pytest.raises(Conflict):
        await registry.decide("churn", 1, approve=True, comment="", actor="bob")

    assert (await registry.version("churn", 1)).status == "registered"
    assert len(store.published) == published


async def test_deciding_twice_is_a_conflict():
    registry, _ = await registry_with(spec(require_approval=True))
    await registry.register("churn", registration(), "validator")
    await registry.decide("churn", 1, approve=False, comment="no", actor="bob")

    with pytest.raises(Conflict):
        await registry.decide("churn", 1, approve=True, comment="yes after all", actor="carol")
    assert (await registry.version("churn", 1)).status == "rejected"


# --- specs -----------------------------------------------------------------------------------


async def test_an_identical_spec_returns_the_existing_spec_version():
    registry, _ = await registry_with(spec())

    same, created = await registry.submit_spec(spec(), "bob")

    assert (same.spec_version, created) == (1, False)
    assert (await registry.model("churn", None)).spec_version == 1


async def test_a_changed_spec_makes_a_new_spec_version():
    registry, _ = await registry_with(spec())

    changed, created = await registry.submit_spec(spec(target="left"), "bob")

    assert (changed.spec_version, created) == (2, True)
    detail = await registry.model("churn", None)
    assert (detail.spec_version, detail.spec.target) == (2, "left")
    assert (await registry.model("churn", 1)).spec.target == "churned"


async def test_each_new_spec_version_is_announced_for_the_trainer_and_an_identical_one_is_not():
    registry, store = await registry_with(spec())
    await registry.submit_spec(spec(), "bob")
    await registry.submit_spec(spec(target="left"), "bob")

    announced = store.published_payloads(SpecChanged)
    assert [(a.model, a.spec_version, a.dataset) for a in announced] == [("churn", 1, "churn"), ("churn", 2, "churn")]
    assert announced[1].spec_digest == spec_digest(spec(target="left"))


async def test_resubmitting_an_older_spec_makes_it_the_latest_again():
    registry, _ = await registry_with(spec())
    await registry.submit_spec(spec(target="left"), "bob")

    reverted, created = await registry.submit_spec(spec(), "bob")

    assert (reverted.spec_version, created) == (3, True)


async def test_a_first_spec_that_loses_a_race_answers_with_the_winners_spec_version():
    _, store = await registry_with(spec())

    loser, created = await ModelRegistry(store=lost_race(store)).submit_spec(spec(), "bob")

    assert (loser.spec_version, created) == (1, False)


async def test_models_are_listed_with_their_latest_spec_and_aliases():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    other = spec().model_copy(update={"name": "fraud", "dataset": "payments"})
    await registry.submit_spec(other, "bob")

    everything = await registry.models(None)
    for_churn = await registry.models("churn")

    assert [m.name for m in everything.models] == ["churn", "fraud"]
    [churn] = for_churn.models
    assert (churn.dataset, churn.spec_version, churn.aliases) == ("churn", 1, {PRODUCTION: 1})
    with pytest.raises(NotFound):
        await registry.model("nope", None)
    with pytest.raises(NotFound):
        await registry.versions("nope")


# --- lineage and audit -----------------------------------------------------------------------


async def test_lineage_traces_a_version_to_its_run_data_code_and_spec():
    registry, _ = await registry_with(spec())
    request = registration()
    await registry.register("churn", request, "validator")

    lineage = await registry.lineage("churn", 1)
    detail = await registry.version("churn", 1)

    stored_spec = await registry.model("churn", 1)
    assert (lineage.run_id, lineage.evaluation_id, lineage.artifact) == (
        request.run_id,
        request.evaluation_id,
        request.artifact,
    )
    assert (lineage.spec.version, lineage.spec.digest) == (1, stored_spec.digest)
    assert (lineage.dataset_sha256, lineage.trained_event_id) == ("e" * 64, request.lineage.trained_event_id)
    assert detail.lineage == request.lineage and detail.aliases == [PRODUCTION]


async def test_the_audit_log_records_every_change_newest_first_and_pages_back():
    registry, _ = await registry_with(spec())
    await registry.register("churn", registration(), "validator")

    page = await registry.audit(model="churn", limit=2, before_id=None)
    older = await registry.audit(model="churn", limit=2, before_id=page.entries[-1].id)

    actions = [e.action for e in page.entries + older.entries]
    assert actions == ["alias.moved", "version.registered", "spec.created"]
    assert [e.actor for e in page.entries + older.entries] == ["validator", "validator", "alice"]


async def test_when_production_last_moved_is_a_metric_kept_across_a_restart():
    from prometheus_client import REGISTRY

    def since() -> float | None:
        return REGISTRY.get_sample_value("mloop_registry_production_since_timestamp_seconds", {"model": "churn"})

    registry, store = await registry_with(spec())
    await registry.register("churn", registration(), "validator")
    promoted = since()
    assert promoted is not None and abs(promoted - time.time()) < 60

    from mloop_registry.handlers import PRODUCTION_SINCE

    PRODUCTION_SINCE.clear()  # a new process: the gauge is empty until the stored state is read
    assert since() is None
    await ModelRegistry(store=store).load_metrics()
    assert since() == pytest.approx(promoted, abs=60)
