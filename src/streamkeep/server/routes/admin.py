"""Admin: every user with their usage, disabling a user, every user's chats.

Only an admin may call these (with auth off, the single user is the admin). Anyone
else is answered 404, exactly as a path that does not exist, rather than 403: a 403
would tell a signed-in user that the path is there and that a role they lack opens
it, and would answer `POST /api/admin/users/NAME/disable` differently from an
unknown path; the 404 tells them nothing, the same rule by which another user's chat
is answered as an unknown one (`http.auth`). A request without credentials is still a
401 first, and a method the path does not take a 405 (the router answers both before
this check, for any path); neither says what the path would do, and the paths
themselves are public in /openapi.json.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from starlette.exceptions import HTTPException

from streamkeep.http.auth import CallerDep
from streamkeep.http.deps import ManagerDep, StoreDep
from streamkeep.server.errors import RequestRefused
from streamkeep.server.schemas import (
    ERROR_RESPONSES,
    AdminChat,
    AdminChatPage,
    AdminDisabled,
    AdminUser,
    AdminUserList,
)
from streamkeep.store import UsageTotals


async def require_admin(caller: CallerDep) -> None:
    """404 for anyone but an admin, as the app answers an unknown path (see the
    module docstring). It runs before the route's own parameters are read, so a
    malformed query answers the same."""
    if not caller.is_admin:
        raise HTTPException(404)


router = APIRouter(
    prefix="/api/admin",
    tags=["admin"],
    responses=ERROR_RESPONSES,
    dependencies=[Depends(require_admin)],
)


@router.get("/users", response_model=AdminUserList)
async def list_users(store: StoreDep) -> AdminUserList:
    """Every user, disabled ones too, oldest first, each with what their replies used."""
    users = await store.list_users()
    # A usage row is a user's totals (and its label, which the answer leaves out).
    used: dict[str | None, UsageTotals] = {r.group_id: r for r in await store.usage("user")}
    nothing = UsageTotals.sum([])
    return AdminUserList(
        items=[AdminUser(**u.model_dump(), usage=used.get(u.id, nothing)) for u in users]
    )


@router.post("/users/{name}/disable", response_model=AdminDisabled)
async def disable_user(
    name: str, store: StoreDep, manager: ManagerDep, caller: CallerDep
) -> AdminDisabled:
    """Disable the user: their sessions and API keys stop working at once, on every
    worker (one transaction), then every reply of theirs still generating is stopped,
    on whichever worker runs it, and stored `stopped`."""
    user = await store.get_user_by_name(name)
    if caller.user is not None and caller.user.id == user.id:
        raise RequestRefused(422, "invalid_operation", "an admin cannot disable themselves")
    disabled = await store.disable_user(user.id)
    # Read after the disable: no request of theirs gets in any more. A reply whose
    # request got in just before it, and whose rows are written only after this read
    # (milliseconds), runs on; calling this again stops it.
    running = await store.running_chats_of_user(user.id)
    results = await asyncio.gather(*(manager.stop(chat_id) for chat_id in running))
    stopped = [chat_id for chat_id, done in zip(running, results, strict=True) if done]
    return AdminDisabled(user=disabled, stopped=stopped)


@router.get("/chats", response_model=AdminChatPage)
async def list_chats(
    store: StoreDep,
    user: Annotated[str | None, Query(description="Only this user's chats (by name).")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> AdminChatPage:
    """Every user's chats (or one user's), newest first, each with its owner's name."""
    user_id = None if user is None else (await store.get_user_by_name(user)).id
    chats, next_cursor = await store.list_chats(limit=limit, cursor=cursor, user_id=user_id)
    # Users are never deleted: every owner a chat names is in this list.
    names = {u.id: u.name for u in await store.list_users()}
    items = [
        AdminChat(
            **chat.model_dump(),
            owner=names[chat.user_id] if chat.user_id is not None else None,
        )
        for chat in chats
    ]
    return AdminChatPage(items=items, next_cursor=next_cursor)
