"""Resuming and stopping a chat's generation (also under useChat's `/api/chat/...`).

Event ids count on across a chat's generations (each numbers its frames after the
chat's `event_seq`), so a Last-Event-ID below the live generation's first id is one of
an earlier generation: that client gets the live one from its start, and "ended,
nothing after your id" (204) is judged by the live generation's own last id.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from opentelemetry import trace

from streamkeep.generation import Generation
from streamkeep.generation.tracing import link_current
from streamkeep.http.auth import CallerDep, check_owner
from streamkeep.http.deps import ManagerDep, MetricsDep, StoreDep
from streamkeep.server.relay import remote_stream_response, resume_point, stream_response
from streamkeep.server.schemas import ERROR_RESPONSES, StopResult, stream_doc

router = APIRouter(tags=["streams"], responses=ERROR_RESPONSES)

_RESUME: dict[int | str, dict[str, Any]] = {
    200: stream_doc("The rest of the stream, after `Last-Event-ID` (or `?after=N`)"),
    204: {"description": "The chat has no live generation"},
}


async def resume(
    chat_id: str,
    request: Request,
    manager: ManagerDep,
    metrics: MetricsDep,
    store: StoreDep,
    caller: CallerDep,
) -> Response:
    await check_owner(store, caller, chat_id=chat_id)
    # A finished reply is replayed only to a client that names where it stopped (a
    # page that loads without one has the stored message already).
    resumed = await manager.resume(
        chat_id, resume_point(request), replay_finished=_asks_for_replay(request)
    )
    if resumed is None:
        return Response(status_code=204)
    generation, after = resumed.generation, resumed.after
    link_current(generation.traceparent, "resume")
    if isinstance(generation, Generation):
        return stream_response(generation, metrics, after=after)
    return remote_stream_response(generation, after=after)  # another worker runs it


def _asks_for_replay(request: Request) -> bool:
    return "last-event-id" in request.headers or "after" in request.query_params


router.add_api_route(
    "/api/chats/{chat_id}/stream",
    resume,
    methods=["GET"],
    responses=_RESUME,
    summary="Resume the chat's generation",
)
router.add_api_route(
    "/api/chat/{chat_id}/stream",
    resume,
    methods=["GET"],
    responses=_RESUME,
    summary="Resume the chat's generation (useChat's path)",
    tags=["useChat"],
)


@router.post("/api/chats/{chat_id}/stop", response_model=StopResult)
async def stop(chat_id: str, store: StoreDep, manager: ManagerDep, caller: CallerDep) -> StopResult:
    """Stop the chat's running generation. `stopped` is true only when this request
    stopped it (its reply is stored `stopped` because of it); false when there was
    none, or it finished (or was stopped by someone else) first."""
    await check_owner(store, caller, chat_id=chat_id)
    if manager.live(chat_id) is None:
        await store.get_chat(chat_id)  # an unknown chat is a 404, not {stopped: false}
    if trace.get_current_span().is_recording():  # traced: link to what it stops
        link_current(await manager.traceparent(chat_id), "stop")
    return StopResult(stopped=await manager.stop(chat_id))
