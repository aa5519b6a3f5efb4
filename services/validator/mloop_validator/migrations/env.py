"""Alembic environment of the validator schema: its tables are the metadata in mloop_validator.store."""

from mloop_common.db import run_migrations_env
from mloop_validator.config import ValidatorSettings
from mloop_validator.store import metadata

run_migrations_env("validator", metadata, ValidatorSettings)
