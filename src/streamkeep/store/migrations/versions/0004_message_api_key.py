"""Messages remember the API key their reply was asked with: `messages.api_key_id`.

Usage per key reads it. Existing messages keep it NULL (asked with no key); a deleted
key leaves its replies with NULL too, never deletes them.

Revision ID: 0004_message_api_key
Revises: 0003_accounts
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_message_api_key"
down_revision: str | None = "0003_accounts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(40), nullable=True))
        batch.create_foreign_key(
            op.f("fk_messages_api_key_id_api_keys"),
            "api_keys",
            ["api_key_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_messages_api_key_id"), ["api_key_id"])


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(op.f("ix_messages_api_key_id"))
        batch.drop_constraint(op.f("fk_messages_api_key_id_api_keys"), type_="foreignkey")
        batch.drop_column("api_key_id")
