"""Anthropic's Messages API: `POST /v1/messages`, for any configured model.

    client = Anthropic(base_url="http://127.0.0.1:8000", api_key="unused")
    client.messages.create(model="local/smollm2", max_tokens=256, messages=[...])

The same machinery as `/v1/chat/completions` (`gateway.routes`): the call is kept as a
chat (`gateway.keep`; `x-streamkeep-chat-id` continues one) unless
`settings.gateway_store` is off, and its reply runs as a `Generation`; only the body
(`messages_schema`, `messages_convert`) and the frames (`messages_stream`) differ.

Every error, authentication's and rate limits' included, answers in Anthropic's shape
`{"type": "error", "error": {"type", "message"}}`, so the Anthropic SDK raises its own
exception classes (AuthenticationError, NotFoundError, ...).
"""

from __future__ import annotations

import time

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from streamkeep.gateway import keep, respond
from streamkeep.gateway.docs import ANTHROPIC_ERROR, body_doc
from streamkeep.gateway.errors import GatewayError, from_llm_error
from streamkeep.gateway.images import messages_images
from streamkeep.gateway.messages_convert import as_completion_body, restore, to_chat_request
from streamkeep.gateway.messages_schema import MessagesBody, parse_messages_body
from streamkeep.gateway.messages_stream import MessageEncoder, error_body, error_type
from streamkeep.gateway.routes import CHAT_HEADER, MESSAGE_HEADER, Parts, launch
from streamkeep.gateway.schemas import check_lengths
from streamkeep.generation import ShuttingDown
from streamkeep.http.auth import Unauthorized, check_model, get_caller
from streamkeep.http.deps import (
    ManagerDep,
    MetricsDep,
    QuotasDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
)
from streamkeep.http.limits import LimitExceeded
from streamkeep.llm.errors import LLMError
from streamkeep.llm.types import ChatRequest

router = APIRouter(tags=["anthropic"])

_BODY_DOC = body_doc(
    MessagesBody,
    "A `message` JSON, or Anthropic's named SSE events when `stream` is true",
    [
        (400, "A malformed body, or an image block (not supported yet)"),
        (401, "No API key, or one that does not work (`x-api-key` or Bearer)"),
        (404, "An unknown model, or chat (x-streamkeep-chat-id)"),
        (409, "The chat named by x-streamkeep-chat-id is generating"),
        (413, "A message over the length limit"),
        (429, "Over a rate limit, the caller's or the provider's"),
        (502, "The provider failed"),
        (503, "The model is not configured, or the server is shutting down"),
        (504, "The provider did not answer in time"),
    ],
    error_schema=ANTHROPIC_ERROR,
)


def _error(status: int, message: str, headers: dict[str, str]) -> Response:
    return Response(
        orjson.dumps(error_body(error_type(status), message)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@router.post("/v1/messages", openapi_extra=_BODY_DOC)
async def messages(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    manager: ManagerDep,
    store: StoreDep,
    metrics: MetricsDep,
    quotas: QuotasDep,
) -> Response:
    """Anthropic Messages, streaming or not; the call is kept as a chat."""
    started_at = time.perf_counter()
    headers: dict[str, str] = {}
    chat_id = request.headers.get(CHAT_HEADER) or None
    if chat_id is not None:
        headers[CHAT_HEADER] = chat_id
    try:
        caller = await get_caller(request)  # here, so a 401 is in Anthropic's shape too
        body = parse_messages_body(await request.body())
        images = await messages_images(body, settings)
        kept = as_completion_body(body, images)
        check_lengths(kept.body, settings.max_message_chars)
        check_model(caller, body.model)
        _, own_name = registry.resolve(body.model)  # unknown model: 404 before anything
        chat_request = to_chat_request(body, own_name, images)
        if not settings.gateway_store:
            stream = await quotas.metered(
                caller, registry.stream(body.model, chat_request), chat_request
            )
            if not body.stream:
                return await respond.whole_relay(
                    stream, body.model, headers, respond.anthropic_body
                )
            return await respond.stream_relay(stream, MessageEncoder(model=body.model), headers)
        placement = await keep.place(store, kept.body, chat_id, caller, kept.images)
        placement.prior = restore(placement.prior, kept)
        headers[CHAT_HEADER] = placement.chat_id
        if kept.images.all():
            await store.save_images(kept.images.all(), caller.user_id)
        parts = Parts(registry, manager, store, metrics, quotas, caller)
        return await _kept(body, chat_request, placement, parts, headers, started_at)
    except GatewayError as exc:
        return _error(exc.status, exc.message, {**exc.headers, **headers})
    except LLMError as exc:
        error = from_llm_error(exc)
        return _error(error.status, error.message, {**error.headers, **headers})
    except Unauthorized as exc:
        return _error(401, exc.message, headers)
    except LimitExceeded as exc:
        return _error(429, exc.message, {**exc.headers, **headers})
    except ShuttingDown as exc:
        return _error(503, str(exc), {**headers, "retry-after": "1"})


async def _kept(
    body: MessagesBody,
    chat_request: ChatRequest,
    placement: keep.Placement,
    parts: Parts,
    headers: dict[str, str],
    started_at: float,
) -> Response:
    sink: MessageEncoder | respond.Collector = (
        MessageEncoder(model=body.model) if body.stream else respond.Collector()
    )
    gen, tap = await launch(parts, placement, sink, model=body.model, request=chat_request)
    headers[MESSAGE_HEADER] = gen.message_id
    if isinstance(sink, MessageEncoder):
        return await respond.stream_generation(gen, sink, tap, headers, parts.metrics, started_at)
    return await respond.whole_generation(
        gen, sink, body.model, headers, parts.metrics, respond.anthropic_body
    )
