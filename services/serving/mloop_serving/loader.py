"""Loading production versions: at start from the registry, later on model.promoted."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from mloop_common.artifacts import ArtifactStore
from mloop_common.clients import RegistryClient
from mloop_common.events import Envelope, ModelPromoted
from mloop_common.modelio import load_model
from mloop_serving.host import LoadedModel, ModelHost, warmup_instance

log = logging.getLogger(__name__)


class Loader:
    def __init__(self, host: ModelHost, registry: RegistryClient, artifacts: ArtifactStore) -> None:
        self.host = host
        self.registry = registry
        self.artifacts = artifacts
        self.synced = False
        self._lock = asyncio.Lock()

    async def sync_all(self) -> None:
        """Load the production version of every model the registry knows."""
        for model in await self.registry.list_models():
            if "production" in model.get("aliases", {}):
                await self.ensure_production(model["name"])
        self.synced = True

    async def on_model_promoted(self, event: Envelope) -> None:
        promoted = event.payload()
        assert isinstance(promoted, ModelPromoted)
        # Ask the registry rather than trust event order: a replayed old promotion must not win.
        await self.ensure_production(promoted.model)

    async def ensure_production(self, name: str) -> None:
        async with self._lock:
            current = await self.registry.alias(name, "production")
            if current is None or current["version"] == self.host.current_version(name):
                return
            loaded = await asyncio.to_thread(self._load, current)
            previous = self.host.swap(loaded)
            log.info("serving %s v%s (was v%s)", name, loaded.version, previous.version if previous else None)

    def _load(self, version: dict[str, Any]) -> LoadedModel:
        """Verify, deserialise safely and warm a version; runs in a worker thread."""
        estimator = load_model(self.artifacts.get(version["artifact"]["uri"], version["artifact"]["sha256"]))
        profile = json.loads(self.artifacts.get(version["profile"]["uri"], version["profile"]["sha256"]))
        features = list(version["features"])
        kinds = {f: profile.get("features", {}).get(f, {}).get("kind", "numeric") for f in features}
        model = LoadedModel(
            name=version["model"],
            version=version["version"],
            task=version["task"],
            features=features,
            kinds=kinds,
            estimator=estimator,
            classes=[c.item() if hasattr(c, "item") else c for c in getattr(estimator, "classes_", [])],
        )
        model.predict(model.frame([warmup_instance(profile, features)]))
        return model
