"""Accounts: users, their sign-in sessions and API keys, and `chats.user_id`.

Existing chats keep `user_id` NULL: made in single-user mode, nobody's.

Revision ID: 0003_accounts
Revises: 0002_chat_event_seq
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_accounts"
down_revision: str | None = "0002_chat_event_seq"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(40)
HASH = sa.String(64)  # SHA-256, hex
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _owned_by_user(table: str) -> tuple[sa.Column[object], sa.ForeignKeyConstraint]:
    return (
        sa.Column("user_id", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f(f"fk_{table}_user_id_users"), ondelete="CASCADE"
        ),
    )


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", ID, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        _ts("disabled_at", nullable=True),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )

    op.create_table(
        "sessions",
        sa.Column("id", ID, nullable=False),
        *_owned_by_user("sessions"),
        sa.Column("token_hash", HASH, nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_sessions_token_hash")),
    )
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", ID, nullable=False),
        *_owned_by_user("api_keys"),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("key_hash", HASH, nullable=False),
        sa.Column("allowed_models", JSON, nullable=True),
        _ts("created_at"),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("prefix", name=op.f("uq_api_keys_prefix")),
    )
    op.create_index(op.f("ix_api_keys_user_id"), "api_keys", ["user_id"])

    with op.batch_alter_table("chats") as batch:
        batch.add_column(sa.Column("user_id", ID, nullable=True))
        batch.create_foreign_key(op.f("fk_chats_user_id_users"), "users", ["user_id"], ["id"])
        batch.create_index(op.f("ix_chats_user_id_updated_at_id"), ["user_id", "updated_at", "id"])


def downgrade() -> None:
    with op.batch_alter_table("chats") as batch:
        batch.drop_index(op.f("ix_chats_user_id_updated_at_id"))
        batch.drop_constraint(op.f("fk_chats_user_id_users"), type_="foreignkey")
        batch.drop_column("user_id")
    op.drop_table("api_keys")
    op.drop_table("sessions")
    op.drop_table("users")
