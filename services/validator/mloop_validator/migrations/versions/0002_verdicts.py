"""validator: verdicts stored before their effects, with named checks and the candidate's report

Revision ID: validator_0002

Frozen once deployed: it never imports the current table definitions.
"""

import sqlalchemy as sa
from alembic import op

revision = "validator_0002"
down_revision = "validator_0001"


def upgrade() -> None:
    op.add_column("evaluations", sa.Column("checks", sa.JSON(), nullable=True))
    op.add_column("evaluations", sa.Column("report", sa.JSON(), nullable=True))
    op.add_column("evaluations", sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True))
    # Verdicts recorded before this revision had no named checks, and were recorded with their effects.
    op.execute("UPDATE evaluations SET checks = '[]', report = '{}', settled_at = created_at")
    op.alter_column("evaluations", "checks", nullable=False)
    op.alter_column("evaluations", "report", nullable=False)


def downgrade() -> None:
    op.drop_column("evaluations", "settled_at")
    op.drop_column("evaluations", "report")
    op.drop_column("evaluations", "checks")
