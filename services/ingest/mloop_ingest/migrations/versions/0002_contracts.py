"""ingest: schema contract, class counts and provenance (parent version, publisher, source URI) per version

Revision ID: ingest_0002

Frozen once deployed: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "ingest_0002"
down_revision = "ingest_0001"


def upgrade() -> None:
    # Nullable: versions recorded before this revision have no contract and no recorded provenance.
    op.add_column("dataset_versions", sa.Column("contract", sa.JSON(), nullable=True))
    op.add_column("dataset_versions", sa.Column("labels", sa.JSON(), nullable=True))
    op.add_column("dataset_versions", sa.Column("parent_version", sa.Integer(), nullable=True))
    op.add_column("dataset_versions", sa.Column("publisher", sa.String(200), nullable=True))
    op.add_column("dataset_versions", sa.Column("source_uri", sa.Text(), nullable=True))


def downgrade() -> None:
    for column in ("source_uri", "publisher", "parent_version", "labels", "contract"):
        op.drop_column("dataset_versions", column)
