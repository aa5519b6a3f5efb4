"""Alembic environment of the ingest schema: its tables are the metadata in mloop_ingest.store."""

from mloop_common.db import run_migrations_env
from mloop_ingest.config import IngestSettings
from mloop_ingest.store import metadata

run_migrations_env("ingest", metadata, IngestSettings)
