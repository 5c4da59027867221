"""The OpenAI-compatible endpoints: `POST /v1/chat/completions` and `GET /v1/models`.

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="local/smollm2", messages=[...], stream=True)

Every call is stored as a chat (see `gateway.keep`) unless `settings.gateway_store` is
off, in which case it is a pure relay of the provider's stream. The response always
carries `x-streamkeep-chat-id` (the chat the call was stored in, or the one the request
named); send it back on the next call to continue that chat.

Errors answer in OpenAI's shape (`gateway.errors`), never the chat API's, because the
clients here are OpenAI SDKs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from streamkeep.gateway import keep, respond
from streamkeep.gateway.chunks import ChunkEncoder
from streamkeep.gateway.convert import NO_IMAGES, MessageImages, to_chat_request
from streamkeep.gateway.docs import body_doc
from streamkeep.gateway.errors import GatewayError, from_llm_error
from streamkeep.gateway.images import request_images
from streamkeep.gateway.schemas import ChatCompletionBody, check_lengths, parse_body
from streamkeep.generation import Generation, GenerationManager, ShuttingDown
from streamkeep.http.auth import Caller, CallerDep, check_model
from streamkeep.http.deps import (
    ManagerDep,
    MetricsDep,
    QuotasDep,
    RegistryDep,
    SettingsDep,
    StoreDep,
)
from streamkeep.http.metrics import Metrics
from streamkeep.http.quotas import Quotas
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import EventStream
from streamkeep.llm.registry import ModelRegistry
from streamkeep.llm.types import ChatRequest
from streamkeep.store import ChatStore

CHAT_HEADER = "x-streamkeep-chat-id"
MESSAGE_HEADER = "x-streamkeep-message-id"

router = APIRouter(tags=["openai"])


_BODY_DOC = body_doc(
    ChatCompletionBody,
    "`chat.completion` JSON, or `chat.completion.chunk` SSE when `stream` is true",
    [
        (400, "A malformed body (`param` names the field)"),
        (404, "An unknown model, or chat (x-streamkeep-chat-id)"),
        (409, "The chat named by x-streamkeep-chat-id is generating"),
        (502, "The provider failed"),
        (503, "The model is not configured, or the server is shutting down"),
        (504, "The provider did not answer in time"),
        ("4XX", "The provider refused the request: passed through"),
    ],
)


@router.get("/v1/models")
async def list_models(registry: RegistryDep, caller: CallerDep) -> Response:
    """Every configured `provider/model`, and the models a pass-through provider (one
    configured without a list, e.g. `OPENAI_BASE_URL`) lists itself, in OpenAI's shape.
    A model that cannot answer yet (the embedded one while its runtime is prepared) has
    `status` (`preparing`, `failed`, `unavailable`), `status_detail` and, while
    preparing, `seconds_left`."""
    data = [
        _model_entry(name, registry)
        for name in await registry.available_models()
        if caller.may_use(name)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


def _model_entry(name: str, registry: ModelRegistry) -> dict[str, object]:
    # A fallback alias (no "/") is streamkeep's own.
    entry: dict[str, object] = {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": _owner(name),
    }
    status = registry.status(name)
    if status is not None:
        entry["status"] = "unavailable" if status.state == "off" else status.state
        entry["status_detail"] = status.detail
        if status.seconds_left is not None:
            entry["seconds_left"] = status.seconds_left
    return entry


def _owner(model: str) -> str:
    provider, slash, _ = model.partition("/")
    return provider if slash else "streamkeep"


@router.post("/v1/chat/completions", openapi_extra=_BODY_DOC)
async def chat_completions(
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    manager: ManagerDep,
    store: StoreDep,
    metrics: MetricsDep,
    caller: CallerDep,
    quotas: QuotasDep,
) -> Response:
    """Chat Completions, streaming or not; the call is kept as a chat."""
    started_at = time.perf_counter()
    headers: dict[str, str] = {}
    chat_id = request.headers.get(CHAT_HEADER) or None
    if chat_id is not None:
        headers[CHAT_HEADER] = chat_id
    try:
        body = parse_body(await request.body())
        check_lengths(body, settings.max_message_chars)
        check_model(caller, body.model)
        images = await request_images(body, settings)
        chat_request = _provider_request(body, registry, images)
        if not settings.gateway_store:
            stream = await quotas.metered(
                caller, registry.stream(body.model, chat_request), chat_request
            )
            return await _relay(body, stream, headers)
        placement = await keep.place(store, body, chat_id, caller, images)
        headers[CHAT_HEADER] = placement.chat_id
        if images.all():
            await store.save_images(images.all(), caller.user_id)
        parts = Parts(registry, manager, store, metrics, quotas, caller)
        return await _kept(body, chat_request, placement, parts, headers, started_at)
    except GatewayError as exc:
        return exc.response(headers)
    except LLMError as exc:
        return from_llm_error(exc).response(headers)
    except ShuttingDown as exc:
        error = GatewayError(503, str(exc), type="service_unavailable", code="shutting_down")
        return error.response({**headers, "retry-after": "1"})


@dataclass(slots=True)
class Parts:
    """The app's parts a kept call uses."""

    registry: ModelRegistry
    manager: GenerationManager
    store: ChatStore
    metrics: Metrics
    quotas: Quotas
    caller: Caller


async def launch(
    parts: Parts,
    placement: keep.Placement,
    sink: respond.Sink | respond.Collector,
    *,
    model: str,
    request: ChatRequest,
    generation_id: str | None = None,
    write_first: bool = False,
    detached: bool = False,
) -> tuple[Generation, respond.Tap]:
    """Start a kept call's generation (`keep.start`, within the caller's limits) on the
    provider's stream, encoded by `sink`; the stream is closed if the start fails. The
    rest are `keep.start`'s (a response's id, `write_first`, `detached`)."""
    tap = respond.Tap(parts.registry.stream(model, request), sink)
    try:
        start = partial(
            keep.start,
            parts.manager,
            parts.store,
            placement,
            model=model,
            request=request,
            tap=tap,
            generation_id=generation_id,
            write_first=write_first,
            detached=detached,
        )
        gen = await parts.quotas.limited(parts.caller, start)()
    except BaseException:
        await tap.aclose()
        raise
    return gen, tap


def _provider_request(
    body: ChatCompletionBody, registry: ModelRegistry, images: MessageImages = NO_IMAGES
) -> ChatRequest:
    _, own_name = registry.resolve(body.model)  # unknown model: 404 before anything is kept
    return to_chat_request(body, own_name, images)


async def _relay(
    body: ChatCompletionBody, stream: EventStream, headers: dict[str, str]
) -> Response:
    if not body.stream:
        return await respond.whole_relay(stream, body.model, headers)
    encoder = ChunkEncoder(model=body.model, include_usage=body.include_usage)
    return await respond.stream_relay(stream, encoder, headers)


async def _kept(
    body: ChatCompletionBody,
    chat_request: ChatRequest,
    placement: keep.Placement,
    parts: Parts,
    headers: dict[str, str],
    started_at: float,
) -> Response:
    sink: ChunkEncoder | respond.Collector = (
        ChunkEncoder(model=body.model, include_usage=body.include_usage)
        if body.stream
        else respond.Collector()
    )
    gen, tap = await launch(parts, placement, sink, model=body.model, request=chat_request)
    headers[MESSAGE_HEADER] = gen.message_id
    if isinstance(sink, ChunkEncoder):
        return await respond.stream_generation(gen, sink, tap, headers, parts.metrics, started_at)
    return await respond.whole_generation(gen, sink, body.model, headers, parts.metrics)
