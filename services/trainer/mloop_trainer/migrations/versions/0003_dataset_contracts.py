"""trainer: the contract of the newest dataset version it has seen

Revision ID: trainer_0003
Revises: trainer_0002

A dataset version's schema contract (from ingest's data.published v2) is kept beside its snapshot, so a
drift-triggered retrain embeds it in the new version's reference profile too. Older rows have none.

Frozen like 0001: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "trainer_0003"
down_revision = "trainer_0002"


def upgrade() -> None:
    op.add_column("datasets", sa.Column("contract_uri", sa.Text(), nullable=True))
    op.add_column("datasets", sa.Column("contract_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("datasets", "contract_sha256")
    op.drop_column("datasets", "contract_uri")
