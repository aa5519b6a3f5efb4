"""validator: evaluations

Revision ID: validator_0001
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.db import create_messaging_tables

revision = "validator_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(63), nullable=False, index=True),
        sa.Column("run_id", sa.String(64), nullable=False, unique=True),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("candidate_metrics", sa.JSON, nullable=False),
        sa.Column("champion_version", sa.Integer, nullable=True),
        sa.Column("champion_metrics", sa.JSON, nullable=True),
        sa.Column("slices", sa.JSON, nullable=False),
        sa.Column("registered_version", sa.Integer, nullable=True),
        sa.Column("holdout_rows", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )


def downgrade() -> None:
    for table in ("evaluations", "outbox", "inbox"):
        op.drop_table(table)
