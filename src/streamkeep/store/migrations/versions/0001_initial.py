"""Initial schema: chats, messages (a tree per chat) and generations.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(40)
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
RUNNING = sa.text("status = 'running'")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "chats",
        sa.Column("id", ID, nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("system", sa.Text(), nullable=True),
        sa.Column("active_leaf_id", ID, nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chats")),
    )
    op.create_index(op.f("ix_chats_updated_at_id"), "chats", ["updated_at", "id"])

    op.create_table(
        "messages",
        sa.Column("id", ID, nullable=False),
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("parent_id", ID, nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("parts", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("finish_reason", sa.Text(), nullable=True),
        sa.Column("usage", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("completed_at", nullable=True),
        sa.CheckConstraint(
            "role IN ('system', 'user', 'assistant', 'tool')", name=op.f("ck_messages_role")
        ),
        sa.CheckConstraint(
            "status IN ('streaming', 'complete', 'stopped', 'error', 'interrupted')",
            name=op.f("ck_messages_status"),
        ),
        sa.ForeignKeyConstraint(
            ["chat_id"], ["chats.id"], name=op.f("fk_messages_chat_id_chats"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["messages.id"],
            name=op.f("fk_messages_parent_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(op.f("ix_messages_chat_id_parent_id"), "messages", ["chat_id", "parent_id"])
    op.create_index(op.f("ix_messages_parent_id"), "messages", ["parent_id"])

    op.create_table(
        "generations",
        sa.Column("id", ID, nullable=False),
        sa.Column("chat_id", ID, nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("worker_id", sa.Text(), nullable=True),
        _ts("started_at"),
        _ts("heartbeat_at"),
        _ts("ended_at", nullable=True),
        sa.CheckConstraint("status IN ('running', 'finished')", name=op.f("ck_generations_status")),
        sa.ForeignKeyConstraint(
            ["chat_id"],
            ["chats.id"],
            name=op.f("fk_generations_chat_id_chats"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_generations_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generations")),
        sa.UniqueConstraint(
            "chat_id", "idempotency_key", name=op.f("uq_generations_chat_id_idempotency_key")
        ),
    )
    op.create_index(op.f("ix_generations_message_id"), "generations", ["message_id"])
    op.create_index(
        op.f("uq_generations_running_chat_id"),
        "generations",
        ["chat_id"],
        unique=True,
        sqlite_where=RUNNING,
        postgresql_where=RUNNING,
    )


def downgrade() -> None:
    op.drop_table("generations")
    op.drop_table("messages")
    op.drop_table("chats")
