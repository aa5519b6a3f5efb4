"""trainer: runs and the datasets it has seen

Revision ID: trainer_0001

Frozen: deployed schemas are at this revision, so it must keep emitting the same DDL. It never
imports the current table definitions (they will change); the shared steps it uses are frozen too.
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.migration_steps import create_messaging_tables_v1, drop_messaging_tables_v1

revision = "trainer_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables_v1(op)
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot_uri", sa.Text(), nullable=False),
        sa.Column("snapshot_sha256", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("time_column", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("trigger_event_id", sa.String(length=100), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("spec_digest", sa.String(length=64), nullable=False),
        sa.Column("dataset", sa.String(length=63), nullable=False),
        sa.Column("dataset_version", sa.Integer(), nullable=False),
        sa.Column("dataset_sha256", sa.String(length=64), nullable=False),
        sa.Column("recent_data_sha256", sa.String(length=64), nullable=True),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("code_version", sa.String(length=80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
        sa.UniqueConstraint("trigger_event_id", "model"),
    )
    op.create_index("ix_runs_model", "runs", ["model"], unique=False)


def downgrade() -> None:
    op.drop_table("runs")
    op.drop_table("datasets")
    drop_messaging_tables_v1(op)
