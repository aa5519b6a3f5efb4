"""Alembic environment of the trainer schema: its tables are the metadata in mloop_trainer.store."""

from mloop_common.db import run_migrations_env
from mloop_trainer.config import TrainerSettings
from mloop_trainer.store import metadata

run_migrations_env("trainer", metadata, TrainerSettings)
