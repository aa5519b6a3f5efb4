"""registry: serving instances' reports on loading aliased versions

Revision ID: registry_0002

Frozen once deployed, like registry_0001: it spells out its DDL instead of importing the tables.
"""

import sqlalchemy as sa
from alembic import op

revision = "registry_0002"
down_revision = "registry_0001"


def upgrade() -> None:
    op.create_table(
        "serving_reports",
        sa.Column("model", sa.String(length=63), nullable=False),
        sa.Column("instance", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=63), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("loaded", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("serving_version", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model"], ["models.name"]),
        sa.PrimaryKeyConstraint("model", "instance", "alias"),
    )


def downgrade() -> None:
    op.drop_table("serving_reports")
