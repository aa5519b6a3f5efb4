"""In-memory twins of the ports, for service-level handler tests that run in milliseconds.

They keep the behaviour that matters: a unit of work rolls back on error, the inbox
refuses an event twice, and every event a handler stages or publishes goes through the
real CloudEvents codec (``to_record`` then ``from_record``), so a payload that would not
survive Kafka fails the test too.
"""

from __future__ import annotations

import copy
import re
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from mloop_common.auth import DEVELOPMENT_ADMIN_KEY, ROLES, Permission, Principal, StaticKeys, new_key
from mloop_common.contracts import (
    CANARY,
    PRODUCTION,
    SHADOW,
    AliasView,
    Lineage,
    ModelDetail,
    ModelSummary,
    RegisterVersion,
    VersionView,
)
from mloop_common.errors import NotFound, ServiceUnavailable
from mloop_common.events import TOPIC_OF, Envelope, P, from_record, to_record
from mloop_common.settings import S3Settings
from mloop_common.spec import ModelSpec, spec_digest


def through_the_wire(event: Envelope) -> Envelope:
    """``event`` as a consumer would read it after Kafka: encoded, then decoded."""
    key, value, headers = to_record(event)
    assert key == event.key.encode()
    return from_record(value, headers)


@dataclass
class MemoryState:
    """Everything a fake store holds: the service's tables, its inbox and its committed outbox."""

    tables: dict[str, Any] = field(default_factory=dict)
    inbox: set[tuple[str, str]] = field(default_factory=set)
    outbox: list[Envelope] = field(default_factory=list)


class MemoryUnit:
    """A unit of work on a ``MemoryState``; subclasses add the service's queries over ``self.tables``."""

    def __init__(self, state: MemoryState, consumer: str) -> None:
        self.state = state
        self.tables = state.tables
        self.consumer = consumer

    async def handled(self, event: Envelope) -> bool:
        return (self.consumer, event.id) in self.state.inbox

    async def claim(self, event: Envelope) -> bool:
        if (self.consumer, event.id) in self.state.inbox:
            return False
        self.state.inbox.add((self.consumer, event.id))
        return True

    async def stage(self, event: Envelope) -> None:
        self.state.outbox.append(through_the_wire(event))


M = TypeVar("M", bound=MemoryUnit)


class MemoryStore(Generic[M]):
    """Units of work over one in-memory state: all of a unit's changes vanish when it raises."""

    def __init__(self, unit: type[M], *, consumer: str = "tests", tables: dict[str, Any] | None = None) -> None:
        self.state = MemoryState(tables=tables or {})
        self._unit = unit
        self._consumer = consumer
        self.commits = 0

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[M]:
        before = copy.deepcopy(self.state)
        try:
            yield self._unit(self.state, self._consumer)
        except BaseException:
            self.state.tables.clear()
            self.state.tables.update(before.tables)
            self.state.inbox, self.state.outbox = before.inbox, before.outbox
            raise
        self.commits += 1

    @property
    def published(self) -> list[Envelope]:
        """Events committed to the outbox, in order, as consumers would decode them."""
        return list(self.state.outbox)

    def published_payloads(self, payload_type: type[P]) -> list[P]:
        """The committed events of one payload type, decoded."""
        return [e.decode(payload_type) for e in self.published if e.type == TOPIC_OF[payload_type]]


class RecordingPublisher:
    """A publisher (for services without an outbox) that keeps what it sent, through the real codec."""

    def __init__(self) -> None:
        self.sent: list[Envelope] = []
        self.fail_with: Exception | None = None

    async def publish(self, event: Envelope) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(through_the_wire(event))

    def payloads(self, payload_type: type[P]) -> list[P]:
        return [e.decode(payload_type) for e in self.sent if e.type == TOPIC_OF[payload_type]]


class FakeRegistry:
    """The registry port in memory: specs, versions and aliases, with the real policy's shape.

    ``register`` numbers versions per model and is idempotent per run; like the real registry it
    moves ``production`` to the new version unless the spec asks for approval; with a rollout (canary or
    shadow) in the spec, an existing production stays and the new version takes the rollout alias.
    """

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.specs: dict[str, list[ModelSpec]] = {}
        self.versions: dict[str, list[VersionView]] = {}
        self.lineages: dict[tuple[str, int], Lineage] = {}
        self.aliases: dict[str, dict[str, int]] = {}
        self.unavailable = False
        self._clock = clock or (lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def _check(self) -> None:
        if self.unavailable:
            raise ServiceUnavailable("registry unreachable (fake)")

    def add_spec(self, spec: ModelSpec) -> int:
        """Declare a spec (a new spec version of its model); returns its spec version."""
        self.specs.setdefault(spec.name, []).append(spec)
        self.versions.setdefault(spec.name, [])
        self.aliases.setdefault(spec.name, {})
        return len(self.specs[spec.name])

    def _detail(self, name: str, spec_version: int) -> ModelDetail:
        spec = self.specs[name][spec_version - 1]
        return ModelDetail(
            name=name,
            spec_version=spec_version,
            digest=spec_digest(spec),
            spec=spec,
            created_at=self._clock(),
            aliases=dict(self.aliases[name]),
            versions=len(self.versions[name]),
        )

    def _summary(self, name: str) -> ModelSummary:
        detail = self._detail(name, len(self.specs[name]))
        return ModelSummary(**detail.model_dump(exclude={"versions"}), dataset=detail.spec.dataset)

    async def models_for_dataset(self, dataset: str) -> list[ModelSummary]:
        self._check()
        return [self._summary(n) for n in sorted(self.specs) if self.specs[n][-1].dataset == dataset]

    async def list_models(self) -> list[ModelSummary]:
        self._check()
        return [self._summary(n) for n in sorted(self.specs)]

    async def model(self, name: str, spec_version: int | None = None) -> ModelDetail:
        self._check()
        if name not in self.specs or (spec_version is not None and not 0 < spec_version <= len(self.specs[name])):
            raise NotFound(f"model {name!r} has no spec" + (f" version {spec_version}" if spec_version else ""))
        return self._detail(name, spec_version or len(self.specs[name]))

    async def alias(self, name: str, alias: str) -> AliasView | None:
        self._check()
        version = self.aliases.get(name, {}).get(alias)
        if version is None:
            return None
        return AliasView(**self.version(name, version).model_dump(), alias=alias)

    def version(self, name: str, version: int) -> VersionView:
        view = self.versions[name][version - 1]
        aliases = sorted(a for a, v in self.aliases[name].items() if v == version)
        return view.model_copy(update={"aliases": aliases})

    async def register(self, name: str, request: RegisterVersion) -> VersionView:
        self._check()
        if name not in self.specs:
            raise NotFound(f"model {name!r} does not exist")
        for existing in self.versions[name]:
            if existing.run_id == request.run_id:
                return self.version(name, existing.version)
        # Like the real registry: the stricter of the run's spec and the model's current spec decides.
        run_policy, current_policy = (
            self.specs[name][request.spec_version - 1].promotion,
            self.specs[name][-1].promotion,
        )
        require_approval = run_policy.require_approval or current_policy.require_approval
        canary_percent = max(run_policy.canary_percent, current_policy.canary_percent)
        shadow = run_policy.shadow or current_policy.shadow
        number = len(self.versions[name]) + 1
        status = "pending_approval" if require_approval else "registered"
        self.versions[name].append(
            VersionView(
                model=name,
                version=number,
                run_id=request.run_id,
                evaluation_id=request.evaluation_id,
                spec_version=request.spec_version,
                status=status,
                task=request.task,
                features=request.features,
                metrics=request.metrics,
                artifact=request.artifact,
                profile=request.profile,
                created_at=self._clock() + timedelta(seconds=number),
            )
        )
        self.lineages[(name, number)] = request.lineage
        if status == "registered":
            rollout = CANARY if canary_percent > 0 else SHADOW if shadow else None
            first = PRODUCTION not in self.aliases[name]
            self.aliases[name][PRODUCTION if rollout is None or first else rollout] = number
        return self.version(name, number)

    def promote(self, name: str, version: int, alias: str = PRODUCTION) -> None:
        self.aliases[name][alias] = version


# --- access control -------------------------------------------------------------------------------

# The development admin key: what the CLI and tests use against a stack in development mode.
ADMIN_HEADERS = {"Authorization": f"Bearer {DEVELOPMENT_ADMIN_KEY}"}


async def access_problems(app: FastAPI) -> list[str]:
    """Every route of ``app`` that a caller without a key, or with a key of a role lacking the route's
    permission, gets past (anything but 401 and 403 respectively). Runs without the app's lifespan:
    the check comes before any route needs the service's components."""
    access = app.state.access
    keys = {role: new_key().key for role in ROLES}
    access.authenticator.resolver = StaticKeys(
        {key: Principal(f"tester-{role}", role, key_id="000000000000") for role, key in keys.items()}
    )
    problems = list(map("no permission: {}".format, access.unruled(app)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        for route in app.routes:
            if not isinstance(route, APIRoute):
                continue
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for method in sorted(route.methods or ()):
                permission = access.rules.get((method, route.path))
                if permission is None or permission is Permission.PUBLIC:
                    continue
                anonymous = await client.request(method, path)
                if anonymous.status_code != 401:
                    problems.append(f"{method} {route.path} without a key: {anonymous.status_code}")
                role = next(role for role, granted in ROLES.items() if permission not in granted)
                wrong = await client.request(method, path, headers={"Authorization": f"Bearer {keys[role]}"})
                if wrong.status_code != 403:
                    problems.append(f"{method} {route.path} as {role} (lacks {permission}): {wrong.status_code}")
    return problems


@contextmanager
def recorded_spans() -> Iterator[InMemorySpanExporter]:
    """Spans finished in this process while the block runs; the global provider is set once per process, so
    another test may have set it already."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    try:
        yield memory
    finally:
        memory.shutdown()


@contextmanager
def local_s3() -> Iterator[S3Settings]:
    """A local S3-compatible endpoint (moto in server mode, a dev dependency, in this process) and the
    settings that reach it; moto accepts any credentials."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Settings(
            endpoint_url=f"http://127.0.0.1:{port}",
            region="us-east-1",
            access_key_id="test-key",
            secret_access_key="test-secret",
            allow_http=True,
            max_retries=1,
            retry_seconds=5,
        )
    finally:
        server.stop()


def new_bucket(endpoint: S3Settings) -> str:
    """A new, empty bucket on a local endpoint (an unsigned CreateBucket: moto needs no signature); its name."""
    name = f"mloop-{uuid.uuid4().hex[:12]}"
    httpx.put(f"{endpoint.endpoint_url}/{name}", timeout=10).raise_for_status()
    return name
