"""drift: revisable verdicts, the spec's drift policy per version, event times

Revision ID: drift_0002
Revises: drift_0001

A window's verdict is revised when its labels arrive: reports gain a revision number (unique per
window with it), the alarm state (held_for), the performance basis and label coverage. Monitored
versions keep the spec's drift policy, primary metric and time column; observations their event time.

Frozen like 0001: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "drift_0002"
down_revision = "drift_0001"


def upgrade() -> None:
    op.add_column("monitored_versions", sa.Column("policy", sa.JSON(), nullable=True))
    op.add_column("monitored_versions", sa.Column("metric", sa.String(length=32), nullable=True))
    op.add_column("monitored_versions", sa.Column("time_column", sa.String(length=200), nullable=True))
    op.add_column("observations", sa.Column("event_time", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_observations_window",
        "observations",
        ["model", "version", "window_index"],
        unique=False,
        postgresql_where=sa.text("window_index IS NOT NULL"),
    )
    op.add_column("reports", sa.Column("revision", sa.Integer(), server_default="1", nullable=False))
    op.add_column("reports", sa.Column("held_for", sa.String(length=32), nullable=True))
    op.add_column("reports", sa.Column("basis", sa.String(length=16), nullable=True))
    op.add_column("reports", sa.Column("label_coverage", sa.Float(), nullable=True))
    op.add_column("reports", sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    op.drop_constraint("reports_model_version_window_index_key", "reports", type_="unique")
    op.create_unique_constraint(
        "reports_model_version_window_index_revision_key", "reports", ["model", "version", "window_index", "revision"]
    )


def downgrade() -> None:
    # Older code knows one report per window: keep each window's newest revision.
    op.execute(
        "DELETE FROM reports r USING reports newer WHERE newer.model = r.model AND newer.version = r.version "
        "AND newer.window_index = r.window_index AND newer.revision > r.revision"
    )
    op.drop_constraint("reports_model_version_window_index_revision_key", "reports", type_="unique")
    op.create_unique_constraint(
        "reports_model_version_window_index_key", "reports", ["model", "version", "window_index"]
    )
    op.drop_column("reports", "updated_at")
    op.drop_column("reports", "label_coverage")
    op.drop_column("reports", "basis")
    op.drop_column("reports", "held_for")
    op.drop_column("reports", "revision")
    op.drop_index(
        "ix_observations_window", table_name="observations", postgresql_where=sa.text("window_index IS NOT NULL")
    )
    op.drop_column("observations", "event_time")
    op.drop_column("monitored_versions", "time_column")
    op.drop_column("monitored_versions", "metric")
    op.drop_column("monitored_versions", "policy")
