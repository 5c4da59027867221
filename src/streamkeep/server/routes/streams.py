"""Resuming and stopping a chat's generation (also under useChat's `/api/chat/...`).

Event ids count on across a chat's generations (each numbers its frames after the
chat's `event_seq`), so a Last-Event-ID below the live generation's first id is one of
an earlier generation: that client gets the live one from its start, and "ended,
nothing after your id" (204) is judged by the live generation's own last id.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from streamkeep.http.deps import ManagerDep, MetricsDep, StoreDep
from streamkeep.server.relay import remote_stream_response, resume_point, stream_response
from streamkeep.server.schemas import ERROR_RESPONSES, StopResult, stream_doc

router = APIRouter(tags=["streams"], responses=ERROR_RESPONSES)

_RESUME: dict[int | str, dict[str, Any]] = {
    200: stream_doc("The rest of the stream, after `Last-Event-ID` (or `?after=N`)"),
    204: {"description": "The chat has no live generation"},
}


async def resume(
    chat_id: str, request: Request, store: StoreDep, manager: ManagerDep, metrics: MetricsDep
) -> Response:
    after = resume_point(request)
    generation = manager.live(chat_id)
    if generation is not None and not generation.resumable:
        await store.get_chat(chat_id)
        return Response(status_code=204)  # a gateway call: its client has the stream
    if generation is None:
        remote = await manager.find_remote(chat_id)  # running on another worker?
        if remote is not None:
            after = max(after, (remote.first_seq or 1) - 1)
            if not remote.done.is_set():
                return remote_stream_response(remote, after=after)
            await store.get_chat(chat_id)  # deleted since it ended: its stream is gone too
            if after < remote.log.next_seq - 1:
                return remote_stream_response(remote, after=after)
            return Response(status_code=204)
        await store.get_chat(chat_id)  # 404 for an unknown chat, 204 for a quiet one
        return Response(status_code=204)
    after = max(after, generation.first_seq - 1)
    if generation.done.is_set():
        # A finished reply is kept for the replay window even if its chat is deleted
        # (deleting stops it first): a deleted chat is a 404, its stream is gone.
        await store.get_chat(chat_id)
    if generation.done.is_set() and (
        not _asks_for_replay(request) or after >= generation.log.next_seq - 1
    ):
        # Finished: only a client that names where it stopped gets the rest (a page
        # that loads without one has the stored message already).
        return Response(status_code=204)
    return stream_response(generation, metrics, after=after)


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
async def stop(chat_id: str, store: StoreDep, manager: ManagerDep) -> StopResult:
    """Stop the chat's running generation. `stopped` is true only when this request
    stopped it (its reply is stored `stopped` because of it); false when there was
    none, or it finished (or was stopped by someone else) first."""
    if manager.live(chat_id) is None:
        await store.get_chat(chat_id)  # an unknown chat is a 404, not {stopped: false}
    return StopResult(stopped=await manager.stop(chat_id))
