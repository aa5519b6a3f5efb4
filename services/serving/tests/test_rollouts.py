"""Several versions of a model at once: canary routing, shadow scoring, challengers, and load reports."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mloop_common.artifacts import ArtifactStore
from mloop_common.contracts import PRODUCTION
from mloop_common.errors import NotFound
from mloop_common.events import (
    CANARY,
    CHALLENGER,
    SHADOW,
    Envelope,
    ModelRollout,
    ModelServed,
    PredictionsLogged,
    new_event,
)
from mloop_common.spec import ModelSpec
from mloop_common.testing import through_the_wire
from mloop_serving.handlers import Loader
from mloop_serving.routing import takes_canary

from .fakes import Serving, churn_spec, classifier_file, promoted_event, serving, untrusted_file

ROWS = [{"usage": 1.5, "calls": 2.0}]


@pytest.fixture
def svc(tmp_path: Path) -> Serving:
    served = serving(ArtifactStore(tmp_path))
    # Load reports go where the real composition root sends them: the bus (here the recording publisher).
    served.loader = Loader(
        registry=served.registry, artifacts=served.artifacts, host=served.host, reports=served.publisher, instance="s-1"
    )
    return served


def with_canary(percent: float) -> ModelSpec:
    spec = churn_spec()
    return spec.model_copy(update={"promotion": spec.promotion.model_copy(update={"canary_percent": percent})})


async def beside_production(
    svc: Serving, alias: str, *, model_file: bytes | None = None, canary_percent: float = 0
) -> None:
    """v1 in production and v2 under ``alias``, loaded as serving loads them."""
    await svc.register(classifier_file(seed=1))
    await svc.loader.sync_all()
    if canary_percent:
        svc.registry.add_spec(with_canary(canary_percent))
    await svc.register(model_file or classifier_file(seed=2))
    svc.registry.aliases["churn"] = {PRODUCTION: 1, alias: 2}
    await svc.loader.on_model_rollout(*rollout_event(alias, 2))


def rollout_event(alias: str, version: int | None) -> tuple[ModelRollout, Envelope]:
    payload = ModelRollout(model="churn", alias=alias, version=version, reason="policy")
    event = through_the_wire(new_event(payload, source="mloop/registry", subject="churn"))
    return event.decode(ModelRollout), event


async def logged(svc: Serving) -> list[tuple[int, str, str]]:
    await svc.logbook.flush()
    return [
        (batch.version, record.route, record.request_id)
        for batch in svc.publisher.payloads(PredictionsLogged)
        for record in batch.records
    ]


async def test_a_canary_answers_its_share_of_routing_keys_and_the_same_key_sticks(svc: Serving) -> None:
    await beside_production(svc, CANARY, canary_percent=30)
    keys = [f"client-{i}" for i in range(300)]

    first = [await svc.scorer.score("churn", ROWS, key=key) for key in keys]
    again = [await svc.scorer.score("churn", ROWS, key=key) for key in keys]

    assert [(s.model.version, s.route) for s in first] == [(s.model.version, s.route) for s in again]
    assert [s.route == "canary" for s in first] == [takes_canary(key, 30) for key in keys]
    assert {(s.model.version, s.route) for s in first} == {(1, "champion"), (2, "canary")}
    records = await logged(svc)
    assert {(version, route) for version, route, _ in records} == {(1, "champion"), (2, "canary")}


async def test_a_shadow_scores_every_request_on_the_side_and_never_answers(svc: Serving) -> None:
    await beside_production(svc, SHADOW)

    scored = [await svc.scorer.score("churn", ROWS) for _ in range(5)]
    await svc.scorer.close()

    assert {(s.model.version, s.route) for s in scored} == {(1, "champion")}
    records = await logged(svc)
    champion = sorted(rid for version, route, rid in records if route == "champion")
    shadow = sorted(rid for version, route, rid in records if route == "shadow")
    assert shadow == champion and len(shadow) == 5
    assert {version for version, route, _ in records if route == "shadow"} == {2}


async def test_a_failing_shadow_never_fails_the_request(svc: Serving) -> None:
    await beside_production(svc, SHADOW)
    svc.host.shadow("churn").features.append("plan")  # the shadow now needs a feature requests lack: it fails

    scored = await svc.scorer.score("churn", ROWS)
    await svc.scorer.close()

    assert scored.route == "champion"
    assert [route for _, route, _ in await logged(svc)] == ["champion"]


async def test_a_busy_shadow_skips_copies_rather_than_queueing_them(svc: Serving) -> None:
    await beside_production(svc, SHADOW)
    svc.scorer.max_shadow_pending = 1

    await asyncio.gather(*(svc.scorer.score("churn", ROWS) for _ in range(3)))
    await svc.scorer.close()

    routes = [route for _, route, _ in await logged(svc)]
    assert routes.count("champion") == 3 and routes.count("shadow") == 1


async def test_a_challenger_answers_only_requests_that_name_it(svc: Serving) -> None:
    await beside_production(svc, CHALLENGER)

    routed = {(await svc.scorer.score("churn", ROWS, key=f"k{i}")).model.version for i in range(50)}
    by_version = await svc.scorer.score("churn", ROWS, 2)
    by_alias = await svc.scorer.score("churn", ROWS, alias=CHALLENGER)

    assert routed == {1}
    assert (by_version.model.version, by_version.route) == (2, "challenger")
    assert (by_alias.model.version, by_alias.route) == (2, "challenger")


async def test_a_promoted_canary_becomes_production_without_loading_again_and_leaves_the_canary(
    svc: Serving,
) -> None:
    await beside_production(svc, CANARY, canary_percent=30)
    canary = svc.host.by_alias("churn", CANARY)
    svc.registry.aliases["churn"] = {PRODUCTION: 2}

    await svc.loader.on_model_promoted(*promoted_event(svc.registry.version("churn", 2)))
    await svc.loader.on_model_rollout(*rollout_event(CANARY, None))

    assert svc.host.get("churn") is canary
    assert {(await svc.scorer.score("churn", ROWS, key=f"k{i}")).route for i in range(50)} == {"champion"}


async def test_a_rolled_back_canary_is_no_longer_served(svc: Serving) -> None:
    await beside_production(svc, CANARY, canary_percent=100)
    del svc.registry.aliases["churn"][CANARY]

    await svc.loader.on_model_rollout(*rollout_event(CANARY, None))

    assert (await svc.scorer.score("churn", ROWS, key="k")).model.version == 1
    with pytest.raises(NotFound):
        await svc.scorer.score("churn", ROWS, 2)


async def test_every_load_is_reported_to_the_registry_and_a_failed_one_says_what_still_serves(svc: Serving) -> None:
    await svc.register(classifier_file(seed=1))
    await svc.loader.sync_all()
    v2 = await svc.register(untrusted_file())

    with pytest.raises(Exception, match="[Uu]ntrusted"):
        await svc.loader.on_model_promoted(*promoted_event(v2))

    reports = [
        (r.alias, r.version, r.loaded, r.serving_version, r.instance) for r in svc.publisher.payloads(ModelServed)
    ]
    assert reports == [(PRODUCTION, 1, True, 1, "s-1"), (PRODUCTION, 2, False, 1, "s-1")]
    [*_, failed] = svc.publisher.payloads(ModelServed)
    assert failed.error and "ntrusted" in failed.error


async def test_a_rollout_that_fails_to_load_is_reported_and_production_keeps_serving(svc: Serving) -> None:
    with pytest.raises(Exception, match="[Uu]ntrusted"):
        await beside_production(svc, SHADOW, model_file=untrusted_file())

    assert svc.host.shadow("churn") is None
    assert (await svc.scorer.score("churn", ROWS)).model.version == 1
    [*_, failed] = svc.publisher.payloads(ModelServed)
    assert (failed.alias, failed.version, failed.loaded) == (SHADOW, 2, False)
    assert any("shadow failed to load" in problem for problem in svc.loader.problems())
