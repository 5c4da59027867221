"""Images in messages: `images` (each content once, by SHA-256) and `image_owners`.

A message part refers to an image by URL (`/api/images/<sha256>`); `image_owners`
says which users sent it in, and so may read it back.

Revision ID: 0007_images
Revises: 0006_message_fallbacks
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_images"
down_revision: str | None = "0006_message_fallbacks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH = sa.String(64)  # SHA-256, hex


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("sha256", HASH, nullable=False),
        sa.Column("media_type", sa.String(32), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_images")),
    )
    op.create_table(
        "image_owners",
        sa.Column("sha256", HASH, nullable=False),
        sa.Column("user_id", sa.String(40), nullable=False),
        sa.ForeignKeyConstraint(
            ["sha256"],
            ["images.sha256"],
            name=op.f("fk_image_owners_sha256_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_image_owners_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("sha256", "user_id", name=op.f("pk_image_owners")),
    )
    op.create_index(op.f("ix_image_owners_user_id"), "image_owners", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_image_owners_user_id"), table_name="image_owners")
    op.drop_table("image_owners")
    op.drop_table("images")
