"""Replies asked of a fallback alias keep which model answered and which were skipped:
`messages.answered_by` and `messages.fallbacks`.

Both NULL for every existing message (none was asked of an alias).

Revision ID: 0006_message_fallbacks
Revises: 0005_chat_tools
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006_message_fallbacks"
down_revision: str | None = "0005_chat_tools"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("answered_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("fallbacks", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("fallbacks")
        batch.drop_column("answered_by")
