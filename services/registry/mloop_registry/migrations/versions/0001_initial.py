"""registry: specs, versions, aliases, audit log

Revision ID: registry_0001
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.db import create_messaging_tables

revision = "registry_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables(op)
    op.create_table(
        "models",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("dataset", sa.String(63), nullable=False, index=True),
        sa.Column("latest_spec_version", sa.Integer, nullable=False),
        sa.Column("next_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "specs",
        sa.Column("name", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
        sa.Column("spec_version", sa.Integer, primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    )
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("evaluation_id", sa.String(64), nullable=False),
        sa.Column("spec_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("task", sa.String(32), nullable=False),
        sa.Column("artifact_uri", sa.Text, nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("profile_uri", sa.Text, nullable=False),
        sa.Column("profile_sha256", sa.String(64), nullable=False),
        sa.Column("features", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("lineage", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("model", "run_id"),
    )
    op.create_table(
        "aliases",
        sa.Column("model", sa.String(63), sa.ForeignKey("models.name"), primary_key=True),
        sa.Column("alias", sa.String(63), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("model", sa.String(63), nullable=True, index=True),
        sa.Column("version", sa.Integer, nullable=True),
        sa.Column("detail", sa.JSON, nullable=False),
    )
    # The audit log is append-only: the database itself refuses edits.
    op.execute("""
        CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
    """)
    op.execute("""
        CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
        FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
    """)


def downgrade() -> None:
    for table in ("audit_log", "aliases", "model_versions", "specs", "models", "outbox", "inbox"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
