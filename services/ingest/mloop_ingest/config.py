from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from mloop_common.settings import ServiceSettings, service_config
from mloop_ingest.checks import CheckPolicy
from mloop_ingest.sources import Root


class IngestSettings(ServiceSettings):
    """Ingest settings (env prefix MLOOP_INGEST_)."""

    model_config = service_config("ingest")
    service: ClassVar[str] = "ingest"

    max_upload_bytes: int = Field(2 * 1024**3, gt=0, description="uploaded file, counted while it streams")
    max_columns: int = Field(10_000, gt=1, description="wider files are refused before they are parsed")
    # Where uploads and snapshots are spooled while a version is prepared (default: the system's temp folder).
    spool_dir: Path | None = None
    checks: CheckPolicy = CheckPolicy()
    # Where versions may be registered from by URI (JSON list): file:///... folders, https://host/prefix/, or
    # s3://bucket/prefix/ reached with the artifact store's S3 settings (MLOOP_S3__...).
    source_roots: list[str] = []

    @field_validator("source_roots")
    @classmethod
    def _roots_parse(cls, roots: list[str]) -> list[str]:
        for root in roots:
            Root.parse(root)  # a bad root stops the service at start, not at the first registration
        return roots

    # Kafka refuses records over its max.message.bytes (about 1 MB by default): keep data.published below it.
    max_event_bytes: int = Field(900_000, gt=0)
