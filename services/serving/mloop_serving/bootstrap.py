"""Serving's composition root: adapters built from settings, handed to the loader and the scorer."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI

from mloop_common.bus import route
from mloop_common.clients import RegistryClient
from mloop_common.events import ModelPromoted, ModelRollout
from mloop_common.http import Degraded, ReadinessCheck
from mloop_common.retry import Backoff, retry_call
from mloop_common.runtime import Runtime
from mloop_serving.batching import MicroBatcher
from mloop_serving.config import ServingSettings
from mloop_serving.handlers import Loader, Scorer
from mloop_serving.host import ModelHost
from mloop_serving.logbook import Logbook, RequestIndex
from mloop_serving.spill import SpillFile


@dataclass(frozen=True)
class ServingService:
    """What the routes use."""

    host: ModelHost
    loader: Loader
    scorer: Scorer


def models_check(loader: Loader) -> ReadinessCheck:
    """Readiness: every production model tried once; ready with the failures as detail if some did not load,
    so one broken model never keeps the others from taking traffic."""

    async def check() -> bool | str | Degraded:
        if not loader.synced:
            return "production models not loaded yet"
        problems = loader.problems()
        return Degraded("; ".join(problems)) if problems else True

    return check


def counter_ids() -> Callable[[], str]:
    """Request ids: a random 64-bit prefix per process and a counter, unique across replicas and restarts
    (a fraction of the cost of a UUID per row)."""
    prefix = secrets.token_hex(8)
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter):x}"


@asynccontextmanager
async def bootstrap(settings: ServingSettings, app: FastAPI) -> AsyncIterator[ServingService]:
    """Build the bus, registry client and artifact store; load production models and their rollouts and follow
    model.promoted and model.rollout; report each load to the registry (model.served)."""
    runtime = Runtime(settings)
    registry = RegistryClient(settings.common.registry_url, key=settings.own_key)
    host = ModelHost()
    loader = Loader(
        registry=registry,
        artifacts=runtime.artifacts,
        host=host,
        reports=runtime.producer,
        instance=settings.instance_id,
    )
    logbook = Logbook(
        runtime.producer,
        spill=SpillFile(settings.log_spill_path, max_bytes=settings.log_spill_max_bytes),
        batch_size=settings.log_batch_size,
        interval=settings.log_interval_seconds,
        max_event_bytes=settings.log_max_event_bytes,
        publish_timeout=settings.log_publish_timeout_seconds,
        stop_grace=settings.log_stop_grace_seconds,
    )
    scorer = Scorer(
        host=host,
        requests=RequestIndex(),
        logbook=logbook,
        clock=lambda: datetime.now(UTC),
        new_id=counter_ids(),
        max_instances=settings.max_instances,
        max_shadow_pending=settings.max_shadow_pending,
        batcher=(
            MicroBatcher(
                max_wait=settings.batch_max_wait_us / 1e6,
                quiet=settings.batch_quiet_us / 1e6,
                max_rows=settings.batch_max_rows,
            )
            if settings.batching
            else None
        ),
        log_predictions=settings.log_predictions,
    )
    # Every replica must see every promotion: a broadcast consumer (no group on the broker, so none left behind
    # by pods that are gone). It reads from its start on; the sync below loads what was promoted before.
    runtime.consume(
        route(ModelPromoted, loader.on_model_promoted),
        route(ModelRollout, loader.on_model_rollout),
        group_suffix=f"-{settings.instance_id}",
        broadcast=True,
    )
    await runtime.start(app)
    await logbook.start()
    # The registry may start after us: keep asking until it answers (readiness waits for this).
    initial_sync = asyncio.create_task(
        retry_call(loader.sync_all, what="loading production models", backoff=Backoff(initial=0.5, maximum=5.0))
    )

    app.state.checks["models"] = models_check(loader)
    try:
        yield ServingService(host=host, loader=loader, scorer=scorer)
    finally:
        initial_sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await initial_sync
        await loader.close()
        await scorer.close()
        try:
            await logbook.stop()
        finally:
            await runtime.stop()
            await registry.aclose()
