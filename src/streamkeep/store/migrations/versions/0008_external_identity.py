"""External identity: `users.issuer`, `users.subject` (unique together) and `users.email`.

A user who arrives through an OIDC sign-in, a product's JWT or an auth proxy's trusted
header is found by who vouches for them (`issuer`) and their id there (`subject`).
Local users keep both NULL (a unique pair of NULLs never collides).

Revision ID: 0008_external_identity
Revises: 0007_images
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_external_identity"
down_revision: str | None = "0007_images"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("issuer", sa.String(255), nullable=True))
        batch.add_column(sa.Column("subject", sa.String(255), nullable=True))
        batch.add_column(sa.Column("email", sa.String(320), nullable=True))
        batch.create_unique_constraint(op.f("uq_users_issuer_subject"), ["issuer", "subject"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(op.f("uq_users_issuer_subject"), type_="unique")
        batch.drop_column("email")
        batch.drop_column("subject")
        batch.drop_column("issuer")
