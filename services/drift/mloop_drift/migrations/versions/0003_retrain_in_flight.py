"""drift: one retrain in flight per model version

Revision ID: drift_0003
Revises: drift_0002

A watched version remembers when it last asked for a retrain; until that retrain is decided (a newer
version promoted, the candidate rejected) or a timeout passes, it asks for no other.

Frozen like 0001: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "drift_0003"
down_revision = "drift_0002"


def upgrade() -> None:
    op.add_column("monitored_versions", sa.Column("retrain_requested_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("monitored_versions", "retrain_requested_at")
