"""ingest: dataset versions

Revision ID: ingest_0001

Frozen: deployed schemas are at this revision, so it must keep emitting the same DDL. It never
imports the current table definitions (they will change); the shared steps it uses are frozen too.
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.migration_steps import create_messaging_tables_v1, drop_messaging_tables_v1

revision = "ingest_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables_v1(op)
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("next_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("upload_sha256", sa.String(length=64), nullable=False),
        sa.Column("snapshot_uri", sa.Text(), nullable=True),
        sa.Column("snapshot_sha256", sa.String(length=64), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=False),
        sa.Column("time_column", sa.String(length=200), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", "version"),
        sa.UniqueConstraint("name", "upload_sha256"),
        sa.ForeignKeyConstraint(["name"], ["datasets.name"]),
    )


def downgrade() -> None:
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
    drop_messaging_tables_v1(op)
