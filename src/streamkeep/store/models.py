"""The tables: chats, messages (a tree per chat) and generations; users, their
sign-in sessions and API keys; the images messages carry.

Declared as ORM classes (`ChatRow`, `MessageRow`, `GenerationRow`, `UserRow`,
`SessionRow`, `ApiKeyRow`, `ImageRow`, `ImageOwnerRow`: Alembic compares their
metadata); the store reads and writes them with Core statements on `CHATS`,
`MESSAGES`, `GENERATIONS`, `USERS`, `SESSIONS`, `API_KEYS`, `IMAGES` and
`IMAGE_OWNERS`.

The schema is owned by the Alembic revisions in `migrations/versions`; a test checks
that upgrading an empty database gives exactly this metadata. Change both together,
with a new revision (never edit a landed one).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Named constraints, so that later revisions can refer to them (and SQLite's batch
# mode can rebuild tables) on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID_LENGTH = 40
ID = String(ID_LENGTH)
# none_as_null: a Python None is SQL NULL (not the JSON value `null`).
JSONDocument = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every backend.

    SQLite has no timezone type: values are stored as naive UTC text (which sorts in
    time order) and get their UTC tzinfo back when read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store only takes timezone-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDocument}


class ChatRow(Base):
    __tablename__ = "chats"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    title: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    system: Mapped[str | None] = mapped_column(Text)
    # No foreign key: chats and messages would reference each other, which makes
    # creating and cascade-deleting them awkward. The store checks it instead.
    active_leaf_id: Mapped[str | None] = mapped_column(ID)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The highest stream event id any generation of this chat may have used: the next
    # one numbers its frames from here + 1, so a Last-Event-ID is never ambiguous
    # between two generations of a chat (see `ChatStore.start_reply`).
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Whose chat it is; NULL: made in single-user mode (auth off), nobody's.
    user_id: Mapped[str | None] = mapped_column(ID, ForeignKey("users.id"))
    # The names of the tools its replies may call; NULL: none.
    tools: Mapped[list[str] | None] = mapped_column(JSONDocument)

    __table_args__ = (
        Index(None, "updated_at", "id"),
        # A user's chats, newest first (and the foreign key's lookups).
        Index(None, "user_id", "updated_at", "id"),
    )


class MessageRow(Base):
    __tablename__ = "messages"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    chat_id: Mapped[str] = mapped_column(ID, ForeignKey("chats.id", ondelete="CASCADE"))
    parent_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16))
    parts: Mapped[list[dict[str, Any]]] = mapped_column(JSONDocument)
    status: Mapped[str] = mapped_column(String(16))
    model: Mapped[str | None] = mapped_column(Text)
    finish_reason: Mapped[str | None] = mapped_column(Text)
    usage: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]
    # The API key an assistant reply was asked with (usage per key); NULL: none (the
    # page's session, auth off), or the key was deleted since.
    api_key_id: Mapped[str | None] = mapped_column(
        ID, ForeignKey("api_keys.id", ondelete="SET NULL"), index=True
    )
    # A reply asked of a fallback alias: the model that answered (`provider/model`), and
    # those skipped before it, each {"model", "kind", "error", "status"?}. NULL otherwise.
    answered_by: Mapped[str | None] = mapped_column(Text)
    fallbacks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDocument)

    __table_args__ = (
        # Siblings are (chat_id, parent_id); its prefix also serves lookups by chat.
        Index(None, "chat_id", "parent_id"),
        CheckConstraint("role IN ('system', 'user', 'assistant', 'tool')", name="role"),
        CheckConstraint(
            "status IN ('streaming', 'complete', 'stopped', 'error', 'interrupted')",
            name="status",
        ),
    )


class GenerationRow(Base):
    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    chat_id: Mapped[str] = mapped_column(ID, ForeignKey("chats.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(
        ID, ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    __table_args__ = (
        # At most one running generation per chat, enforced by the database so that it
        # holds across processes and hosts; the store translates the violation.
        Index(
            "uq_generations_running_chat_id",
            "chat_id",
            unique=True,
            sqlite_where=text("status = 'running'"),
            postgresql_where=text("status = 'running'"),
        ),
        # NULL keys are distinct on both backends: only real keys collide.
        UniqueConstraint("chat_id", "idempotency_key"),
        CheckConstraint("status IN ('running', 'finished')", name="status"),
    )


class UserRow(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    # argon2id, PHC string form; NULL: the user cannot sign in with a password.
    password_hash: Mapped[str | None] = mapped_column(Text)
    is_admin: Mapped[bool] = mapped_column(Boolean)
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    # An external identity (OIDC, a product's JWT, an auth proxy): who vouches for the
    # user and their id there; NULL for local users.
    issuer: Mapped[str | None] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(320))

    __table_args__ = (UniqueConstraint("issuer", "subject"),)


class SessionRow(Base):
    """A sign-in session of the page (its token is the cookie's value)."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # SHA-256 (hex) of the token: the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    # The key's visible start (`sk-keep-` and 8 more characters): shown in lists, and
    # how a presented key is found before its hash is compared.
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    # SHA-256 (hex) of the whole key: the key itself is never stored.
    key_hash: Mapped[str] = mapped_column(String(64))
    # The models this key may use; NULL: all.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONDocument)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class ImageRow(Base):
    """An image a message carries, once per content (its SHA-256 is its name)."""

    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    media_type: Mapped[str] = mapped_column(String(32))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]


class ImageOwnerRow(Base):
    """Who sent an image in (who may read it back). Auth off: no row, nobody's."""

    __tablename__ = "image_owners"

    sha256: Mapped[str] = mapped_column(
        String(64), ForeignKey("images.sha256", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ID, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


CHATS = cast(Table, ChatRow.__table__)
MESSAGES = cast(Table, MessageRow.__table__)
GENERATIONS = cast(Table, GenerationRow.__table__)
USERS = cast(Table, UserRow.__table__)
SESSIONS = cast(Table, SessionRow.__table__)
API_KEYS = cast(Table, ApiKeyRow.__table__)
IMAGES = cast(Table, ImageRow.__table__)
IMAGE_OWNERS = cast(Table, ImageOwnerRow.__table__)
