"""registry: specs, versions, aliases, audit log

Revision ID: registry_0001

Frozen: deployed schemas are at this revision, so it must keep emitting the same DDL. It never
imports the current table definitions (they will change); the shared steps it uses are frozen too.
"""

import sqlalchemy as sa
from alembic import op

from mloop_common.migration_steps import create_messaging_tables_v1, drop_messaging_tables_v1

revision = "registry_0001"
down_revision = None


def upgrade() -> None:
    create_messaging_tables_v1(op)
    op.create_table(
        "models",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("dataset", sa.String(length=63), nullable=False),
        sa.Column("latest_spec_version", sa.Integer(), nullable=False),
        sa.Column("next_version", sa.Integer(), server_default="1", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_models_dataset", "models", ["dataset"], unique=False)
    op.create_table(
        "specs",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", "spec_version"),
        sa.ForeignKeyConstraint(["name"], ["models.name"]),
    )
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(length=64), nullable=False),
        sa.Column("evaluation_id", sa.String(length=64), nullable=False),
        sa.Column("spec_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("artifact_uri", sa.Text(), nullable=False),
        sa.Column("artifact_sha256", sa.String(length=64), nullable=False),
        sa.Column("profile_uri", sa.Text(), nullable=False),
        sa.Column("profile_sha256", sa.String(length=64), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("lineage", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("model", "version"),
        sa.UniqueConstraint("model", "run_id"),
        sa.ForeignKeyConstraint(["model"], ["models.name"]),
    )
    op.create_table(
        "aliases",
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("alias", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("model", "alias"),
        sa.ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
        sa.ForeignKeyConstraint(["model"], ["models.name"]),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=63), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_model", "audit_log", ["model"], unique=False)
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
    op.drop_table("audit_log")
    op.drop_table("aliases")
    op.drop_table("model_versions")
    op.drop_table("specs")
    op.drop_table("models")
    drop_messaging_tables_v1(op)
    op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
