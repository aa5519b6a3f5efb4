"""drift: indexes for retention

Revision ID: drift_0004
Revises: drift_0003

The retention task deletes the oldest observations and report revisions first, in bounded batches:
observations by prediction time, labels still waiting for their prediction by label time, reports by
creation time.

Frozen like 0001: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "drift_0004"
down_revision = "drift_0003"


def upgrade() -> None:
    op.create_index("ix_observations_logged_at", "observations", ["logged_at"], unique=False)
    op.create_index(
        "ix_observations_unmatched",
        "observations",
        ["labelled_at"],
        unique=False,
        postgresql_where=sa.text("logged_at IS NULL"),
    )
    op.create_index("ix_reports_created_at", "reports", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_reports_created_at", table_name="reports")
    op.drop_index("ix_observations_unmatched", table_name="observations", postgresql_where=sa.text("logged_at IS NULL"))
    op.drop_index("ix_observations_logged_at", table_name="observations")
