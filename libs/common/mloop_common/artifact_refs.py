"""What a service's live rows need from the artifact store: the answer of its ``GET /v1/artifacts/references``,
which the registry's artifact retention (mloop_registry.artifact_gc) gathers before it deletes anything."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, Field

REFERENCES_PATH = "/v1/artifacts/references"


class ArtifactReferences(BaseModel):
    """Artifacts a service needs. ``uris`` name them; ``sha256`` names content by digest alone (e.g. a model
    version's training data in its lineage): every stored artifact with that digest is needed, whatever its kind."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    service: str
    uris: list[str] = Field(default_factory=list)
    sha256: list[str] = Field(default_factory=list)

    @classmethod
    def of(cls, service: str, uris: Iterable[str | None], sha256: Iterable[str | None] = ()) -> ArtifactReferences:
        """Sorted, each once, the missing (None) left out."""
        return cls(service=service, uris=sorted({u for u in uris if u}), sha256=sorted({d for d in sha256 if d}))
