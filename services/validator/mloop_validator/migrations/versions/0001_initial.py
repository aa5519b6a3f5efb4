"""validator: evaluations

Revision ID: validator_0001

Frozen: deployed schemas are at this revision, so it must keep emitting the same DDL. It never
imports the current table definitions (they will change); the shared steps it uses are frozen too.
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.migration_steps import create_messaging_tables_v1, drop_messaging_tables_v1

revision = "validator_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables_v1(op)
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("metric", sa.String(length=32), nullable=False),
        sa.Column("candidate_metrics", sa.JSON(), nullable=False),
        sa.Column("champion_version", sa.Integer(), nullable=True),
        sa.Column("champion_metrics", sa.JSON(), nullable=True),
        sa.Column("slices", sa.JSON(), nullable=False),
        sa.Column("registered_version", sa.Integer(), nullable=True),
        sa.Column("holdout_rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id"),
    )
    op.create_index("ix_evaluations_model", "evaluations", ["model"], unique=False)


def downgrade() -> None:
    op.drop_table("evaluations")
    drop_messaging_tables_v1(op)
