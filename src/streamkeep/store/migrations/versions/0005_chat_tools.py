"""Chats remember the tools their replies may call: `chats.tools`.

A JSON list of tool names; NULL (every existing chat) is no tools.

Revision ID: 0005_chat_tools
Revises: 0004_message_api_key
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_chat_tools"
down_revision: str | None = "0004_message_api_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("tools", JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_column("tools")
