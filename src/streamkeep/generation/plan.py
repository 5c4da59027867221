"""What a reply, a regeneration and an edit have in common: one `ReplyPlan`.

Each reads what it answers (the chat, the message it branches from) and turns it into a
plan: where the reply goes in the tree, the new user message if there is one, the
model and the prompt. The manager then starts every plan the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamkeep.generation.parts import UIPart, history_to_messages, image_of
from streamkeep.generation.titles import title_from
from streamkeep.llm.types import ImagePart, Message, ToolSpec, Usage
from streamkeep.store.errors import ImagesNotSupported, NotFound
from streamkeep.store.images import Image
from streamkeep.tools import Tool

if TYPE_CHECKING:
    from streamkeep.llm.registry import ModelRegistry
    from streamkeep.store import ChatRecord, ChatStore


@dataclass(frozen=True, slots=True)
class ToolUse:
    """The tools a reply may call: the server's, and those its client runs."""

    tools: tuple[Tool, ...] = ()
    client: tuple[ToolSpec, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.tools or self.client)


@dataclass(frozen=True, slots=True)
class Continued:
    """A finished reply a new generation goes on with (its calls answered by a client)."""

    message_id: str
    parts: list[UIPart]
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """One reply to start: the rows to write, and the request for the model."""

    chat_id: str
    parent_id: str | None
    # The new user message the reply answers; None for a regeneration.
    user_content: str | None
    model: str
    prompt: list[Message]
    # The chat's `event_seq` as read when the reply started: its frames number on from it.
    event_seq: int
    # For an untitled chat whose first user message this is (see `first_title`).
    title: str | None = None
    idempotency_key: str | None = None
    # The API key the reply was asked with, kept on it (usage per key).
    api_key_id: str | None = None
    tools: ToolUse = ToolUse()
    # The message this reply goes on with, instead of a new one.
    continued: Continued | None = None
    # The new user message's image parts (stored before its text).
    user_files: tuple[dict[str, Any], ...] = ()


async def plan_reply(
    store: ChatStore,
    registry: ModelRegistry,
    chat: ChatRecord,
    parent_id: str | None,
    user_content: str | None,
    *,
    model: str | None,
    idempotency_key: str | None,
    api_key_id: str | None = None,
    tools: ToolUse | None = None,
    images: Sequence[Image] = (),
    files: Sequence[dict[str, Any]] = (),
    takes_images: Callable[[str], bool] = lambda model: True,
) -> ReplyPlan:
    """The plan of a reply under `parent_id` in `chat`, with a new user message when
    `user_content` is given: with `images` (new, checked) after `files` (stored image
    parts, an edited message's). An unknown model, or images (new or in the history)
    for a model that `takes_images` says takes none, raise before anything is written."""
    model = model or chat.model
    registry.resolve(model)
    prompt = await _prompt(store, chat, parent_id)
    title = None
    kept = [p for p in files if image_of(p) is not None]
    if user_content is not None:
        parts = [i for p in kept if (i := image_of(p)) is not None]
        parts += [ImagePart(i.media_type, i.data, ref=i.sha256) for i in images]
        prompt.append(Message("user", user_content, images=parts))
        title = first_title(chat.title, parent_id, user_content)
        if kept:
            prompt = await load_images(store, prompt)
    check_images(prompt, model, takes_images)
    return ReplyPlan(
        chat_id=chat.id,
        parent_id=parent_id,
        user_content=user_content,
        user_files=(*kept, *(i.part() for i in images)),
        model=model,
        prompt=prompt,
        event_seq=chat.event_seq,
        title=title,
        idempotency_key=idempotency_key,
        api_key_id=api_key_id,
        tools=tools or ToolUse(),
    )


async def prompt_before(store: ChatStore, chat: ChatRecord, parent_id: str | None) -> list[Message]:
    """The prompt a reply under `parent_id` is sent (see `_prompt`)."""
    return await _prompt(store, chat, parent_id)


async def _prompt(store: ChatStore, chat: ChatRecord, parent_id: str | None) -> list[Message]:
    """The system prompt and the branch up to `parent_id`, for the model. A message of
    another chat is not found, exactly as an unknown one: the other chat may be another
    user's, whose ids must not be told from ids nobody has."""
    if parent_id is None:
        return history_to_messages(chat.system, [])
    history = await store.prompt_history(parent_id)  # NotFound for an unknown message
    if history[0].chat_id != chat.id:
        raise NotFound("message", parent_id)
    return await load_images(store, history_to_messages(chat.system, history))


async def load_images(store: ChatStore, messages: list[Message]) -> list[Message]:
    """The messages with their stored images read (one gone meanwhile is left out)."""
    wanted = [i.ref for m in messages for i in m.images if i.ref is not None and not i.data]
    if not wanted:
        return messages
    found = await store.load_images(wanted)
    for message in messages:
        if message.images:
            message.images = [
                ImagePart(found[i.ref].media_type, found[i.ref].data, ref=i.ref)
                if i.ref in found
                else i
                for i in message.images
                if i.data or i.ref in found
            ]
    return messages


def check_images(prompt: list[Message], model: str, takes_images: Callable[[str], bool]) -> None:
    """ImagesNotSupported when the prompt holds images and the model takes none."""
    if any(m.images for m in prompt):
        check_takes_images(model, takes_images)


def check_takes_images(model: str, takes_images: Callable[[str], bool]) -> None:
    """ImagesNotSupported when the model takes no images."""
    if not takes_images(model):
        raise ImagesNotSupported(
            f"model {model!r} takes no images; choose a model that does "
            "(a provider's `images` setting says which)"
        )


def first_title(title: str | None, parent_id: str | None, content: str) -> str | None:
    """The title an untitled chat gets from a user message at its root (its first, or
    an edit of it); None when the chat has a title or the message is not its first."""
    if title is not None or parent_id is not None:
        return None
    return title_from(content)
