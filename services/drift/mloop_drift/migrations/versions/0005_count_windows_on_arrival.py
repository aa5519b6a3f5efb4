"""drift: count windows are filled on arrival

Revision ID: drift_0005
Revises: drift_0004

A watched version's predictions go into their count window as they are recorded, and the version
remembers how many its filling window holds: no per-event count of unplaced rows, no re-reading them
to move them into a window. Predictions left unplaced by earlier versions of drift are placed, oldest
first, with the next predictions that arrive.

Frozen like 0001: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "drift_0005"
down_revision = "drift_0004"


def upgrade() -> None:
    op.add_column("monitored_versions", sa.Column("window_fill", sa.Integer(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("monitored_versions", "window_fill")
