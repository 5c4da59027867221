"""Chats: create, list, read (with the active branch), update, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from streamkeep.http.auth import CallerDep, owned_chat, resolve_model
from streamkeep.http.deps import ManagerDep, RegistryDep, SettingsDep, StoreDep
from streamkeep.server.launch import check_length
from streamkeep.server.schemas import (
    ERROR_RESPONSES,
    ActiveGeneration,
    ChatCreate,
    ChatDetail,
    ChatPage,
    ChatUpdate,
)
from streamkeep.store.records import ChatRecord

router = APIRouter(prefix="/api/chats", tags=["chats"], responses=ERROR_RESPONSES)


@router.post("", status_code=201, response_model=ChatRecord)
async def create_chat(
    body: ChatCreate,
    store: StoreDep,
    registry: RegistryDep,
    settings: SettingsDep,
    caller: CallerDep,
    manager: ManagerDep,
) -> ChatRecord:
    if body.system is not None:
        check_length(body.system, settings, "system")
    model = body.model or settings.default_model()
    if body.model is not None:
        resolve_model(registry, caller, model)  # unknown model -> 404, and no chat is created
    if body.tools:
        manager.toolbox.resolve(body.tools)  # an unknown name -> 422, and no chat is created
    return await store.create_chat(
        model=model,
        title=body.title,
        system=body.system,
        user_id=caller.user_id,
        tools=body.tools,
    )


@router.get("", response_model=ChatPage)
async def list_chats(
    store: StoreDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> ChatPage:
    """The caller's chats (an admin's too: every user's are under /api/admin)."""
    items, next_cursor = await store.list_chats(limit=limit, cursor=cursor, user_id=caller.user_id)
    return ChatPage(items=items, next_cursor=next_cursor)


@router.get("/{chat_id}", response_model=ChatDetail)
async def get_chat(
    chat_id: str, store: StoreDep, manager: ManagerDep, caller: CallerDep
) -> ChatDetail:
    chat = await owned_chat(store, caller, chat_id)
    messages = await store.active_branch(chat_id)
    live = manager.live(chat_id)
    active = None
    if live is not None and not live.done.is_set():
        active = ActiveGeneration(message_id=live.message_id, last_seq=live.log.next_seq - 1)
    return ChatDetail(**chat.model_dump(), messages=messages, active_generation=active)


@router.patch(
    "/{chat_id}",
    response_model=ChatRecord,
    description="Rename the chat, change its model or its tools, or (`active_leaf_id`) "
    "switch its active branch to the one ending at that message.",
)
async def update_chat(
    chat_id: str,
    body: ChatUpdate,
    store: StoreDep,
    registry: RegistryDep,
    caller: CallerDep,
    manager: ManagerDep,
) -> ChatRecord:
    await owned_chat(store, caller, chat_id)
    if body.model is not None:
        resolve_model(registry, caller, body.model)
    if body.tools:
        manager.toolbox.resolve(body.tools)
    return await store.update_chat(
        chat_id,
        title=body.title,
        model=body.model,
        active_leaf_id=body.active_leaf_id,
        tools=body.tools,
    )


@router.delete("/{chat_id}", status_code=204, response_class=Response)
async def delete_chat(
    chat_id: str, store: StoreDep, manager: ManagerDep, caller: CallerDep
) -> Response:
    await owned_chat(store, caller, chat_id)  # 404 before touching a live generation
    await manager.stop(chat_id)
    await store.delete_chat(chat_id)
    return Response(status_code=204)
