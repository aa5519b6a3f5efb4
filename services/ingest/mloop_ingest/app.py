"""Ingest's FastAPI app."""

from __future__ import annotations

from fastapi import FastAPI

from mloop_common.http import service_app
from mloop_ingest import access, api
from mloop_ingest.bootstrap import bootstrap
from mloop_ingest.config import IngestSettings

# Room in a request for the multipart framing and the form fields around the file.
FORM_OVERHEAD = 1024 * 1024


def create_app(settings: IngestSettings) -> FastAPI:
    return service_app(
        settings,
        bootstrap=bootstrap,
        router=api.router,
        rules=access.RULES,
        description="Publish dataset versions; each accepted version emits data.published.",
        max_body_bytes=settings.max_upload_bytes + FORM_OVERHEAD,
    )
