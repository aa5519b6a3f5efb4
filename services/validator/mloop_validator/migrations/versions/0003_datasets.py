"""validator: the published dataset versions, for pinned evaluation sets

Revision ID: validator_0003

Frozen once deployed: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "validator_0003"
down_revision = "validator_0002"


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("snapshot_uri", sa.Text(), nullable=False),
        sa.Column("snapshot_sha256", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", "version", name="datasets_pkey"),
    )


def downgrade() -> None:
    op.drop_table("datasets")
