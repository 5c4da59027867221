"""Chats number their stream events across generations: `chats.event_seq`.

Revision ID: 0002_chat_event_seq
Revises: 0001_initial
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_chat_event_seq"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing chats start at 0: their next generation numbers its frames from 1, as
    # every generation did before this revision.
    with op.batch_alter_table("chats") as batch:
        batch.add_column(
            sa.Column("event_seq", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("event_seq")
