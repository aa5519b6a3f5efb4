"""Alembic environment of the registry schema: its tables are the metadata in mloop_registry.store."""

from mloop_common.db import run_migrations_env
from mloop_registry.config import RegistrySettings
from mloop_registry.store import metadata

run_migrations_env("registry", metadata, RegistrySettings)
