"""Answering one call: a stream of chunks, or one `chat.completion` body.

Two sources feed the same answers:
- a stored call's `Generation` (its event log already holds the encoded frames, so a
  client that leaves mid-stream only ends its own subscription, never the reply);
- a pure relay of `registry.stream(...)` when `gateway_store` is off.

Either way nothing is sent before the provider's first event: a provider that refuses
the request (4xx) or fails before answering (5xx, timeout) gets an HTTP error response
in OpenAI's shape. After the first byte, failures travel as a final error chunk.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import anyio
import orjson
from starlette.responses import Response

from streamkeep import sse
from streamkeep.gateway.chunks import ChunkEncoder, completion_body
from streamkeep.gateway.errors import from_llm_error
from streamkeep.gateway.messages_stream import MessageEncoder, message_body
from streamkeep.gateway.responses_stream import ResponseEncoder
from streamkeep.generation import Generation
from streamkeep.generation.steps import LoopEvent, ReplyEvent
from streamkeep.http.metrics import Metrics
from streamkeep.http.responses import RelayResponse, SSEResponse
from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.errors import LLMError, ProviderStreamError
from streamkeep.llm.events import EventStream, Finish, StreamError, StreamEvent
from streamkeep.llm.types import Completion, FinishReason

#: A streamed answer's encoder: Chat Completions chunks, Anthropic Messages events, or
#: Responses API events.
Sink = ChunkEncoder | MessageEncoder | ResponseEncoder
#: A whole answer's body: (completion, model, provider's stop word) -> JSON.
BodyOf = Callable[[Completion, str, str | None], dict[str, Any]]


def openai_body(completion: Completion, model: str, raw_reason: str | None) -> dict[str, Any]:
    return completion_body(completion, model=model)


def anthropic_body(completion: Completion, model: str, raw_reason: str | None) -> dict[str, Any]:
    return message_body(completion, model=model, raw_reason=raw_reason)


class Collector:
    """The generation-encoder interface for a non-streaming call: it keeps the events
    (no frames) so the whole answer can be returned once the generation ends."""

    __slots__ = ("_acc", "failure", "raw_reason")

    def __init__(self) -> None:
        self._acc = Accumulator()
        self.failure: LLMError | None = None
        self.raw_reason: str | None = None  # the provider's own stop word

    def start(self, message_id: str, metadata: dict[str, Any]) -> list[bytes]:
        return []

    def encode(self, event: ReplyEvent) -> list[bytes]:
        if not isinstance(event, LoopEvent):  # none comes: the gateway runs no tool loop
            self._acc.add(event)
        return []

    def error(self, error_text: str) -> list[bytes]:
        completion = self._acc.result()
        completion.finish_reason, completion.error = "error", error_text
        return []

    def end(
        self, metadata: dict[str, Any], finish_reason: FinishReason | None, *, aborted: bool = False
    ) -> list[bytes]:
        completion = self._acc.result()
        if completion.finish_reason != "error":
            completion.finish_reason = finish_reason or "stop"
        return []

    def result(self) -> Completion:
        return self._acc.result()


class Tap:
    """The provider's stream as a kept call's generation reads it.

    It notes the provider's failure on the sink (the generation passes on only its
    text), and holds `opened`, the signal a new chat's rows wait for before they are
    written: after the first chunk went out (streaming), at the first event (not
    streaming), or when the stream ends or is closed, whichever comes first. So the
    database work never competes with the first token for the event loop.
    """

    __slots__ = ("_open_at_first", "_stream", "opened", "sink")

    def __init__(self, stream: EventStream, sink: Sink | Collector) -> None:
        self._stream = stream
        self.sink = sink
        self._open_at_first = isinstance(sink, Collector)
        self.opened = asyncio.Event()

    def __aiter__(self) -> Tap:
        return self

    async def __anext__(self) -> StreamEvent:
        try:
            event = await anext(self._stream)
        except BaseException:  # the end, a failure or a cancellation
            self.opened.set()
            raise
        if type(event) is StreamError:
            self.sink.failure = event.error
        elif type(event) is Finish and not isinstance(self.sink, ChunkEncoder):
            self.sink.raw_reason = event.raw_reason
        if self._open_at_first:
            self.opened.set()
        return event

    async def aclose(self) -> None:
        self.opened.set()
        await self._stream.aclose()


async def stream_generation(
    gen: Generation,
    encoder: Sink,
    tap: Tap,
    headers: dict[str, str],
    metrics: Metrics,
    started_at: float,
) -> Response:
    metrics.track(gen)
    frames = gen.subscribe()
    first = await anext(frames, b"")
    if encoder.failure is not None and not encoder.started:
        # It failed before its first byte: answer with the provider's status instead.
        await frames.aclose()
        await gen.wait()  # so the stored reply is final when the client looks
        raise from_llm_error(encoder.failure)
    if first:
        metrics.ttft.observe(time.perf_counter() - started_at)
    frames_out = _prepend(first, frames, tap.opened)
    log, start = gen.log, gen.first_seq - 1  # it reads the log from its start
    return RelayResponse(
        frames_out,
        headers={**sse.HEADERS, **headers},
        metrics=metrics,
        available=lambda: log.next_seq - 1 - start,
    )


async def whole_generation(
    gen: Generation,
    collector: Collector,
    model: str,
    headers: dict[str, str],
    metrics: Metrics,
    body: BodyOf = openai_body,
) -> Response:
    metrics.track(gen)
    await gen.wait()
    result = collector.result()
    return _whole(result, collector.failure, headers, body(result, model, collector.raw_reason))


async def stream_relay(stream: EventStream, encoder: Sink, headers: dict[str, str]) -> Response:
    """A stream straight from the provider (nothing stored)."""
    first: list[bytes] = []
    try:
        async for event in stream:
            first = encoder.encode(event)
            if first:
                break
    except BaseException:
        await stream.aclose()
        raise
    if encoder.failure is not None and not encoder.started:
        await stream.aclose()
        raise from_llm_error(encoder.failure)
    return SSEResponse(_relay(first, stream, encoder), headers={**sse.HEADERS, **headers})


async def whole_relay(
    stream: EventStream, model: str, headers: dict[str, str], body: BodyOf = openai_body
) -> Response:
    acc = Accumulator()
    failure: LLMError | None = None
    raw_reason: str | None = None
    try:
        async for event in stream:
            acc.add(event)
            if type(event) is StreamError:
                failure = event.error
            elif type(event) is Finish:
                raw_reason = event.raw_reason
                break
    finally:
        await stream.aclose()
    result = acc.result()
    return _whole(result, failure, headers, body(result, model, raw_reason))


def _whole(
    completion: Completion,
    failure: LLMError | None,
    headers: dict[str, str],
    body: dict[str, Any],
) -> Response:
    if completion.finish_reason == "error" or failure is not None:
        # A whole answer cannot carry a partial one: the call failed.
        error = failure or ProviderStreamError(completion.error or "the model failed")
        raise from_llm_error(error)
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


async def _prepend(
    first: bytes, rest: AsyncGenerator[bytes, None], sent_first: asyncio.Event
) -> AsyncGenerator[bytes, None]:
    try:
        if first:
            yield first
        sent_first.set()
        async for chunk in rest:
            yield chunk
    finally:
        sent_first.set()
        await closed(rest)


async def _relay(
    first: list[bytes], stream: EventStream, encoder: Sink
) -> AsyncGenerator[bytes, None]:
    try:
        yield sse.frames(first)
        encode, frames = encoder.encode, sse.frames
        async for event in stream:
            payloads = encode(event)
            if payloads:
                yield frames(payloads)
    finally:
        # A client that leaves closes the upstream connection at once.
        await closed(stream)


async def closed(stream: EventStream | AsyncGenerator[bytes, None]) -> None:
    """`aclose` from a body iterator Starlette is cancelling (the client left): its
    cancel scope would cancel any await in `finally`, so the close is shielded."""
    with anyio.CancelScope(shield=True):
        await stream.aclose()
