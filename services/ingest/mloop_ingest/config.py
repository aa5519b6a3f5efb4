from mloop_common.settings import ServiceSettings


class IngestSettings(ServiceSettings):
    """Ingest settings (env prefix MLOOP_INGEST_)."""

    max_upload_bytes: int = 200 * 1024 * 1024
