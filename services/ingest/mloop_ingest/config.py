from typing import ClassVar

from pydantic import Field

from mloop_common.settings import ServiceSettings, service_config


class IngestSettings(ServiceSettings):
    """Ingest settings (env prefix MLOOP_INGEST_)."""

    model_config = service_config("ingest")
    service: ClassVar[str] = "ingest"

    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0)
    # Kafka refuses records over its max.message.bytes (about 1 MB by default): keep data.published below it.
    max_event_bytes: int = Field(900_000, gt=0)
