"""trainer: runs and the datasets it has seen

Revision ID: trainer_0001
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.db import create_messaging_tables

revision = "trainer_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("snapshot_uri", sa.Text, nullable=False),
        sa.Column("snapshot_sha256", sa.String(64), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("time_column", sa.String(200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(63), nullable=False, index=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(32), nullable=False),
        sa.Column("trigger_event_id", sa.String(100), nullable=False),
        sa.Column("spec_version", sa.Integer, nullable=False),
        sa.Column("spec_digest", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(63), nullable=False),
        sa.Column("dataset_version", sa.Integer, nullable=False),
        sa.Column("dataset_sha256", sa.String(64), nullable=False),
        sa.Column("recent_data_sha256", sa.String(64), nullable=True),
        sa.Column("details", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("code_version", sa.String(80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("trigger_event_id", "model"),
    )


def downgrade() -> None:
    for table in ("runs", "datasets", "outbox", "inbox"):
        op.drop_table(table)
