"""Alembic environment of the drift schema: its tables are the metadata in mloop_drift.store."""

from mloop_common.db import run_migrations_env
from mloop_drift.config import DriftSettings
from mloop_drift.store import metadata

run_migrations_env("drift", metadata, DriftSettings)
