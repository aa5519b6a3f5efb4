"""Migration steps that every service's revisions share.

Frozen: a revision that has run on a deployed schema must keep emitting the same DDL, so a step
here is never edited. A change to the shared inbox/outbox tables is a new step (``..._v2``) that
new revisions call; ``mloop_common.db.add_messaging_tables`` always describes the newest shape.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa


def create_messaging_tables_v1(op: Any) -> None:
    """The inbox and outbox as every service's first revision created them."""
    op.create_table(
        "inbox",
        sa.Column("consumer", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("event_type", sa.String(length=100), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("consumer", "event_id"),
    )
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.String(length=100), nullable=False),
        sa.Column("topic", sa.String(length=200), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("headers", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index("ix_outbox_pending", "outbox", ["seq"], unique=False, postgresql_where=sa.text("sent_at IS NULL"))


def drop_messaging_tables_v1(op: Any) -> None:
    op.drop_table("outbox")
    op.drop_table("inbox")
