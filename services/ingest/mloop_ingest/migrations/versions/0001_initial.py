"""ingest: dataset versions

Revision ID: ingest_0001
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.db import create_messaging_tables

revision = "ingest_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("name", sa.String(63), sa.ForeignKey("datasets.name"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("upload_sha256", sa.String(64), nullable=False),
        sa.Column("snapshot_uri", sa.Text, nullable=True),
        sa.Column("snapshot_sha256", sa.String(64), nullable=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("columns", sa.JSON, nullable=False),
        sa.Column("schema", sa.JSON, nullable=False),
        sa.Column("stats", sa.JSON, nullable=False),
        sa.Column("report", sa.JSON, nullable=False),
        sa.Column("target", sa.String(200), nullable=False),
        sa.Column("time_column", sa.String(200), nullable=True),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("name", "upload_sha256"),
    )


def downgrade() -> None:
    for table in ("dataset_versions", "datasets", "outbox", "inbox"):
        op.drop_table(table)
