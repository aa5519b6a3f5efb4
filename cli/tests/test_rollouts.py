"""``mloop rollouts``: the registry calls each command makes, and what it prints (HTTP answered by a stub)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mloop_cli.main import app

runner = CliRunner()
MODEL = {
    "aliases": {"production": 1, "canary": 2},
    "spec": {"promotion": {"canary_percent": 20, "shadow": False}},
    "serving": [
        {
            "instance": "serving-a",
            "alias": "canary",
            "version": 2,
            "loaded": False,
            "serving_version": None,
            "error": "UntrustedModelError: x",
        }
    ],
    "problems": ["serving-a failed to load canary v2 (UntrustedModelError: x); canary not served there"],
}


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """Every request the CLI sends, answered like the registry would for churn with v2 as its canary."""
    calls: list[tuple[str, str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        path = url.split(":8004", 1)[1]
        calls.append((method, path, kwargs.get("json")))
        if method == "DELETE":
            return httpx.Response(204)
        body = MODEL if path == "/v1/models/churn" else {"version": 2, "aliases": ["canary"]}
        return httpx.Response(200, json=body)

    monkeypatch.setattr(httpx, "request", request)
    return calls


def test_promote_makes_the_canary_production(registry):
    result = runner.invoke(app, ["rollouts", "promote", "churn"])

    assert result.exit_code == 0, result.output
    assert registry == [
        ("GET", "/v1/models/churn/aliases/canary", None),
        ("PUT", "/v1/models/churn/aliases/production", {"version": 2}),
    ]
    assert "canary v2 is now production" in result.output


def test_abort_clears_the_rollout_alias(registry):
    result = runner.invoke(app, ["rollouts", "abort", "churn", "--alias", "canary"])

    assert result.exit_code == 0, result.output
    assert registry[-1] == ("DELETE", "/v1/models/churn/aliases/canary", None)


def test_show_lists_aliases_share_and_serving_problems(registry):
    result = runner.invoke(app, ["rollouts", "show", "churn"])

    assert result.exit_code == 0, result.output
    assert "canary=v2" in result.output and "canary_percent=20" in result.output
    assert "problem:" in result.output and "serving-a failed to load canary v2" in result.output


def test_an_alias_that_is_not_a_rollout_is_refused_before_any_call(registry):
    result = runner.invoke(app, ["rollouts", "abort", "churn", "--alias", "production"])

    assert result.exit_code == 2 and registry == []


def test_alias_points_a_label_at_a_version_and_clears_it(registry):
    moved = runner.invoke(app, ["alias", "churn", "stable", "2"])
    cleared = runner.invoke(app, ["alias", "churn", "stable", "--clear"])
    neither = runner.invoke(app, ["alias", "churn", "stable"])

    assert moved.exit_code == 0 and cleared.exit_code == 0, moved.output + cleared.output
    assert registry == [
        ("PUT", "/v1/models/churn/aliases/stable", {"version": 2}),
        ("DELETE", "/v1/models/churn/aliases/stable", None),
    ]
    assert "stable -> v2" in moved.output and "stable cleared" in cleared.output
    assert neither.exit_code == 2 and "--clear" in neither.output
