"""registry: descriptions and tags on models and versions

Revision ID: registry_0004

Frozen once deployed, like registry_0001: it spells out its DDL instead of importing the tables.
"""

import sqlalchemy as sa
from alembic import op

revision = "registry_0004"
down_revision = "registry_0003"


def upgrade() -> None:
    op.add_column("models", sa.Column("description", sa.Text(), server_default="", nullable=False))
    op.add_column("model_versions", sa.Column("description", sa.Text(), server_default="", nullable=False))
    op.create_table(
        "model_tags",
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["model"], ["models.name"]),
        sa.PrimaryKeyConstraint("model", "key"),
    )
    op.create_table(
        "version_tags",
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=63), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["model", "version"], ["model_versions.model", "model_versions.version"]),
        sa.PrimaryKeyConstraint("model", "version", "key"),
    )
    # Search finds versions by tag key and value.
    op.create_index("ix_version_tags_key_value", "version_tags", ["key", "value"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_version_tags_key_value", table_name="version_tags")
    op.drop_table("version_tags")
    op.drop_table("model_tags")
    op.drop_column("model_versions", "description")
    op.drop_column("models", "description")
