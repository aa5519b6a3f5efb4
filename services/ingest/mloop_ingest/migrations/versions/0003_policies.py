"""ingest: check thresholds per dataset (dataset_policies)

Revision ID: ingest_0003

Frozen once deployed: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0003"
down_revision = "ingest_0002"


def upgrade() -> None:
    # No foreign key to datasets: a policy may be set before the dataset's first version.
    op.create_table(
        "dataset_policies",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("updated_by", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("dataset_policies")
