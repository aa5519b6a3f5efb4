"""The UI's composition root: clients of the services' APIs, the sessions and the pipeline feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.http import Degraded
from mloop_common.runtime import bus_config, detect_code_version
from mloop_ui.backend import Backend
from mloop_ui.config import UiSettings
from mloop_ui.feed import Feed, follow
from mloop_ui.sessions import Sessions


@dataclass(frozen=True)
class UiService:
    settings: UiSettings
    backend: Backend
    sessions: Sessions
    feed: Feed


@asynccontextmanager
async def bootstrap(settings: UiSettings, app: FastAPI) -> AsyncIterator[UiService]:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per API call a page makes is noise
    backend = Backend(
        {
            "ingest": settings.ingest_url,
            "trainer": settings.trainer_url,
            "validator": settings.validator_url,
            "registry": settings.common.registry_url,
            "serving": settings.serving_url,
            "drift": settings.drift_url,
        }
    )
    feed = Feed(settings.pipeline_events)
    # Each partition's newest events at start: enough to fill the page, not the topics' whole history.
    following = asyncio.create_task(follow(feed, bus_config(settings), backlog=max(20, settings.pipeline_events // 20)))

    async def pipeline_check() -> bool | Degraded:
        # Pages work without the broker; only the pipeline page waits for it.
        return True if feed.connected else Degraded(f"pipeline feed not connected: {feed.problem or 'starting'}")

    app.state.checks["pipeline"] = pipeline_check
    app.state.code_version = settings.common.code_version or detect_code_version()
    sessions = Sessions(lifetime_seconds=settings.session_hours * 3600, max_sessions=settings.max_sessions)
    try:
        yield UiService(settings=settings, backend=backend, sessions=sessions, feed=feed)
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        await backend.aclose()
