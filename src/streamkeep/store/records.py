"""What the store returns: plain pydantic models (and `PromptMessage`), never rows.

Datetimes are timezone-aware UTC and serialise as ISO 8601 (`model_dump(mode="json")`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamkeep.store.damage import clean_fallbacks, clean_parts, clean_usage

Role = Literal["system", "user", "assistant", "tool"]
MessageStatus = Literal["streaming", "complete", "stopped", "error", "interrupted"]
GenerationStatus = Literal["running", "finished"]
#: what `ChatStore.usage` groups replies by
UsageGroup = Literal["user", "model", "day", "key"]

ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")
MESSAGE_STATUSES: tuple[MessageStatus, ...] = (
    "streaming",
    "complete",
    "stopped",
    "error",
    "interrupted",
)
#: the statuses a generation may end its message with
FINAL_STATUSES: frozenset[str] = frozenset({"complete", "stopped", "error", "interrupted"})
GENERATION_STATUSES: tuple[GenerationStatus, ...] = ("running", "finished")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class ChatRecord(_Record):
    id: str
    title: str | None
    model: str
    system: str | None
    #: the message at the tip of the active branch (None for an empty chat)
    active_leaf_id: str | None
    #: the tools its replies may call (names, as `GET /api/tools` lists them)
    tools: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    #: the highest stream event id a generation of this chat may have used (internal:
    #: the next generation numbers its frames after it; not part of the API's JSON)
    event_seq: int = Field(default=0, exclude=True)
    #: the owner (None: made in single-user mode, nobody's); internal like `event_seq`
    user_id: str | None = Field(default=None, exclude=True)

    @field_validator("tools", mode="before")
    @classmethod
    def _no_tools(cls, v: object) -> object:
        return [] if v is None else v


class MessageRecord(_Record):
    id: str
    chat_id: str
    parent_id: str | None
    role: Role
    #: AI SDK UIMessage parts, e.g. ``{"type": "text", "text": "..."}``
    parts: list[dict[str, Any]]
    status: MessageStatus
    model: str | None
    finish_reason: str | None
    #: input_tokens, output_tokens, reasoning_tokens, cached_input_tokens, estimated
    usage: dict[str, Any] | None
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    #: a reply asked of a fallback alias (`model`): the `provider/model` that answered
    #: (the last tried, when every one failed); None for any other model
    answered_by: str | None = None
    #: the alias's models skipped before it, in order: {"model", "kind", "error",
    #: "status" (the provider's HTTP status, when it gave one)}; None as `answered_by`
    fallbacks: list[dict[str, Any]] | None = None
    #: this message and its siblings (same parent), oldest first; filled by
    #: `ChatStore.active_branch` so a UI can show "2 / 3" and switch branches
    sibling_ids: list[str] = Field(default_factory=list)
    #: the API key an assistant reply was asked with (None: none, or since deleted);
    #: internal, for usage per key
    api_key_id: str | None = Field(default=None, exclude=True)

    # A damaged row reads as what can be read of it (see `store.damage`).
    _readable_parts = field_validator("parts", mode="before")(clean_parts)
    _readable_usage = field_validator("usage", mode="before")(clean_usage)
    _readable_fallbacks = field_validator("fallbacks", mode="before")(clean_fallbacks)


class GenerationRecord(_Record):
    id: str
    chat_id: str
    #: the assistant message this generation writes
    message_id: str
    status: GenerationStatus
    idempotency_key: str | None
    worker_id: str | None
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime | None


class UserRecord(_Record):
    """A user; the password hash is not in it (only `store.accounts` reads it)."""

    id: str
    name: str
    is_admin: bool
    #: set when an admin disabled the user: their sessions and keys no longer work
    disabled_at: datetime | None
    created_at: datetime
    #: who vouches for an external user (an OIDC or JWT issuer, `trusted-header`);
    #: None for a local one
    issuer: str | None = None
    #: from the identity's claims or the proxy's header; None for a local user
    email: str | None = None


class SessionRecord(_Record):
    """A sign-in session of the page; the token is never stored, only its hash."""

    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class ApiKeyRecord(_Record):
    """An API key as lists show it: its visible `prefix`, never the key or its hash."""

    id: str
    user_id: str
    #: the owner's label for it
    name: str | None
    #: the key's first characters (``sk-keep-`` and 8 more)
    prefix: str
    #: the models the key may use; None: all
    allowed_models: list[str] | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class UsageTotals(_Record):
    """What assistant replies with usage used: how many, and their tokens."""

    messages: int
    input_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cached_input_tokens: int
    #: whether any of them counted an estimate (`estimated_messages` did), not the
    #: provider's report: see `llm.usage`
    estimated: bool
    estimated_messages: int

    @classmethod
    def sum(cls, parts: Iterable[UsageTotals]) -> UsageTotals:
        counts = dict.fromkeys(_COUNTS, 0)
        for part in parts:
            for name in _COUNTS:
                counts[name] += getattr(part, name)
        return cls(**counts, estimated=counts["estimated_messages"] > 0)


_COUNTS = (
    "messages",
    "input_tokens",
    "output_tokens",
    "reasoning_tokens",
    "cached_input_tokens",
    "estimated_messages",
)


class _UsageGroup(_Record):
    #: the group's label: a user's name, a model, a UTC day (YYYY-MM-DD), a key prefix
    group: str
    #: what it stands for: the user's or key's id (None: no user or no key), else the
    #: label; internal, not part of the API's JSON
    group_id: str | None = Field(default=None, exclude=True)


class UsageRow(UsageTotals, _UsageGroup):
    """One group of `ChatStore.usage` (its label first: pydantic orders the fields of
    the later base first)."""


@dataclass(frozen=True, slots=True)
class PromptMessage:
    """A stored message as prompt building needs it (see `ChatStore.prompt_history`)."""

    chat_id: str
    role: Role
    parts: list[dict[str, Any]]
