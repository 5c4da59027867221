"""Messages: read one, and the three ways to start a stream (reply, regenerate, edit).

Each stream-starting POST answers with the generation's UI message stream (SSE); see
`server.launch` for `Idempotency-Key` and `server.relay` for the relay itself.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter, Request

from streamkeep.http.auth import CallerDep, check_reply_access, owned_message
from streamkeep.http.deps import ManagerDep, MetricsDep, QuotasDep, SettingsDep, StoreDep
from streamkeep.http.images import images_in
from streamkeep.http.responses import SSEResponse
from streamkeep.server.launch import check_length, idempotency_key, launch
from streamkeep.server.schemas import (
    ERROR_RESPONSES,
    MessageCreate,
    MessageEdit,
    ToolResults,
    stream_doc,
)
from streamkeep.store.records import MessageRecord

router = APIRouter(tags=["messages"], responses=ERROR_RESPONSES)

_STREAM: dict[int | str, dict[str, Any]] = {
    200: stream_doc("Vercel AI SDK UI Message Stream v1 (SSE; every event has an `id:`)")
}


@router.get("/api/messages/{message_id}", response_model=MessageRecord)
async def get_message(message_id: str, store: StoreDep, caller: CallerDep) -> MessageRecord:
    await owned_message(store, caller, message_id)
    return await store.get_message(message_id)


@router.post("/api/chats/{chat_id}/messages", responses=_STREAM)
async def post_message(
    chat_id: str,
    body: MessageCreate,
    request: Request,
    manager: ManagerDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> SSEResponse:
    check_length(body.content, settings)
    await check_reply_access(store, caller, chat_id=chat_id, model=body.model)
    if body.tools:
        manager.toolbox.resolve(body.tools)
    images = await images_in([f.url for f in body.files], settings)
    reply = partial(
        manager.reply,
        chat_id=chat_id,
        content=body.content,
        parent_id=body.parent_id,
        model=body.model,
        idempotency_key=idempotency_key(request),
        api_key_id=caller.key_id,
        tools=body.tools,
        client_tools=[t.spec() for t in body.client_tools],
        images=images,
        images_owner=caller.user_id,
    )
    start = quotas.limited(caller, reply)
    return await launch(request, start, metrics, manager=manager, chat_id=chat_id)


@router.post(
    "/api/messages/{message_id}/regenerate",
    responses=_STREAM,
    description="A new answer: a sibling of an assistant message (or, for a user "
    "message, a new reply under it).",
)
async def regenerate(
    message_id: str,
    request: Request,
    manager: ManagerDep,
    metrics: MetricsDep,
    store: StoreDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> SSEResponse:
    await check_reply_access(store, caller, message_id=message_id)
    again = partial(
        manager.regenerate,
        message_id,
        idempotency_key=idempotency_key(request),
        api_key_id=caller.key_id,
    )
    start = quotas.limited(caller, again)
    return await launch(request, start, metrics, manager=manager, message_id=message_id)


@router.post(
    "/api/messages/{message_id}/edit",
    responses=_STREAM,
    description="A new sibling of a user message with this content, and its reply.",
)
async def edit(
    message_id: str,
    body: MessageEdit,
    request: Request,
    manager: ManagerDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> SSEResponse:
    check_length(body.content, settings)
    await check_reply_access(store, caller, message_id=message_id)
    edited = partial(
        manager.edit,
        message_id,
        body.content,
        idempotency_key=idempotency_key(request),
        api_key_id=caller.key_id,
    )
    start = quotas.limited(caller, edited)
    return await launch(request, start, metrics, manager=manager, message_id=message_id)


@router.post(
    "/api/messages/{message_id}/tool-results",
    responses=_STREAM,
    description="Answer the calls a reply is waiting for (tools the client runs), and "
    "go on with the same assistant message.",
)
async def tool_results(
    message_id: str,
    body: ToolResults,
    request: Request,
    manager: ManagerDep,
    metrics: MetricsDep,
    store: StoreDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> SSEResponse:
    await check_reply_access(store, caller, message_id=message_id)
    if body.tools:
        manager.toolbox.resolve(body.tools)
    go_on = partial(
        manager.continue_reply,
        message_id,
        [r.outcome() for r in body.results],
        tools=body.tools,
        client_tools=[t.spec() for t in body.client_tools],
        idempotency_key=idempotency_key(request),
        api_key_id=caller.key_id,
    )
    start = quotas.limited(caller, go_on)
    return await launch(request, start, metrics, manager=manager, message_id=message_id)
