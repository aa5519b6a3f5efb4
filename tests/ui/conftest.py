"""A real browser (Debian's Chromium, driven by Playwright) against the web UI on the real stack."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright

LOCAL = Path(__file__).resolve().parents[2] / "deploy" / "local"
SCREENSHOTS = Path(__file__).parent / "screenshots"
# Without these, Chromium keeps trying to reach Google's hosts, which this closed network refuses.
QUIET = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = subprocess.run(
        [str(LOCAL / "chromium.sh"), "install"], check=True, capture_output=True, text=True
    ).stdout.strip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=executable, args=QUIET)
        yield launched
        await launched.close()


class Tab:
    """One signed-out browser context; console errors and failed requests are collected for the test to check."""

    def __init__(self, page: Page, base: str) -> None:
        self.page = page
        self.base = base
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))

    async def open(self, path: str) -> Page:
        await self.page.goto(self.base + path)
        return self.page

    async def sign_in(self, key: str) -> None:
        await self.page.goto(self.base + "/login")
        await self.page.fill("#key", key)
        await self.page.click("form[action='/login'] button[type=submit]")
        await self.page.wait_for_load_state()

    async def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest_asyncio.fixture(loop_scope="module")
async def tab(browser: Browser, ui: str) -> AsyncIterator[Tab]:
    context = await browser.new_context(viewport={"width": 1366, "height": 900})
    opened = Tab(await context.new_page(), ui)
    yield opened
    await context.close()
    assert opened.problems == [], opened.problems  # a script error or a refused asset (CSP) is a bug


@pytest.fixture(scope="module")
def ui(stack) -> str:  # type: ignore[no-untyped-def]
    return str(stack.start_ui())
