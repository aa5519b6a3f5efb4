"""Canary routing: the share it takes, stickiness per key, and the host's routes."""

import pytest

from mloop_common.errors import NotFound
from mloop_serving.host import ModelHost, Rollout
from mloop_serving.routing import bucket, takes_canary

from .test_host import loaded


@pytest.mark.parametrize("percent", [1, 20, 50])
def test_a_canary_takes_its_share_of_keys(percent):
    keys = [f"client-{i}" for i in range(20_000)]

    share = sum(takes_canary(key, percent) for key in keys) / len(keys)

    # 20,000 draws: the binomial standard deviation is under 0.36 points; 5 of them is a wide band.
    assert abs(share * 100 - percent) < 1.8


def test_the_same_key_always_takes_the_same_route():
    assert {takes_canary("client-7", 30) for _ in range(100)} == {takes_canary("client-7", 30)}
    assert bucket("client-7") == bucket("client-7")


def test_widening_a_canary_keeps_every_client_it_already_had():
    keys = [f"client-{i}" for i in range(2_000)]
    at_10 = {k for k in keys if takes_canary(k, 10)}
    at_30 = {k for k in keys if takes_canary(k, 30)}

    assert at_10 < at_30


def test_no_share_means_no_canary_and_all_means_all():
    keys = [f"k{i}" for i in range(1_000)]
    assert not any(takes_canary(k, 0) for k in keys)
    assert all(takes_canary(k, 100) for k in keys)


def test_the_host_routes_keys_to_production_or_the_canary():
    host = ModelHost()
    production, canary = loaded(version=1), loaded(version=2)
    host.swap(production)
    host.set_rollout("churn", Rollout("canary", canary, percent=50), "canary")

    routes = {host.route("churn", f"client-{i}").route for i in range(200)}
    routed = host.route("churn", "client-3")

    assert routes == {"champion", "canary"}
    assert routed.model is (canary if takes_canary("client-3", 50) else production)


def test_a_named_version_is_the_champion_when_it_is_production_and_a_challenger_otherwise():
    host = ModelHost()
    production, challenger = loaded(version=1), loaded(version=2)
    host.swap(production)
    host.set_rollout("churn", Rollout("challenger", challenger), "challenger")

    assert host.explicit(host.get("churn", 2)).route == "challenger"
    assert host.explicit(host.get("churn", 1)).route == "champion"
    assert host.by_alias("churn", "challenger") is challenger
    with pytest.raises(NotFound):
        host.by_alias("churn", "canary")


def test_clearing_a_rollout_stops_routing_to_it_and_keeps_production():
    host = ModelHost()
    host.swap(loaded(version=1))
    host.set_rollout("churn", Rollout("canary", loaded(version=2), percent=100), "canary")
    host.set_rollout("churn", Rollout("shadow", loaded(version=3)), "shadow")

    host.set_rollout("churn", None, "canary")

    assert host.route("churn", "any").model.version == 1
    assert host.shadow("churn").version == 3
    assert host.versions("churn") == {1, 3}
    with pytest.raises(NotFound):
        host.get("churn", 2)
