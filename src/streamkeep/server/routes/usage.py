"""Usage: the tokens the stored replies used, summed per user, model, UTC day or API
key (`ChatStore.usage`), for whom the caller may see.

A user sees their own usage only: naming another user (`user=`) is answered exactly as
naming nobody's, 404, so user names cannot be probed here. An admin sees every user's,
or one user's with `user=`; with auth off the single user is the admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from streamkeep.http.auth import Caller, CallerDep
from streamkeep.http.deps import StoreDep
from streamkeep.server.errors import RequestRefused
from streamkeep.server.schemas import ERROR_RESPONSES, UsageReport, When
from streamkeep.store import ChatStore, NotFound, UsageGroup

router = APIRouter(tags=["usage"], responses=ERROR_RESPONSES)


@router.get("/api/usage", response_model=UsageReport)
async def usage(
    store: StoreDep,
    caller: CallerDep,
    group_by: UsageGroup = "user",
    start: Annotated[
        When | None,
        Query(alias="from", description="From this date or time on (UTC if no zone is given)."),
    ] = None,
    end: Annotated[
        When | None, Query(alias="to", description="Before this date or time (exclusive).")
    ] = None,
    user: Annotated[str | None, Query(description="Only this user's (by name).")] = None,
) -> UsageReport:
    """The usage of the caller's replies (an admin's: every user's), per `group_by`,
    with the total."""
    if start is not None and end is not None and start > end:
        raise RequestRefused(422, "invalid_request", "`from` is after `to`")
    user_id = await whose_usage(store, caller, user)
    rows = await store.usage(group_by, start=start, end=end, user_id=user_id)
    return UsageReport.of(group_by, start, end, rows)


async def whose_usage(store: ChatStore, caller: Caller, name: str | None) -> str | None:
    """The user whose usage the caller asks for, by `name` (None: everyone's, for an
    admin; the caller's own, for anyone else). NotFound for a name the caller may not
    see, as for one nobody has."""
    if caller.is_admin:
        return None if name is None else (await store.get_user_by_name(name)).id
    assert caller.user is not None  # only auth off has no user, and makes an admin
    if name is not None and name != caller.user.name:
        raise NotFound("user", name)
    return caller.user.id
