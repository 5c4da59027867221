"""Keeping a gateway call as a chat: which messages to store, and the generation.

A call without `x-streamkeep-chat-id` becomes a new chat: a leading system/developer
message is its system prompt, every other request message is stored in order, and the
reply is generated under the last one.

A call with the header continues that chat. OpenAI clients resend the whole
conversation each time, so only what the chat's active branch lacks is stored:
- when the branch (role, text and tool-call ids of each message) is a prefix of the
  request, the messages after it;
- otherwise (the client rewrote its history) the trailing turn: the messages after the
  request's last assistant message.
Either way they go under the active leaf, and the reply under them.

The reply runs as a `Generation` of the chat API's own machinery (event log,
checkpoints, final write); only its encoder differs. So a client that leaves mid-stream
still leaves a complete stored reply.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from streamkeep.gateway.convert import (
    NO_IMAGES,
    MessageImages,
    StoredIn,
    new_messages,
    split_system,
    stored_signature,
    to_stored,
)
from streamkeep.gateway.errors import GatewayError
from streamkeep.gateway.respond import Tap
from streamkeep.gateway.schemas import ChatCompletionBody
from streamkeep.generation import Generation, GenerationManager
from streamkeep.generation.generation import GenerationIds
from streamkeep.generation.titles import title_from
from streamkeep.http.auth import Caller, owned_chat
from streamkeep.llm.types import ChatRequest
from streamkeep.store import ChatStore, ids
from streamkeep.store.chats import NewChat
from streamkeep.store.errors import GenerationConflict, InvalidOperation, NotFound

# A new chat's rows are written after its first token went out; a database blip then
# must not lose the call, so the write is tried again (about 3 s in all).
INSERT_ATTEMPTS = 5
INSERT_FIRST_DELAY = 0.2

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Placement:
    """Where a call's messages go: the chat, the parent, and what to store first."""

    chat_id: str
    parent_id: str | None
    prior: list[StoredIn]
    #: set for a call that starts a new chat: (system prompt, title) to create it with
    new_chat: tuple[str | None, str | None] | None = None
    #: for a call that fills an empty, untitled chat: the title its first message gives
    title: str | None = None
    #: the owner of a new chat (None: auth is off)
    user_id: str | None = None
    #: the API key the call came with, kept on the reply (usage per key)
    api_key_id: str | None = None


async def place(
    store: ChatStore,
    body: ChatCompletionBody,
    chat_id: str | None,
    caller: Caller,
    images: MessageImages = NO_IMAGES,
) -> Placement:
    """Decide where the call goes (see the module docstring); writes nothing. A chat
    of another user's is not found, as an unknown one."""
    system, rest = split_system(body.messages)
    if chat_id is None:
        if not rest:  # only a system message: keep it as a message, there is no prompt
            system, rest = None, body.messages
        stored = to_stored(rest, body.messages, images)
        new_chat = (system, _title(body))
        return Placement(
            ids.chat_id(),
            None,
            stored,
            new_chat=new_chat,
            user_id=caller.user_id,
            api_key_id=caller.key_id,
        )
    try:
        chat = await owned_chat(store, caller, chat_id)
        branch = await store.active_branch(chat_id)
    except NotFound:
        raise _chat_not_found(chat_id) from None
    if system is None or system != chat.system:
        rest = body.messages  # a different system prompt is kept as a message
    fresh = new_messages(rest, [stored_signature(m.role, m.parts) for m in branch])
    if not fresh and chat.active_leaf_id is None:
        fresh = rest or body.messages
    title = _title(body) if chat.title is None and chat.active_leaf_id is None else None
    return Placement(
        chat.id,
        chat.active_leaf_id,
        to_stored(fresh, body.messages, images),
        title=title,
        api_key_id=caller.key_id,
    )


async def start(
    manager: GenerationManager,
    store: ChatStore,
    placement: Placement,
    *,
    model: str,
    request: ChatRequest,
    tap: Tap,
    generation_id: str | None = None,
    write_first: bool = False,
    detached: bool = False,
) -> Generation:
    """Store the placement's messages and an empty reply, and stream into it.

    A new chat cannot collide with anything, so its rows are written alongside the
    stream, once `tap.opened` says the first token is out (the generation waits for
    them before its final write): the first token never waits on the database. A
    continued chat is written first, because a running generation in it must refuse
    the call (409) before anything streams; so is any call with `write_first` (a
    response, whose id may be asked for while it runs). A `detached` one (a background
    response) runs on when its client leaves, whatever `stop_on_disconnect` says.
    """
    gen_ids = GenerationIds(
        id=generation_id or ids.generation_id(),
        chat_id=placement.chat_id,
        message_id=ids.message_id(),
        user_message_id=None,
        model=model,
    )
    first = write_first or placement.new_chat is None
    gate = None if first else tap.opened
    insert = asyncio.create_task(_insert(store, placement, gen_ids, manager.worker_id, gate))
    if first:
        try:
            await insert
        except GenerationConflict as exc:
            raise GatewayError(
                409,
                f"chat {placement.chat_id!r} is generating a reply already ({exc.message})",
                param="x-streamkeep-chat-id",
                code="generation_conflict",
            ) from None
        except NotFound:  # deleted since `place` looked
            raise _chat_not_found(placement.chat_id) from None
    try:
        return manager.launch_prepared(
            gen_ids, request, tap, encoder=tap.sink, ready=insert, detached=detached
        )
    except BaseException:
        insert.cancel()  # e.g. shutting down: roll the rows back rather than orphan them
        raise


async def _insert(
    store: ChatStore,
    placement: Placement,
    gen_ids: GenerationIds,
    worker_id: str,
    gate: asyncio.Event | None,
) -> None:
    if gate is not None:
        await gate.wait()
    delay = INSERT_FIRST_DELAY
    for attempt in range(1, INSERT_ATTEMPTS + 1):
        try:
            await _start_reply(store, placement, gen_ids, worker_id)
            return
        except (GenerationConflict, NotFound, InvalidOperation):
            raise  # answers, not faults: the caller maps them
        except Exception as exc:  # the database is away: the streaming client must not wait
            if attempt == INSERT_ATTEMPTS:
                logger.error("gateway call %s could not be stored: %s", gen_ids.id, exc)
                raise
            logger.warning("storing gateway call %s failed (try %d): %s", gen_ids.id, attempt, exc)
            await asyncio.sleep(delay)
            delay *= 2


async def _start_reply(
    store: ChatStore, placement: Placement, gen_ids: GenerationIds, worker_id: str
) -> None:
    new_chat = None
    if placement.new_chat is not None:  # created in the reply's own transaction
        system, title = placement.new_chat
        new_chat = NewChat(system=system, title=title, user_id=placement.user_id)
    await store.start_reply(
        chat_id=placement.chat_id,
        parent_id=placement.parent_id,
        user_content=None,
        model=gen_ids.model,
        worker_id=worker_id,
        prior=[(m.role, m.parts) for m in placement.prior],
        message_id=gen_ids.message_id,
        generation_id=gen_ids.id,
        title=placement.title,
        api_key_id=placement.api_key_id,
        new_chat=new_chat,
    )


def _chat_not_found(chat_id: str) -> GatewayError:
    return GatewayError(
        404,
        f"chat {chat_id!r} (x-streamkeep-chat-id) not found",
        param="x-streamkeep-chat-id",
        code="chat_not_found",
    )


def _title(body: ChatCompletionBody) -> str | None:
    for msg in body.messages:
        if msg.role == "user" and msg.content:
            return title_from(msg.content)
    return None
