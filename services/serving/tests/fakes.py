"""Serving's ports for handler tests: a registry with real model files behind it, a clock and request ids."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from mloop_common.artifacts import ArtifactStore
from mloop_common.contracts import PRODUCTION, Lineage, RegisterVersion, VersionView
from mloop_common.events import ArtifactPointer, Envelope, ModelPromoted, new_event
from mloop_common.modelio import dump_model
from mloop_common.profile import build_reference_profile
from mloop_common.spec import ModelSpec
from mloop_common.testing import FakeRegistry, RecordingPublisher, through_the_wire
from mloop_serving.handlers import Loader, Scorer
from mloop_serving.host import ModelHost
from mloop_serving.logbook import Logbook, RequestIndex

FEATURES = ["usage", "calls"]


def training_frame(rows: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"usage": rng.normal(size=rows), "calls": rng.normal(size=rows)})
    frame["churned"] = np.where(frame["usage"] + frame["calls"] > 0, "yes", "no")
    return frame


@cache
def classifier_file(seed: int = 0) -> bytes:
    """A trusted skops file of a fitted classifier."""
    frame = training_frame(seed=seed)
    return dump_model(LogisticRegression().fit(frame[FEATURES], frame["churned"]))


@cache
def untrusted_file() -> bytes:
    """A well-formed skops file of a classifier that is not on mloop's trusted list."""
    frame = training_frame()
    return sio.dumps(SVC().fit(frame[FEATURES], frame["churned"]))


@cache
def reference_profile() -> bytes:
    return build_reference_profile(training_frame(), FEATURES).to_json()


def churn_spec(name: str = "churn") -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "dataset": name,
            "task": "classification",
            "target": "churned",
            "features": FEATURES,
            "estimators": [{"class": "LogisticRegression"}],
            "metric": "accuracy",
        }
    )


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 3, 1, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sequential_ids(prefix: str = "req") -> Callable[[], str]:
    """Request ids a test can predict: req-1, req-2, ..."""
    numbers = itertools.count(1)
    return lambda: f"{prefix}-{next(numbers)}"


@dataclass
class Serving:
    """Serving's handlers wired to fakes of every port, as the composition root wires the real ones."""

    registry: FakeRegistry
    artifacts: ArtifactStore
    publisher: RecordingPublisher
    host: ModelHost
    loader: Loader
    logbook: Logbook
    scorer: Scorer
    clock: Clock

    async def register(self, model_file: bytes, *, sha256: str | None = None, model: str = "churn") -> VersionView:
        """Register a version of ``model`` (churn or fraud, both churn-like) whose artifact is ``model_file``
        (vouched for by ``sha256``, default its own)."""
        artifact = self.artifacts.put(model_file, kind="models", suffix=".skops")
        profile_ref = self.artifacts.put(reference_profile(), kind="profiles", suffix=".json")
        run_id = uuid.uuid4().hex
        return await self.registry.register(
            model,
            RegisterVersion(
                run_id=run_id,
                evaluation_id=uuid.uuid4().hex,
                spec_version=1,
                task="classification",
                artifact=ArtifactPointer(uri=artifact.uri, sha256=sha256 or artifact.sha256),
                profile=ArtifactPointer(uri=profile_ref.uri, sha256=profile_ref.sha256),
                features=FEATURES,
                metrics={"accuracy": 0.9},
                lineage=Lineage(
                    dataset=model,
                    dataset_version=1,
                    dataset_sha256="e" * 64,
                    trigger="data.published",
                    code_version="test",
                    estimator_class="LogisticRegression",
                    params={},
                    seed=42,
                    training_seconds=0.1,
                    trained_event_id=uuid.uuid4().hex,
                    correlation_id=run_id,
                ),
            ),
        )


def promoted_event(version: VersionView) -> tuple[ModelPromoted, Envelope]:
    """The model.promoted event the registry emits when ``version`` becomes production, as a consumer reads it."""
    payload = ModelPromoted(
        model=version.model,
        version=version.version,
        alias=PRODUCTION,
        reason="auto",
        task=version.task,
        target="churned",
        artifact=version.artifact,
        profile=version.profile,
        features=version.features,
        metrics=version.metrics,
    )
    event = through_the_wire(new_event(payload, source="mloop/registry", subject=version.model))
    return event.decode(ModelPromoted), event


def serving(artifacts: ArtifactStore, *, max_event_bytes: int = 900_000) -> Serving:
    registry = FakeRegistry()
    registry.add_spec(churn_spec())
    registry.add_spec(churn_spec("fraud"))
    publisher = RecordingPublisher()
    host = ModelHost()
    clock = Clock()
    logbook = Logbook(publisher, max_event_bytes=max_event_bytes)
    return Serving(
        registry=registry,
        artifacts=artifacts,
        publisher=publisher,
        host=host,
        loader=Loader(registry=registry, artifacts=artifacts, host=host),
        logbook=logbook,
        scorer=Scorer(
            host=host, requests=RequestIndex(), logbook=logbook, clock=clock, new_id=sequential_ids(), max_instances=100
        ),
        clock=clock,
    )
