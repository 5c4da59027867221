"""The Vercel AI SDK `useChat` endpoint (its DefaultChatTransport's defaults).

The transport posts `{id, messages, trigger, messageId?}` plus any `body` extras (we
read `model`). The client's message list is only used for its last user message: the
server's stored history is the truth, so a client cannot rewrite the past by editing
its local copy. Resuming (`GET /api/chat/{id}/stream`) lives in `routes.streams`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import APIRouter, Request

from streamkeep.config import Settings
from streamkeep.generation import Generation
from streamkeep.generation.plan import check_takes_images
from streamkeep.generation.steps import ToolOutput
from streamkeep.http.auth import Caller, CallerDep, check_model, owned_chat, resolve_model
from streamkeep.http.deps import (
    ManagerDep,
    MetricsDep,
    QuotasDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
)
from streamkeep.http.images import images_in
from streamkeep.http.responses import SSEResponse
from streamkeep.llm.registry import ModelRegistry
from streamkeep.server.errors import RequestRefused
from streamkeep.server.launch import check_length, idempotency_key, launch
from streamkeep.server.relay import resume_point
from streamkeep.server.schemas import ERROR_RESPONSES, UIMessageIn, UseChatRequest, stream_doc
from streamkeep.store import ChatRecord, ChatStore, InvalidOperation, NotFound

router = APIRouter(tags=["useChat"], responses=ERROR_RESPONSES)


@router.post(
    "/api/chat",
    responses={200: stream_doc("The reply's UI Message Stream v1")},
    summary="useChat: send a message or regenerate",
)
async def use_chat(
    body: UseChatRequest,
    request: Request,
    store: StoreDep,
    manager: ManagerDep,
    registry: RegistryDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> SSEResponse:
    key = idempotency_key(request)
    resume_point(request)  # a malformed Last-Event-ID is refused before anything is written
    if body.tools:
        manager.toolbox.resolve(body.tools)  # an unknown name: 422, nothing written
    client_tools = [t.spec() for t in body.clientTools]
    last = body.messages[-1] if body.messages else None
    if body.trigger == "submit-message" and last is not None and last.role == "assistant":
        # `addToolResult`: the client's results for the calls the reply waits for.
        chat = await owned_chat(store, caller, body.id)
        message_id = await _own_reply(store, chat, last.id)
        start: Callable[[], Awaitable[Generation]] = partial(
            manager.continue_reply,
            message_id,
            _client_results(last),
            tools=body.tools,
            client_tools=client_tools,
            idempotency_key=key,
            api_key_id=caller.key_id,
        )
    elif body.trigger == "regenerate-message":
        chat = await owned_chat(store, caller, body.id)
        check_model(caller, body.model or chat.model)
        target = await _regeneration_target(store, chat, body.messageId)
        start = partial(
            manager.regenerate,
            target,
            model=body.model,
            idempotency_key=key,
            api_key_id=caller.key_id,
            tools=body.tools,
            client_tools=client_tools,
        )
    else:
        content = _last_user_text(body)
        check_length(content, settings)
        images = await images_in(_last_user_files(body), settings)
        chat = await _ensure_chat(store, registry, settings, caller, body, bool(images))
        start = partial(
            manager.reply,
            chat_id=chat.id,
            content=content,
            model=body.model,
            idempotency_key=key,
            api_key_id=caller.key_id,
            tools=body.tools,
            client_tools=client_tools,
            images=images,
            images_owner=caller.user_id,
        )
    start = quotas.limited(caller, start)
    return await launch(request, start, metrics, manager=manager, chat_id=chat.id)


async def _own_reply(store: ChatStore, chat: ChatRecord, message_id: str | None) -> str:
    """The stored reply of this chat a client's assistant message names (404 else)."""
    if message_id is None:
        raise RequestRefused(
            422, "invalid_request", "messages: the last assistant message has no id"
        )
    try:
        message = await store.get_message(message_id)
    except NotFound:
        message = None
    if message is None or message.chat_id != chat.id:
        raise NotFound("message", message_id)
    return message.id


def _client_results(message: UIMessageIn) -> list[ToolOutput]:
    """The calls a client's copy of a reply has answered (`addToolResult`)."""
    results: list[ToolOutput] = []
    for part in message.parts:
        kind, state = str(part.get("type", "")), part.get("state")
        call_id = part.get("toolCallId")
        if not (kind.startswith("tool-") or kind == "dynamic-tool") or not isinstance(call_id, str):
            continue
        if state == "output-available":
            results.append(ToolOutput(call_id, "", output=part.get("output")))
        elif state == "output-error":
            results.append(ToolOutput(call_id, "", error=str(part.get("errorText", ""))))
    return results


def _last_user_text(body: UseChatRequest) -> str:
    for message in reversed(body.messages):
        if message.role == "user":
            text = "".join(str(p.get("text", "")) for p in message.parts if p.get("type") == "text")
            if text.strip():
                return text
            break
    raise RequestRefused(422, "invalid_request", "messages: the last user message has no text")


def _last_user_files(body: UseChatRequest) -> list[str]:
    """The urls (data URIs) of the last user message's file parts."""
    for message in reversed(body.messages):
        if message.role == "user":
            return [str(p.get("url", "")) for p in message.parts if p.get("type") == "file"]
    return []


async def _ensure_chat(
    store: ChatStore,
    registry: ModelRegistry,
    settings: Settings,
    caller: Caller,
    body: UseChatRequest,
    images: bool = False,
) -> ChatRecord:
    """The chat `body.id` names (the caller's: another user's is a 404, as an
    unknown one would be were it not created here), created on its first message."""
    try:
        chat = await store.get_chat(body.id)
    except NotFound:
        model = body.model or settings.default_model()
        resolve_model(registry, caller, model)  # 404 before creating anything
        if images:  # refused before the chat is created (an existing one: by the plan)
            check_takes_images(model, settings.takes_images)
        try:
            return await store.create_chat(model=model, chat_id=body.id, user_id=caller.user_id)
        except InvalidOperation:  # created meanwhile (another tab's first message)
            chat = await store.get_chat(body.id)
    if not caller.owns(chat.user_id):
        raise NotFound("chat", body.id)
    check_model(caller, body.model or chat.model)
    return chat


async def _regeneration_target(store: ChatStore, chat: ChatRecord, message_id: str | None) -> str:
    """The message to answer again: `messageId` if the server knows it, else the
    active branch's last assistant message (or its last message, a user one)."""
    if message_id is not None:
        try:
            message = await store.get_message(message_id)
        except NotFound:
            pass  # a client-side id: fall back to the stored branch
        else:
            if message.chat_id == chat.id:
                return message.id
    branch = await store.active_branch(chat.id)
    if not branch:
        raise RequestRefused(422, "invalid_operation", "the chat has no message to regenerate")
    for message in reversed(branch):
        if message.role == "assistant":
            return message.id
    return branch[-1].id
