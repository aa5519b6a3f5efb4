"""``mloop audit``: the registry calls each command makes, what it prints and its exit codes (HTTP stubbed)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from mloop_cli.client import console
from mloop_cli.main import app

runner = CliRunner()
INTACT = {"ok": True, "entries": 7, "first_bad_id": None, "reason": "", "last_hash": "ab" * 32}
TAMPERED = {
    "ok": False,
    "entries": 2,
    "first_bad_id": 3,
    "reason": "edited: entry 3's content does not match its hash",
    "last_hash": "cd" * 32,
}
ENTRY = {
    "id": 3,
    "at": "2026-01-01T00:00:00Z",
    "actor": "alice",
    "action": "alias.moved",
    "model": "churn",
    "version": 2,
    "detail": {"alias": "production"},
    "prev_hash": "0" * 64,
    "hash": "9f" * 32,
}


def stub(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Any]) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        path = url.split(":8004", 1)[1]
        calls.append((path, kwargs.get("params")))
        return httpx.Response(200, json=answers[path])

    monkeypatch.setattr(httpx, "request", request)
    return calls


def test_verify_exits_0_when_the_chain_is_intact(monkeypatch):
    stub(monkeypatch, {"/v1/audit/verify": INTACT})

    result = runner.invoke(app, ["audit", "verify"])

    assert result.exit_code == 0, result.output
    assert "intact" in result.output and "7 entries" in result.output


def test_verify_exits_1_naming_the_tampered_entry(monkeypatch):
    stub(monkeypatch, {"/v1/audit/verify": TAMPERED})

    result = runner.invoke(app, ["audit", "verify"])

    assert result.exit_code == 1
    assert "entry 3" in result.output and "edited" in result.output


def test_list_filters_by_model_and_shows_each_entry(monkeypatch):
    calls = stub(monkeypatch, {"/v1/audit": {"entries": [ENTRY]}})
    monkeypatch.setattr(console, "width", 200)  # the table's columns unabridged

    result = runner.invoke(app, ["audit", "list", "--model", "churn", "--limit", "5"])

    assert result.exit_code == 0, result.output
    assert calls == [("/v1/audit", {"limit": 5, "model": "churn"})]
    assert "alias.moved" in result.output and "alice" in result.output and "9f9f9f" in result.output


def test_models_tag_sets_pairs_and_labels_on_a_version(monkeypatch):
    calls: list[tuple[str, str, Any]] = []

    def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
        calls.append((method, url.split(":8004", 1)[1], kwargs.get("json")))
        return httpx.Response(200, json={"tags": {"gold": "", "team": "fraud"}})

    monkeypatch.setattr(httpx, "request", request)

    result = runner.invoke(app, ["models", "tag", "churn:3", "team=fraud", "gold", "--remove", "old"])

    assert result.exit_code == 0, result.output
    assert calls == [
        ("PUT", "/v1/models/churn/versions/3/tags", {"tags": {"team": "fraud", "gold": ""}}),
        ("DELETE", "/v1/models/churn/versions/3/tags/old", None),
    ]
    assert "churn v3 tags: gold, team=fraud" in result.output


def test_models_tag_refuses_a_version_that_is_not_a_number():
    result = runner.invoke(app, ["models", "tag", "churn:latest", "a=b"])

    assert result.exit_code == 2


def test_search_sends_the_query_and_offers_the_next_page(monkeypatch):
    version = {"model": "churn", "version": 2, "status": "registered", "aliases": ["production"]}
    page = {"versions": [{**version, "tags": {"gold": ""}, "metrics": {"roc_auc": 0.91234}}], "next_offset": 1}
    calls = stub(monkeypatch, {"/v1/search/versions": page})
    monkeypatch.setattr(console, "width", 200)

    result = runner.invoke(app, ["search", "metric.roc_auc > 0.8", "--limit", "1"])

    assert result.exit_code == 0, result.output
    assert calls == [("/v1/search/versions", {"q": "metric.roc_auc > 0.8", "limit": 1, "offset": 0})]
    assert "roc_auc=0.9123" in result.output and "gold" in result.output and "--offset 1" in result.output
