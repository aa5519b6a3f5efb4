"""drift: monitored versions, observations, windows and reports

Revision ID: drift_0001
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.db import create_messaging_tables

revision = "drift_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "monitored_versions",
        sa.Column("model", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("profile", sa.JSON, nullable=False),
        sa.Column("baseline", sa.JSON, nullable=False),
        sa.Column("window_size", sa.Integer, nullable=False),
        sa.Column("cooldown_windows", sa.Integer, nullable=False),
        sa.Column("next_window", sa.Integer, nullable=False, server_default="1"),
        sa.Column("cooldown", sa.JSON, nullable=False),
        sa.Column("retired", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("promoted_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "observations",
        sa.Column("request_id", sa.String(100), primary_key=True),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inputs", sa.JSON, nullable=True),
        sa.Column("prediction", sa.JSON, nullable=True),
        sa.Column("probabilities", sa.JSON, nullable=True),
        sa.Column("label", sa.JSON, nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_index", sa.Integer, nullable=True),
    )
    op.create_index(
        "ix_observations_open",
        "observations",
        ["model", "version", "logged_at"],
        postgresql_where=sa.text("window_index IS NULL AND logged_at IS NOT NULL"),
    )
    op.create_index(
        "ix_observations_labelled",
        "observations",
        ["model", "labelled_at"],
        postgresql_where=sa.text("labelled_at IS NOT NULL AND logged_at IS NOT NULL"),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("model", sa.String(63), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("window_index", sa.Integer, nullable=False),
        sa.Column("drift_detected", sa.Boolean, nullable=False),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("action", sa.String(32), nullable=True),
        sa.Column("emitted", sa.Boolean, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("model", "version", "window_index"),
    )


def downgrade() -> None:
    for table in ("reports", "observations", "monitored_versions", "outbox", "inbox"):
        op.drop_table(table)
