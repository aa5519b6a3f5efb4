"""Artifact retention: a mark-and-sweep of the content-addressed store (issue 10, "Retention").

Mark: every service whose rows point at artifacts says which it needs (``GET /v1/artifacts/references``; what
"live" means is each service's own rule, docs/operations.md#artifact-retention): the registry itself, ingest
and the trainer. Sweep: a stored artifact is deleted only if no service names it (by URI, or by digest) AND it was
last written longer ago than the grace period, so one written moments before the row that names it commits is
never taken (storing the same bytes again restarts its age: ``mloop_common.artifacts``).

Fail safe: if any service cannot be asked, nothing is deleted in that run.

``decide`` is the pure rule; ``ArtifactSweeper`` gathers what it needs, applies it and deletes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
from prometheus_client import Counter
from pydantic import BaseModel

from mloop_common.artifact_refs import REFERENCES_PATH, ArtifactReferences
from mloop_common.artifacts import StoredArtifact, SweptStore
from mloop_common.errors import ServiceUnavailable

log = logging.getLogger(__name__)
DELETED = Counter("mloop_artifacts_deleted_total", "Artifacts deleted by retention (unreferenced and past the grace)")
FREED = Counter("mloop_artifacts_freed_bytes_total", "Bytes of artifacts deleted by retention")
SWEEPS = Counter("mloop_artifact_sweeps_total", "Artifact retention runs, by outcome", ["outcome"])


@dataclass(frozen=True)
class Verdict:
    """What a sweep does with each stored artifact: delete it, or keep it because it is referenced or young."""

    delete: list[StoredArtifact] = field(default_factory=list)
    referenced: list[StoredArtifact] = field(default_factory=list)
    young: list[StoredArtifact] = field(default_factory=list)


def decide(
    stored: Iterable[StoredArtifact], references: Iterable[ArtifactReferences], *, now: datetime, grace: timedelta
) -> Verdict:
    """Delete what no service references and what is older than ``grace``; keep the rest.

    ``references`` must be every service's answer: the caller decides nothing when one is missing.
    """
    uris: set[str] = set()
    digests: set[str] = set()
    for answer in references:
        uris.update(answer.uris)
        digests.update(answer.sha256)
    verdict = Verdict()
    for artifact in stored:
        if artifact.uri in uris or artifact.sha256 in digests:
            verdict.referenced.append(artifact)
        elif now - artifact.modified < grace:
            verdict.young.append(artifact)
        else:
            verdict.delete.append(artifact)
    return verdict


class SweptArtifact(BaseModel):
    uri: str
    size: int
    modified: datetime


class SweepReport(BaseModel):
    """What one run found and deleted (or, in a dry run, would delete)."""

    dry_run: bool
    grace_hours: float
    stored: int  # artifacts in the store when the run began
    referenced: int  # kept: a service needs them
    young: int  # kept: unreferenced, but written within the grace period
    deleted: list[SweptArtifact]  # deleted, or to be deleted by a dry run
    freed_bytes: int
    references: dict[str, int]  # per service: how many URIs and digests it named


class SweepRefused(ServiceUnavailable):
    """A service could not be asked which artifacts it needs, so nothing was deleted."""

    code = "artifact_gc_refused"


Source = Callable[[], Awaitable[ArtifactReferences]]


class HttpReferences:
    """Asks another service's ``GET /v1/artifacts/references`` with the registry's own key."""

    def __init__(self, name: str, url: str, *, key: str, timeout: float) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self.key = key
        self.timeout = timeout

    async def __call__(self) -> ArtifactReferences:
        async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
            response = await client.get(self.url + REFERENCES_PATH, headers={"Authorization": f"Bearer {self.key}"})
        if response.status_code != 200:
            raise RuntimeError(f"answered {response.status_code}: {response.text[:200]}")
        return ArtifactReferences.model_validate(response.json())


class ArtifactSweeper:
    """Runs the sweep: lists the store, asks every source, decides, re-checks each artifact's age and deletes."""

    def __init__(
        self,
        *,
        artifacts: SweptStore,
        sources: dict[str, Source],
        grace: timedelta,
        clock: Callable[[], datetime],
    ) -> None:
        if grace <= timedelta(0):
            raise ValueError("the grace period must be positive")
        self.artifacts = artifacts
        self.sources = sources
        self.grace = grace
        self.clock = clock
        self._running = asyncio.Lock()  # the background task and an operator's run never overlap

    async def sweep(self, *, dry_run: bool = False, actor: str = "the retention task") -> SweepReport:
        log.info("artifact retention run by %s%s", actor, " (dry run)" if dry_run else "")
        async with self._running:
            try:
                report = await self._sweep(dry_run)
            except SweepRefused:
                SWEEPS.labels("refused").inc()
                raise
            except Exception:
                SWEEPS.labels("failed").inc()
                raise
        SWEEPS.labels("dry_run" if dry_run else "completed").inc()
        return report

    async def _sweep(self, dry_run: bool) -> SweepReport:
        # Listed before the references are asked for: an artifact a row names by the time a service answers was
        # written (or stored again, which restarts its age) before that row committed, so it is either named or
        # young when it is looked at again right before its deletion.
        stored = await asyncio.to_thread(lambda: list(self.artifacts.stored()))
        answers = await self._references()
        verdict = decide(stored, answers, now=self.clock(), grace=self.grace)
        deleted: list[StoredArtifact] = []
        young = len(verdict.young)
        for artifact in verdict.delete:
            if dry_run:
                deleted.append(artifact)
                continue
            current = await asyncio.to_thread(self.artifacts.describe, artifact.uri)
            if current is None:
                continue  # gone meanwhile (another registry replica's run)
            if self.clock() - current.modified < self.grace:
                young += 1  # stored again since it was listed: a row is about to name it
                continue
            if await asyncio.to_thread(self.artifacts.delete, artifact.uri):
                deleted.append(current)
                DELETED.inc()
                FREED.inc(current.size)
                log.info(
                    "retention deleted %s (%d bytes, last written %s)", current.uri, current.size, current.modified
                )
        return SweepReport(
            dry_run=dry_run,
            grace_hours=self.grace.total_seconds() / 3600,
            stored=len(stored),
            referenced=len(verdict.referenced),
            young=young,
            deleted=[SweptArtifact(uri=a.uri, size=a.size, modified=a.modified) for a in deleted],
            freed_bytes=sum(a.size for a in deleted),
            references={a.service: len(a.uris) + len(a.sha256) for a in answers},
        )

    async def _references(self) -> Sequence[ArtifactReferences]:
        names = list(self.sources)
        results = await asyncio.gather(*(self.sources[name]() for name in names), return_exceptions=True)
        failures = [
            f"{name} ({_reason(r)})" for name, r in zip(names, results, strict=True) if isinstance(r, Exception)
        ]
        if failures:
            message = "artifact retention deleted nothing: could not ask " + ", ".join(failures)
            log.warning("%s", message)
            raise SweepRefused(message)
        return [r for r in results if isinstance(r, ArtifactReferences)]

    async def run(self, interval: float) -> None:
        """Sweep every ``interval`` seconds until cancelled (the first after one interval: the other services are
        likely still starting with this one); a refused or failed run is logged and tried again next time."""
        while True:
            await asyncio.sleep(interval)
            try:
                report = await self.sweep()
            except asyncio.CancelledError:
                raise
            except SweepRefused:
                pass  # logged where it was refused
            except Exception:
                log.exception("artifact retention failed; trying again in %.0fs", interval)
            else:
                log.info(
                    "artifact retention: %d of %d artifacts deleted (%d bytes), %d referenced, %d young",
                    len(report.deleted),
                    report.stored,
                    report.freed_bytes,
                    report.referenced,
                    report.young,
                )


def _reason(error: BaseException) -> str:
    if isinstance(error, httpx.TransportError):
        return f"not reachable: {type(error).__name__} {error}".strip()
    return str(error)[:300] or type(error).__name__
