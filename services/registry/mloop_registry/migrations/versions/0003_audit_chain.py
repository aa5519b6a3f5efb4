"""registry: hash-chain the audit log (prev_hash, hash), chaining the entries already written

Revision ID: registry_0003

Frozen once deployed, like registry_0001: it spells out its DDL and its hash function (the one
mloop_registry.audit_chain.entry_hash must keep computing) instead of importing them.
"""

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "registry_0003"
down_revision = "registry_0002"

GENESIS = "0" * 64


def _entry_hash(
    at: datetime, actor: str, action: str, model: str | None, version: int | None, detail: Any, prev: str
) -> str:
    canonical = json.dumps(
        {
            "at": at.astimezone(UTC).isoformat(),
            "actor": actor,
            "action": action,
            "model": model,
            "version": version,
            "detail": detail,
            "prev_hash": prev,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def upgrade() -> None:
    op.add_column("audit_log", sa.Column("prev_hash", sa.String(length=64), nullable=True))
    op.add_column("audit_log", sa.Column("hash", sa.String(length=64), nullable=True))
    # Chain the existing entries in id order. The append-only trigger would refuse these updates; it is
    # off only inside this migration's transaction (ALTER TABLE takes an exclusive lock, so no writer
    # can slip an entry in meanwhile).
    op.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_change")
    table = sa.table(
        "audit_log",
        sa.column("id", sa.BigInteger()),
        sa.column("at", sa.DateTime(timezone=True)),
        sa.column("actor", sa.String()),
        sa.column("action", sa.String()),
        sa.column("model", sa.String()),
        sa.column("version", sa.Integer()),
        sa.column("detail", sa.JSON()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    bind = op.get_bind()
    prev = GENESIS
    for row in bind.execute(sa.select(table).order_by(table.c.id)).all():
        digest = _entry_hash(row.at, row.actor, row.action, row.model, row.version, row.detail, prev)
        bind.execute(sa.update(table).where(table.c.id == row.id).values(prev_hash=prev, hash=digest))
        prev = digest
    op.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_change")
    op.alter_column("audit_log", "prev_hash", nullable=False)
    op.alter_column("audit_log", "hash", nullable=False)


def downgrade() -> None:
    op.drop_column("audit_log", "hash")
    op.drop_column("audit_log", "prev_hash")
