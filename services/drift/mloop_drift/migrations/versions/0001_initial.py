"""drift: monitored versions, observations, windows and reports

Revision ID: drift_0001

Frozen: deployed schemas are at this revision, so it must keep emitting the same DDL. It never
imports the current table definitions (they will change); the shared steps it uses are frozen too.
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.migration_steps import create_messaging_tables_v1, drop_messaging_tables_v1

revision = "drift_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables_v1(op)
    op.create_table(
        "monitored_versions",
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("profile", sa.JSON(), nullable=False),
        sa.Column("baseline", sa.JSON(), nullable=False),
        sa.Column("window_size", sa.Integer(), nullable=False),
        sa.Column("cooldown_windows", sa.Integer(), nullable=False),
        sa.Column("next_window", sa.Integer(), server_default="1", nullable=False),
        sa.Column("cooldown", sa.JSON(), nullable=False),
        sa.Column("retired", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("promoted_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("model", "version"),
    )
    op.create_table(
        "observations",
        sa.Column("request_id", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=True),
        sa.Column("prediction", sa.JSON(), nullable=True),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("label", sa.JSON(), nullable=True),
        sa.Column("labelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_index", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(
        "ix_observations_open",
        "observations",
        ["model", "version", "logged_at"],
        unique=False,
        postgresql_where=sa.text("window_index IS NULL AND logged_at IS NOT NULL"),
    )
    op.create_index(
        "ix_observations_labelled",
        "observations",
        ["model", "labelled_at"],
        unique=False,
        postgresql_where=sa.text("labelled_at IS NOT NULL AND logged_at IS NOT NULL"),
    )
    op.create_table(
        "reports",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("window_index", sa.Integer(), nullable=False),
        sa.Column("drift_detected", sa.Boolean(), nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=True),
        sa.Column("emitted", sa.Boolean(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model", "version", "window_index"),
    )


def downgrade() -> None:
    op.drop_table("reports")
    op.drop_table("observations")
    op.drop_table("monitored_versions")
    drop_messaging_tables_v1(op)
