"""The UI's composition root: clients of the services' APIs, the sessions and the pipeline feed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI

from mloop_common.events import ALL_TOPICS, Topic
from mloop_common.http import Degraded
from mloop_common.runtime import bus_config, detect_code_version
from mloop_common.telemetry import setup_tracing
from mloop_ui.backend import Backend
from mloop_ui.config import UiSettings
from mloop_ui.feed import Feed, follow
from mloop_ui.sessions import Sessions


def start_backlog(events: int) -> dict[str, int]:
    """Records read back per partition at start: enough of each topic to fill the page, never its whole history;
    a few of the big, frequent prediction and label batches (up to the broker's limit each) stand for the rest."""
    each = max(20, events // 20)
    busy = {Topic.PREDICTIONS_LOGGED.value, Topic.FEEDBACK_RECEIVED.value}
    return {topic: 5 if topic in busy else each for topic in ALL_TOPICS}


@dataclass(frozen=True)
class UiService:
    settings: UiSettings
    backend: Backend
    sessions: Sessions
    feed: Feed


@asynccontextmanager
async def bootstrap(settings: UiSettings, app: FastAPI) -> AsyncIterator[UiService]:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per API call a page makes is noise
    setup_tracing(settings.service)  # a page's calls to the services join their traces
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
    following = asyncio.create_task(follow(feed, bus_config(settings), backlog=start_backlog(settings.pipeline_events)))

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
