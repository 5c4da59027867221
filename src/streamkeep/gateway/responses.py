"""OpenAI's Responses API: `/v1/responses`, for any configured model.

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.responses.create(model="local/smollm2", input="Hi", stream=True)

A response is a chat reply like any gateway call (`gateway.keep`): a new chat, or with
`previous_response_id` the next turn under that response, sent with the history the
store has (the client sends only the new items). Its generation's id is the response
id (`resp_...`), so the id alone finds it, on any worker:

- `background: true` answers at once with the `queued` response; the run belongs to
  the server, like every generation. `GET /v1/responses/{id}` reads its state and
  output from the store (partial while it runs: checkpoints).
- `GET /v1/responses/{id}?stream=true&starting_after=N` reads the generation's own
  event log after event N (its frame N + 1), here or through Redis on another worker:
  the same events, the same sequence numbers. The log is kept while the response runs
  and `replay_window` seconds after; a later stream request is a 409 (the output is
  still there without `stream`).
- `POST /v1/responses/{id}/cancel` stops it (the partial output is kept, `cancelled`);
  `DELETE /v1/responses/{id}` stops it and deletes the reply and the input it added.

`store: false` is a pure relay: nothing is kept, so there is nothing to retrieve.
Errors answer in OpenAI's shape.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from streamkeep import sse
from streamkeep.gateway import keep, respond
from streamkeep.gateway.convert import TOOL_PREFIX, MessageImages, StoredIn, to_stored
from streamkeep.gateway.docs import answers, body_doc
from streamkeep.gateway.errors import GatewayError, from_llm_error, invalid_request
from streamkeep.gateway.images import check_takes_images, request_images
from streamkeep.gateway.responses_convert import as_completion_body
from streamkeep.gateway.responses_schema import ResponsesBody, parse_responses_body
from streamkeep.gateway.responses_stream import (
    ResponseEncoder,
    ResponseHead,
    response_body,
    stored_response,
)
from streamkeep.gateway.routes import CHAT_HEADER, MESSAGE_HEADER, Parts, _provider_request, launch
from streamkeep.gateway.schemas import ChatCompletionBody, check_lengths
from streamkeep.generation import ShuttingDown
from streamkeep.generation.parts import assistant_messages, history_to_messages
from streamkeep.generation.plan import load_images
from streamkeep.http.auth import Caller, CallerDep, check_model, owned_chat
from streamkeep.http.deps import (
    ManagerDep,
    MetricsDep,
    QuotasDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
)
from streamkeep.http.responses import SSEResponse
from streamkeep.llm.errors import LLMError, ProviderStreamError
from streamkeep.llm.types import ChatRequest, Completion, Message
from streamkeep.store import ChatStore
from streamkeep.store.errors import NotFound
from streamkeep.store.records import GenerationRecord

router = APIRouter(tags=["openai"])

PREFIX = "resp_"
_CREATE_DOC = body_doc(
    ResponsesBody,
    "A `response` JSON (`queued` for a background one), or its events as SSE when `stream` is true",
    [
        (400, "A malformed body (`param` names the field)"),
        (404, "An unknown model, or previous_response_id"),
        (409, "The chat of previous_response_id is generating"),
        (413, "A message over the length limit"),
        (502, "The provider failed"),
        (503, "The model is not configured, or the server is shutting down"),
        (504, "The provider did not answer in time"),
        ("4XX", "The provider refused the request: passed through"),
    ],
)
_ONE_DOC = {"responses": answers("The response", [(404, "No such response (of the caller's)")])}
_STREAM_DOC = {
    "responses": answers(
        "The response, or with `stream` its events after `starting_after`",
        [
            (400, "A malformed `stream` or `starting_after`"),
            (404, "No such response (of the caller's)"),
            (409, "Its events are no longer kept (`stream`)"),
        ],
    )
}


def new_response_id() -> str:
    return PREFIX + secrets.token_urlsafe(15)


@router.post("/v1/responses", openapi_extra=_CREATE_DOC)
async def create_response(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    manager: ManagerDep,
    store: StoreDep,
    metrics: MetricsDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> Response:
    """Create a response: streamed, whole, or in the background."""
    started_at = time.perf_counter()
    headers: dict[str, str] = {}
    try:
        body = parse_responses_body(await request.body())
        check_model(caller, body.model)
        continued = body.previous_response_id is not None
        earlier: frozenset[str] = frozenset()
        if continued and body.store:
            earlier = await _calls_before(store, caller, body.previous_response_id)
        kept = as_completion_body(body, with_instructions=not continued, earlier_calls=earlier)
        check_lengths(kept, settings.max_message_chars)
        images = await request_images(kept, settings)
        head = ResponseHead(new_response_id(), body.model, echo=body.echo())
        if not body.store:
            if continued:
                raise invalid_request(
                    "'previous_response_id' needs a stored response: 'store' must be true.",
                    "previous_response_id",
                )
            chat_request = _provider_request(kept, registry, images)
            stream = await quotas.metered(
                caller, registry.stream(body.model, chat_request), chat_request
            )
            if not body.stream:
                return await respond.whole_relay(stream, body.model, headers, _whole(head))
            return await respond.stream_relay(stream, ResponseEncoder(head), headers)
        chat_request = _provider_request(kept, registry, images)
        if continued:
            placement, chat_request = await _continuation(
                body, kept, chat_request, store, caller, images
            )
            if any(m.images for m in chat_request.messages):  # the history's, too
                check_takes_images(body.model, settings)
        else:
            placement = await keep.place(store, kept, None, caller, images)
        if images.all():
            await store.save_images(images.all(), caller.user_id)
        headers[CHAT_HEADER] = placement.chat_id
        parts = Parts(registry, manager, store, metrics, quotas, caller)
        return await _kept(body, head, chat_request, placement, parts, headers, started_at)
    except GatewayError as exc:
        return exc.response(headers)
    except LLMError as exc:
        return from_llm_error(exc).response(headers)
    except ShuttingDown as exc:
        error = GatewayError(503, str(exc), type="service_unavailable", code="shutting_down")
        return error.response({**headers, "retry-after": "1"})


def _whole(head: ResponseHead) -> respond.BodyOf:
    """A relayed (`store: false`) whole answer's body."""

    def body(completion: Completion, model: str, raw_reason: str | None) -> dict[str, Any]:
        return response_body(head, completion)

    return body


async def _continuation(
    body: ResponsesBody,
    kept: ChatCompletionBody,
    request: ChatRequest,
    store: ChatStore,
    caller: Caller,
    images: MessageImages,
) -> tuple[keep.Placement, ChatRequest]:
    """The placement under the previous response, and the provider request: this
    call's instructions, the stored history up to that response, then the new items.
    (Instructions are not carried over from the previous response, as OpenAI does.)"""
    assert body.previous_response_id is not None
    record = await _generation(store, caller, body.previous_response_id, "previous_response_id")
    history = await store.prompt_history(record.message_id)
    messages: list[Message] = []
    if body.instructions is not None:
        messages.append(Message("system", body.instructions))
    # The previous response's calls are answered by this call's function_call_output
    # items: they go to the provider with their call, as the chat API sends a step.
    outputs = {m.tool_call_id: m.content for m in kept.messages if m.role == "tool"}
    *earlier, last = history
    messages += history_to_messages(None, earlier)
    if last.role == "assistant":
        messages += assistant_messages([_answered(p, outputs) for p in last.parts])
    else:
        messages += history_to_messages(None, [last])
    answered = {p.get("toolCallId") for p in last.parts if p.get("toolCallId") in outputs}
    messages += [
        m for m in request.messages if not (m.role == "tool" and m.tool_call_id in answered)
    ]
    calls = {
        str(part.get("toolCallId")): part
        for message in history
        for part in message.parts
        if str(part.get("type", "")).startswith(TOOL_PREFIX)
    }
    placement = keep.Placement(
        record.chat_id,
        record.message_id,
        [_named(m, calls) for m in to_stored(kept.messages, kept.messages, images)],
        api_key_id=caller.key_id,
    )
    messages = await load_images(store, messages)  # the history's stored images
    return placement, dataclasses.replace(request, messages=messages)


async def _calls_before(
    store: ChatStore, caller: Caller, response_id: str | None
) -> frozenset[str]:
    """The ids of the function calls made up to that response (a 404 for an unknown one)."""
    assert response_id is not None
    record = await _generation(store, caller, response_id, "previous_response_id")
    return frozenset(
        str(part.get("toolCallId"))
        for message in await store.prompt_history(record.message_id)
        for part in message.parts
        if str(part.get("type", "")).startswith(TOOL_PREFIX)
    )


def _answered(part: dict[str, Any], outputs: dict[str | None, str | None]) -> dict[str, Any]:
    call_id = part.get("toolCallId")
    if not str(part.get("type", "")).startswith(TOOL_PREFIX) or call_id not in outputs:
        return part
    return {**part, "state": "output-available", "output": outputs[call_id] or ""}


def _named(stored: StoredIn, calls: dict[str, dict[str, Any]]) -> StoredIn:
    """A function_call_output's stored part with the name and input of the call it
    answers, which the previous response made (this call's body does not say them)."""
    if stored.role != "tool" or not stored.parts:
        return stored
    part = stored.parts[0]
    call = calls.get(str(part.get("toolCallId")))
    if call is None:
        return stored
    named = {**part, "type": call["type"], "input": call.get("input", {})}
    return StoredIn(stored.role, [named])


async def _kept(
    body: ResponsesBody,
    head: ResponseHead,
    chat_request: ChatRequest,
    placement: keep.Placement,
    parts: Parts,
    headers: dict[str, str],
    started_at: float,
) -> Response:
    # Every stored response encodes its events, streamed or not: a client may stream
    # them later (`GET ...?stream=true`), and the whole answer is the last event's.
    sink = ResponseEncoder(head)
    try:
        gen, tap = await launch(
            parts,
            placement,
            sink,
            model=body.model,
            request=chat_request,
            generation_id=head.id,
            # Found by id at once unless a stream is on its way (it writes the rows
            # after its first event, as every gateway stream does).
            write_first=not body.stream or body.background,
            detached=body.background,
        )
    except GatewayError as exc:
        if exc.code != "generation_conflict":
            raise
        raise GatewayError(  # in the words of this API
            409,
            f"Response {body.previous_response_id!r} is still in progress; continue "
            "it once it has ended.",
            param="previous_response_id",
            code="response_in_progress",
        ) from None
    headers[MESSAGE_HEADER] = gen.message_id
    if body.stream:
        return await respond.stream_generation(gen, sink, tap, headers, parts.metrics, started_at)
    parts.metrics.track(gen)
    tap.opened.set()
    if body.background:  # the response as it stands, at once
        return _json(head.response("queued", []), headers)
    await gen.wait()
    final = sink.final
    if final is None or final["status"] == "failed":
        # A whole answer cannot carry a partial one: the call failed.
        error = (final or {}).get("error") or {}
        raise from_llm_error(sink.failure or ProviderStreamError(error.get("message", "")))
    return _json(final, headers)


@router.get("/v1/responses/{response_id}", openapi_extra=_STREAM_DOC)
async def retrieve_response(
    response_id: str,
    store: StoreDep,
    manager: ManagerDep,
    caller: CallerDep,
    stream: str | None = None,
    starting_after: str | None = None,
) -> Response:
    """The response as stored, or (`stream=true`) its events after `starting_after`."""
    try:
        streaming = _flag(stream, "stream")
        after = _sequence_number(starting_after)
        record = await _generation(store, caller, response_id)
        if not streaming:
            return _json(await _stored(store, record), {})
        view = await manager.find_generation(record.id, record.chat_id, record.message_id)
        if view is None:
            raise GatewayError(
                409,
                f"The events of response {response_id!r} are no longer kept (they are kept "
                "while it runs and for the replay window after); retrieve it without "
                "'stream' for its output.",
                param="stream",
                code="events_expired",
            )
        frames = view.subscribe(after + 1)  # event n is the log's frame n + 1
        return SSEResponse(_frames(frames), headers=sse.HEADERS)
    except GatewayError as exc:
        return exc.response()


def _flag(value: str | None, param: str) -> bool:
    if value is None or value.lower() in ("false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise invalid_request(f"Invalid value for '{param}': expected a boolean.", param)


def _sequence_number(value: str | None) -> int:
    """`starting_after` (-1 when not given: every event)."""
    if value is None:
        return -1
    if not value.isdigit():
        raise invalid_request(
            "Invalid value for 'starting_after': expected a sequence number (0 or more).",
            "starting_after",
        )
    return int(value)


async def _frames(frames: Any) -> Any:
    try:
        async for chunk in frames:
            yield chunk
    finally:
        await respond.closed(frames)


@router.post("/v1/responses/{response_id}/cancel", openapi_extra=_ONE_DOC)
async def cancel_response(
    response_id: str, store: StoreDep, manager: ManagerDep, caller: CallerDep
) -> Response:
    """Stop the response (a no-op once it has ended); the partial output is kept."""
    try:
        record = await _generation(store, caller, response_id)
        await _stop(store, manager, record)
        return _json(await _stored(store, record), {})
    except GatewayError as exc:
        return exc.response()


@router.delete("/v1/responses/{response_id}", openapi_extra=_ONE_DOC)
async def delete_response(
    response_id: str, store: StoreDep, manager: ManagerDep, caller: CallerDep
) -> Response:
    """Stop the response and delete it: its reply, and the input messages it added."""
    try:
        record = await _generation(store, caller, response_id)
        await _stop(store, manager, record)
        path = await store.active_branch(record.chat_id, leaf_id=record.message_id)
        # The input this call added: the messages after the previous generated reply
        # (input messages, an assistant one included, were stored with no model).
        top = len(path) - 1
        while top > 0 and not (path[top - 1].role == "assistant" and path[top - 1].model):
            top -= 1
        await _stop_under(store, manager, record.chat_id, path[top].id)
        await store.delete_message(path[top].id)
        if not await store.active_branch(record.chat_id):
            await store.delete_chat(record.chat_id)  # nothing but this response was in it
        body = {"id": response_id, "object": "response.deleted", "deleted": True}
        return _json(body, {})
    except NotFound:
        return _not_found(response_id).response()
    except GatewayError as exc:
        return exc.response()


async def _stop_under(store: ChatStore, manager: Any, chat_id: str, message_id: str) -> None:
    """Stop the chat's running reply if it is under `message_id` (a response that
    continued the one being deleted goes with it, and must not run on)."""
    running = await store.running_generation(chat_id)
    if running is None:
        return
    branch = await store.active_branch(chat_id, leaf_id=running.message_id)
    if any(m.id == message_id for m in branch):
        await manager.stop(chat_id)


async def _stop(store: ChatStore, manager: Any, record: GenerationRecord) -> None:
    if record.status != "running":
        return
    running = await store.running_generation(record.chat_id)
    if running is not None and running.id == record.id:
        await manager.stop(record.chat_id)


async def _generation(
    store: ChatStore, caller: Caller, response_id: str, param: str | None = None
) -> GenerationRecord:
    """The response's generation row, or a 404 (also for another user's response)."""
    if not response_id.startswith(PREFIX):
        raise _not_found(response_id, param)
    try:
        record = await store.get_generation(response_id)
        await owned_chat(store, caller, record.chat_id)
    except NotFound:
        raise _not_found(response_id, param) from None
    return record


async def _stored(store: ChatStore, record: GenerationRecord) -> dict[str, Any]:
    try:
        message = await store.get_message(record.message_id)
    except NotFound:
        raise _not_found(record.id) from None
    head = ResponseHead(record.id, message.model or "", int(message.created_at.timestamp()))
    completed = message.completed_at
    return stored_response(
        head,
        message.parts,
        status=message.status,
        finish_reason=message.finish_reason,
        usage=message.usage,
        error=message.error,
        completed_at=int(completed.timestamp()) if completed is not None else None,
    )


def _not_found(response_id: str, param: str | None = None) -> GatewayError:
    return GatewayError(
        404, f"No response found with id '{response_id}'.", param=param, code="not_found"
    )


def _json(body: dict[str, Any], headers: dict[str, str]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)
