"""The web UI in Debian's Chromium against the six services and the UI as processes, after a loop:
what people see on each page, approving in the browser, and the live pipeline.

A model that needs an approver: v1 approved (through the API) and served, predictions and labels logged
until drift has judged windows, then v2 trained and waiting; the browser approves v2 and serving switches.
Screenshots go to tests/ui/screenshots/.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import expect

from tests.conftest import eventually
from tests.e2e.test_release_gate import dataset, declare, publish, served_version, version_count
from tests.stack import ServiceStack

from .conftest import Tab

pytestmark = pytest.mark.asyncio(loop_scope="module")
TIMEOUT = 120
MODEL = f"ui-{uuid.uuid4().hex[:6]}"


def spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "dataset": name,
        "task": "classification",
        "target": "label",
        "features": ["x1", "x2", "x3"],
        "estimators": [{"class": "LogisticRegression", "params": {"C": [0.1, 1.0]}}],
        "search": {"strategy": "grid", "cv": 2},
        "metric": "accuracy",
        "promotion": {"require_approval": True},
        "drift": {"window": 100},
    }


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loop(stack: ServiceStack, clients: dict[str, httpx.AsyncClient]) -> dict[str, Any]:
    """The loop the pages show; the keys of an approver and a viewer."""
    registry, ingest, serving = clients["registry"], clients["ingest"], clients["serving"]
    approver = (await registry.post("/v1/keys", json={"name": "carol", "role": "approver"})).json()["key"]
    viewer = (await registry.post("/v1/keys", json={"name": "vera", "role": "viewer"})).json()["key"]
    await declare(registry, spec(MODEL))
    await publish(ingest, MODEL, seed=1)
    await eventually(lambda: version_count(registry, MODEL, 1), timeout=TIMEOUT, interval=1.0)
    approved = await registry.post(
        f"/v1/models/{MODEL}/versions/1/approve",
        json={"comment": "first"},
        headers={"Authorization": f"Bearer {approver}"},
    )
    assert approved.status_code == 200, approved.text

    async def serves_v1() -> bool:
        return await served_version(serving, MODEL) == 1

    await eventually(serves_v1, timeout=TIMEOUT, interval=0.5)
    rows = dataset(seed=7, rows=250).decode().splitlines()[1:]
    instances = [dict(zip(("x1", "x2", "x3"), map(float, row.split(",")[:3]), strict=True)) for row in rows]
    labels = [row.split(",")[3] for row in rows]
    request_ids: list[str] = []
    for start in range(0, len(instances), 50):
        answer = await serving.post(f"/v1/models/{MODEL}:predict", json={"instances": instances[start : start + 50]})
        assert answer.status_code == 200, answer.text
        request_ids += answer.json()["request_ids"]
    feedback = [{"request_id": r, "label": label} for r, label in zip(request_ids, labels, strict=True)]
    assert (await serving.post("/v1/feedback", json=feedback)).status_code == 202

    async def judged() -> list[dict[str, Any]] | None:
        found = (await clients["drift"].get(f"/v1/drift/{MODEL}/reports")).json()["reports"]
        return found if len(found) >= 2 else None

    await eventually(judged, timeout=TIMEOUT, interval=1.0)
    await publish(ingest, MODEL, seed=2)
    await eventually(lambda: version_count(registry, MODEL, 2), timeout=TIMEOUT, interval=1.0)
    snapshot = (await ingest.get(f"/v1/datasets/{MODEL}/versions/1")).json()["snapshot_sha256"]
    return {"approver": approver, "viewer": viewer, "request_id": request_ids[0], "sha256": snapshot}


async def test_signing_in_takes_a_valid_key_and_returns_to_the_page_asked_for(tab: Tab, loop: dict[str, Any]) -> None:
    page = await tab.open(f"/models/{MODEL}")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await page.fill("#key", "mlk_000000000000_" + "x" * 43)
    await page.click("form[action='/login'] button[type=submit]")
    await expect(page.get_by_role("alert")).to_contain_text("not valid")

    await page.fill("#key", loop["viewer"])
    await page.click("form[action='/login'] button[type=submit]")
    await expect(page).to_have_url(re.compile(f"/models/{MODEL}$"))
    await expect(page.locator("header")).to_contain_text("vera · viewer")
    tab.problems = [p for p in tab.problems if "401" not in p]  # the refused sign-in's own status


async def test_the_models_page_shows_production_and_the_version_waiting(tab: Tab, loop: dict[str, Any]) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open("/")
    row = page.locator("tr", has=page.get_by_role("link", name=MODEL, exact=True))
    await expect(row).to_contain_text("v1")
    await expect(row).to_contain_text("1 pending")
    await expect(row).to_contain_text("pending_approval")
    await tab.screenshot("models")


async def test_the_version_page_draws_the_lineage_from_the_dataset_sha256_to_its_promotion(
    tab: Tab, loop: dict[str, Any]
) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open(f"/models/{MODEL}/versions/1")
    graph = page.locator("svg.lineage")
    dataset_node = graph.locator("[data-node=dataset]")
    sha = loop["sha256"]
    await expect(dataset_node).to_contain_text(sha[:32])
    await expect(dataset_node).to_contain_text(sha[32:])
    assert await dataset_node.get_attribute("href") == f"/datasets/{MODEL}#v1"
    await expect(graph.locator(".node.promotion")).to_contain_text("→ production")
    await expect(page.locator("#evaluation .plot .main-svg").first).to_be_visible()  # plotly drew the bars
    await expect(page.locator("#run")).to_contain_text("LogisticRegression")
    await tab.screenshot("version")


async def test_the_drift_page_plots_each_feature_against_its_threshold_line(tab: Tab, loop: dict[str, Any]) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open(f"/drift/{MODEL}")
    feature_plots = page.locator("section[aria-labelledby=features-h] .plot")
    await expect(feature_plots).to_have_count(3)
    await expect(feature_plots.first.locator(".legendtext", has_text="threshold")).to_be_visible()
    await expect(feature_plots.first.locator(".scatterlayer .trace")).to_have_count(2)  # statistic and threshold
    await expect(page.locator("#histograms .legendtext", has_text="reference (training)").first).to_be_visible()
    await expect(page.locator("#perf-h")).to_be_visible()
    await tab.screenshot("drift")


async def test_a_viewer_cannot_approve_and_an_approver_approving_in_the_browser_switches_serving(
    tab: Tab, loop: dict[str, Any], clients: dict[str, httpx.AsyncClient]
) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open("/approvals")
    card = page.locator("article", has=page.get_by_role("link", name=f"{MODEL} v2"))
    await expect(card).to_contain_text("An approver decides this version")
    await expect(card.get_by_role("button", name="Approve v2")).to_have_count(0)

    await page.get_by_role("button", name="Sign out").click()
    await tab.sign_in(loop["approver"])
    page = await tab.open("/approvals")
    card = page.locator("article", has=page.get_by_role("link", name=f"{MODEL} v2"))
    await card.get_by_label("Comment").fill("better on the new data")
    await tab.screenshot("approvals")
    await card.get_by_role("button", name="Approve v2").click()

    await expect(page.get_by_role("status")).to_contain_text("Version 2 approved")
    await expect(page.get_by_role("status")).to_contain_text("production")
    alias = (await clients["registry"].get(f"/v1/models/{MODEL}/aliases/production")).json()
    assert alias["version"] == 2

    async def serves_v2() -> bool:
        return await served_version(clients["serving"], MODEL) == 2

    await eventually(serves_v2, timeout=TIMEOUT, interval=0.5)
    audit = (await clients["registry"].get("/v1/audit", params={"model": MODEL})).json()["entries"]
    approval = next(e for e in audit if e["action"] == "version.approved" and e["version"] == 2)
    assert approval["actor"].startswith("carol") and approval["detail"]["comment"] == "better on the new data"


async def test_a_request_id_in_the_search_box_opens_the_lineage_of_the_version_that_answered(
    tab: Tab, loop: dict[str, Any]
) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open("/")
    await page.get_by_label("Prediction lineage").fill(loop["request_id"])
    await page.get_by_label("Prediction lineage").press("Enter")

    await expect(page).to_have_url(re.compile(f"/models/{MODEL}/versions/1\\?request_id="))
    await expect(page.locator("#prediction-h")).to_contain_text(loop["request_id"])
    await expect(page.locator("section.notice")).to_contain_text("Answered by v1")
    await expect(page.locator("svg.lineage [data-node=dataset]")).to_contain_text(loop["sha256"][:32])


async def test_the_pipeline_shows_new_events_without_a_reload_and_one_chain_on_request(
    tab: Tab, loop: dict[str, Any], clients: dict[str, httpx.AsyncClient]
) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open("/pipeline")
    table = page.locator("#pipeline tbody")
    await expect(table).to_contain_text("model.promoted")
    later = f"{MODEL}-later"
    await declare(clients["registry"], spec(later))  # a spec.changed event, after the page was drawn

    fresh = table.locator("tr", has_text=later)
    await expect(fresh).to_contain_text("spec.changed", timeout=20_000)
    await tab.screenshot("pipeline")

    chain = (await clients["registry"].get(f"/v1/lineage/{MODEL}/2")).json()["correlation_id"]
    page = await tab.open(f"/pipeline?correlation_id={chain}")
    rows = page.locator("#pipeline tbody tr")
    await expect(rows.first).to_be_visible()
    types = set(await page.locator("#pipeline tbody tr td:nth-child(2)").all_inner_texts())
    assert {"data.published", "model.trained", "model.registered"} <= types
    assert all(
        text.startswith(chain[:8])
        for text in await page.locator("#pipeline tbody tr td:nth-child(6)").all_inner_texts()
    )


async def test_the_dataset_page_shows_each_versions_checks_and_its_schema_changes(
    tab: Tab, loop: dict[str, Any]
) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open(f"/datasets/{MODEL}")
    await expect(page.locator("#v1")).to_contain_text(loop["sha256"])
    await expect(page.locator("#v2")).to_contain_text("Validation report")
    await expect(page.locator("#v2")).to_contain_text("Schema changes since the previous published version")


async def test_the_keyboard_reaches_the_content_and_every_control(tab: Tab, loop: dict[str, Any]) -> None:
    await tab.sign_in(loop["viewer"])
    page = await tab.open("/")
    await page.keyboard.press("Tab")
    await expect(page.locator(":focus")).to_have_text("Skip to content")
    await page.keyboard.press("Enter")
    await expect(page.locator("main")).to_be_focused()
    await page.keyboard.press("Tab")
    focused = page.locator(":focus")
    await expect(focused).to_have_attribute("href", re.compile("^/models/"))
