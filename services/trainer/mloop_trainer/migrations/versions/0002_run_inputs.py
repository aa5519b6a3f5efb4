"""trainer: where a run's inputs are, so that it can be reproduced

Revision ID: trainer_0002
Revises: trainer_0001

Runs keep the artifact URIs of the dataset snapshot and of the recent production rows they trained
on (their sha256 were already kept). Runs recorded before have none: they cannot be reproduced.

Frozen like 0001: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "trainer_0002"
down_revision = "trainer_0001"


def upgrade() -> None:
    op.add_column("runs", sa.Column("dataset_uri", sa.Text(), nullable=True))
    op.add_column("runs", sa.Column("recent_data_uri", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("runs", "recent_data_uri")
    op.drop_column("runs", "dataset_uri")
