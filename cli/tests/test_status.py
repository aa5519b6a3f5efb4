"""``mloop status``: readiness and version per service, models and what serving answers with, lag, outbox, DLQs."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mloop_cli import status
from mloop_cli.main import app

METRICS = """\
# HELP mloop_consumer_lag Records on a partition not yet handled by the group
# TYPE mloop_consumer_lag gauge
mloop_consumer_lag{group="mloop-trainer-data",partition="0",topic="data.published"} 2.0
mloop_consumer_lag{group="mloop-trainer-data",partition="1",topic="data.published"} 3.0
mloop_consumer_lag{group="mloop-trainer-drift",partition="0",topic="drift.detected"} 0.0
# HELP mloop_outbox_pending_events Committed events not yet published to Kafka
# TYPE mloop_outbox_pending_events gauge
mloop_outbox_pending_events 4.0
# HELP mloop_outbox_oldest_pending_age_seconds Age of the oldest committed event not yet published to Kafka
# TYPE mloop_outbox_oldest_pending_age_seconds gauge
mloop_outbox_oldest_pending_age_seconds 12.5
"""
MODEL = {
    "name": "churn",
    "aliases": {"production": 3, "canary": 4},
    "serving": [
        {"instance": "a", "alias": "production", "version": 3, "loaded": True, "serving_version": 3},
        {"instance": "b", "alias": "production", "version": 3, "loaded": False, "serving_version": 2},
        {"instance": "a", "alias": "canary", "version": 4, "loaded": True, "serving_version": 4},
    ],
    "problems": ["b failed to load production v3 (DigestMismatch: ...); serving v2"],
}


def test_lag_is_summed_per_group_and_the_outbox_backlog_is_read():
    pipeline = status.pipeline_of(METRICS)

    assert pipeline.lag == {"mloop-trainer-data": 5.0, "mloop-trainer-drift": 0.0}
    assert (pipeline.outbox_pending, pipeline.outbox_oldest_seconds) == (4.0, 12.5)
    assert status.pipeline_of("") == status.Pipeline()  # serving has no outbox: nothing made up


def test_a_model_shows_its_aliases_what_serving_answers_with_and_its_problems():
    aliases, answering, problems = status.served_summary(MODEL)

    assert aliases == "canary v4, production v3"
    assert answering == "v2, v3 (1/2 instances loaded production)"
    assert problems.startswith("b failed to load production v3")
    assert status.served_summary({"aliases": {}})[:2] == ("-", "no serving report")


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every service answering as a healthy stack would, except the drift service, which is not ready."""
    state: dict[str, Any] = {"dead_letters": {"model.trained.dlq": 2}}

    def get(address: str, **_: Any) -> httpx.Response:
        port = int(address.split(":")[2].split("/")[0])
        path = "/" + address.split("/", 3)[3]
        service = next(name for name, p in status.SERVICE_PORTS.items() if p == port)
        if path == "/readyz":
            ready = service != "drift"
            checks = {"broker": "ok" if ready else "consumer mloop-drift stopped"}
            return httpx.Response(200 if ready else 503, json={"ready": ready, "checks": checks})
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "service": service, "version": "abc1234"})
        if path == "/metrics":
            return httpx.Response(200, text=METRICS if service == "trainer" else "")
        if path == "/v1/models":
            return httpx.Response(200, json={"models": [{"name": "churn"}]})
        return httpx.Response(200, json=MODEL)

    async def sizes(config: Any, topics: list[str]) -> dict[str, int]:
        return {topic: state["dead_letters"].get(topic, 0) for topic in topics}

    monkeypatch.setattr(httpx, "get", get)
    monkeypatch.setattr(status, "topic_sizes", sizes)
    monkeypatch.setattr(status.console, "width", 250)
    return state


def test_the_screen_names_what_is_wrong_and_exits_1_until_everything_is_ready(stack):
    result = CliRunner().invoke(app, ["status", "--remote"])

    assert result.exit_code == 1, result.output  # drift is not ready
    assert "consumer mloop-drift stopped" in result.output and "abc1234" in result.output
    assert "v2, v3 (1/2 instances loaded production)" in result.output
    assert "mloop-trainer-data" in result.output and "12.5s" in result.output
    assert "model.trained.dlq 2" in result.output
