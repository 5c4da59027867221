"""OpenTelemetry tracing and metrics for any provider's stream (GenAI conventions).

`traced_stream()` wraps a stream of events and reports it the way the OpenTelemetry
GenAI semantic conventions describe an inference call: one CLIENT span
`chat {model}` with `gen_ai.*` request and response attributes, and the metrics
`gen_ai.client.operation.duration`, `gen_ai.client.token.usage` and
`gen_ai.client.operation.time_to_first_chunk`. Only the OpenTelemetry API is used: with
no SDK configured, every call is a no-op.

Choices worth knowing:
- Time to first chunk is a span attribute, `gen_ai.response.time_to_first_chunk`
  (seconds, as the conventions name it), plus the histogram above; an attribute rather
  than an event because it is one number per call and can then be queried.
- Per event the wrapper does a few type checks and nothing else; attributes are set
  once, at the end. The span is made current only while the first event is awaited
  (that is when the request goes out, so an instrumented HTTP client nests under it);
  keeping it current across `yield` would parent the consumer's own work under it.
- `error.type` is the HTTP status for `ProviderHTTPError` (as HTTP conventions do),
  else the error's class name. A consumer that stops early (cancel, `aclose()`) is not
  an error: the span gets `streamkeep.cancelled = true` and an unset status.
- Message content (`gen_ai.system_instructions`, `gen_ai.input.messages`,
  `gen_ai.output.messages`) is recorded only with `capture_content=True`: prompts are
  often private.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.errors import LLMError, ProviderHTTPError
from streamkeep.llm.events import EventStream, Finish, StreamError, StreamEvent, UsageReport
from streamkeep.llm.types import ChatRequest, Message, ToolCallPart, Usage

__all__ = ["CallObserver", "CallSummary", "error_type", "traced_stream"]

_SCOPE = "streamkeep.llm"
_TOKEN_BUCKETS = [4.0**i for i in range(14)]  # 1 .. 67108864, as the conventions advise
_SECONDS_BUCKETS = [0.01 * 2**i for i in range(14)]  # 0.01 .. 81.92

Attributes = dict[str, AttributeValue]


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One provider call as a metrics backend without OpenTelemetry sees it (the app's
    Prometheus metrics): made once per call, at its end."""

    provider: str
    model: str  # the provider's own model name
    duration: float  # seconds
    first_chunk: float | None  # seconds to the first event; None if none came
    output_tokens: int | None
    error_type: str | None  # as `error.type` says it; None when it did not fail
    cancelled: bool


class CallObserver(Protocol):
    """What else wants to know about each call and each retry (see `CallSummary`)."""

    def call_ended(self, call: CallSummary) -> None: ...

    def retried(self, provider: str, error_type: str) -> None: ...


class _Instruments:
    """The three histograms of the GenAI client conventions."""

    __slots__ = ("duration", "first_chunk", "tokens")

    def __init__(self, meter_provider: metrics.MeterProvider | None) -> None:
        meter = metrics.get_meter(_SCOPE, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response",
            explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
        )


@functools.lru_cache(maxsize=8)
def _telemetry(
    tracer_provider: trace.TracerProvider | None, meter_provider: metrics.MeterProvider | None
) -> tuple[trace.Tracer, _Instruments]:
    """One tracer and one set of instruments per provider pair, made once.

    A cache on purpose: without an SDK, the API's proxy meter keeps every instrument
    created through it (to upgrade it later), so creating them per call would leak.
    """
    return trace.get_tracer(_SCOPE, tracer_provider=tracer_provider), _Instruments(meter_provider)


async def traced_stream(
    stream: EventStream,
    *,
    provider: str,
    request: ChatRequest,
    server_address: str | None = None,
    capture_content: bool = False,
    tracer_provider: trace.TracerProvider | None = None,
    meter_provider: metrics.MeterProvider | None = None,
    observer: CallObserver | None = None,
) -> AsyncGenerator[StreamEvent, None]:
    """Yield `stream`'s events unchanged while recording them as a GenAI span (and,
    given an `observer`, as a `CallSummary` at the end)."""
    tracer, instruments = _telemetry(tracer_provider, meter_provider)
    common: Attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request.model,
    }
    if server_address:
        common["server.address"] = server_address
    span = tracer.start_span(
        f"chat {request.model}",
        kind=SpanKind.CLIENT,
        attributes={**common, **_request_attributes(request, capture_content)},
    )
    call = _Call(capture_content)
    try:
        with trace.use_span(span, record_exception=False, set_status_on_exception=False):
            event = await anext(stream, None)
        while event is not None:
            call.see(event)
            yield event
            event = await anext(stream, None)
    except (GeneratorExit, asyncio.CancelledError):
        call.cancelled = call.finish is None and call.error is None
        raise
    except Exception as exc:
        call.raised = exc
        raise
    finally:
        try:
            await stream.aclose()
        finally:
            call.report(span, instruments, common)
            if observer is not None:
                observer.call_ended(call.summary(provider, request.model))


class _Call:
    """What was seen of one call's events; turned into telemetry at the end."""

    __slots__ = (
        "accumulator",
        "cancelled",
        "error",
        "finish",
        "first_chunk",
        "raised",
        "started",
        "usage",
    )

    def __init__(self, capture_content: bool) -> None:
        self.started = time.perf_counter()
        self.first_chunk: float | None = None
        self.usage: Usage | None = None
        self.finish: Finish | None = None
        self.error: StreamError | None = None
        self.raised: Exception | None = None
        self.cancelled = False
        self.accumulator = Accumulator() if capture_content else None

    def see(self, event: StreamEvent) -> None:
        if self.first_chunk is None and not isinstance(event, StreamError):
            self.first_chunk = time.perf_counter() - self.started
        if self.accumulator is not None:
            self.accumulator.add(event)
        if isinstance(event, UsageReport):
            if event.final:  # the telemetry counts totals, not the counts so far
                self.usage = event.usage
        elif isinstance(event, Finish):
            self.finish = event
        elif isinstance(event, StreamError):
            self.error = event

    def error_type(self) -> str | None:
        if self.error is not None:
            return error_type(self.error.error)
        if self.raised is not None:
            return type(self.raised).__qualname__
        return None

    def summary(self, provider: str, model: str) -> CallSummary:
        return CallSummary(
            provider=provider,
            model=model,
            duration=time.perf_counter() - self.started,
            first_chunk=self.first_chunk,
            output_tokens=self.usage.output_tokens if self.usage is not None else None,
            error_type=self.error_type(),
            cancelled=self.cancelled,
        )

    def report(self, span: trace.Span, instruments: _Instruments, common: Attributes) -> None:
        duration = time.perf_counter() - self.started
        attributes = self._response_attributes()
        error_type = self.error_type()
        if error_type is not None:
            attributes["error.type"] = error_type
            message = self.error.error.message if self.error else str(self.raised)
            span.set_status(Status(StatusCode.ERROR, message))
        if self.cancelled:
            attributes["streamkeep.cancelled"] = True
        span.set_attributes(attributes)
        span.end()
        metric_attributes = dict(common)
        if "gen_ai.response.model" in attributes:
            metric_attributes["gen_ai.response.model"] = attributes["gen_ai.response.model"]
        if self.first_chunk is not None:
            instruments.first_chunk.record(self.first_chunk, metric_attributes)
        if self.usage is not None:
            for kind, count in (
                ("input", self.usage.input_tokens),
                ("output", self.usage.output_tokens),
            ):
                instruments.tokens.record(count, {**metric_attributes, "gen_ai.token.type": kind})
        if error_type is not None:
            metric_attributes["error.type"] = error_type
        instruments.duration.record(duration, metric_attributes)

    def _response_attributes(self) -> Attributes:
        out: Attributes = {}
        end = self.finish or self.error
        if end is not None and end.response_id:
            out["gen_ai.response.id"] = end.response_id
        if end is not None and end.model:
            out["gen_ai.response.model"] = end.model
        if self.finish is not None:
            out["gen_ai.response.finish_reasons"] = [self.finish.raw_reason or self.finish.reason]
        elif self.error is not None:
            out["gen_ai.response.finish_reasons"] = ["error"]
        if self.first_chunk is not None:
            out["gen_ai.response.time_to_first_chunk"] = self.first_chunk
        if self.usage is not None:
            out.update(_usage_attributes(self.usage))
        if self.accumulator is not None:
            out["gen_ai.output.messages"] = _output_messages(self.accumulator)
        return out


def error_type(error: LLMError) -> str:
    """`error.type` of a provider's error: its HTTP status, else its class's name."""
    if isinstance(error, ProviderHTTPError):
        return str(error.status)
    return type(error).__name__


def _usage_attributes(usage: Usage) -> Attributes:
    out: Attributes = {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    if usage.reasoning_tokens:
        out["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    if usage.cached_input_tokens:
        out["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
    return out


def _request_attributes(request: ChatRequest, capture_content: bool) -> Attributes:
    out: Attributes = {"gen_ai.request.stream": True, "gen_ai.output.type": "text"}
    optional: dict[str, Any] = {
        "gen_ai.request.max_tokens": request.max_tokens,
        "gen_ai.request.temperature": request.temperature,
        "gen_ai.request.top_p": request.top_p,
        "gen_ai.request.seed": request.seed,
        "gen_ai.request.stop_sequences": request.stop,
    }
    for key in ("frequency_penalty", "presence_penalty", "top_k"):
        value = request.extra.get(key, request.openai_extra.get(key))
        if isinstance(value, int | float):
            optional[f"gen_ai.request.{key}"] = value
    out.update({k: v for k, v in optional.items() if v is not None})
    if capture_content:
        system = [m for m in request.messages if m.role == "system"]
        if system:
            out["gen_ai.system_instructions"] = _json(
                [{"type": "text", "content": m.content} for m in system]
            )
        out["gen_ai.input.messages"] = _json(
            [_input_message(m) for m in request.messages if m.role != "system"]
        )
    return out


def _input_message(message: Message) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    if message.role == "tool":
        parts.append(
            {"type": "tool_call_response", "id": message.tool_call_id, "response": message.content}
        )
    elif message.content:
        parts.append({"type": "text", "content": message.content})
    for call in message.tool_calls:
        parts.append(
            {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
        )
    return {"role": message.role, "parts": parts}


def _output_messages(accumulator: Accumulator) -> str:
    completion = accumulator.result()
    parts: list[dict[str, Any]] = []
    for part in completion.parts:
        if isinstance(part, ToolCallPart):
            call = part.call
            parts.append(
                {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}
            )
        else:
            parts.append({"type": part.type, "content": part.text})
    message = {"role": "assistant", "parts": parts, "finish_reason": completion.finish_reason}
    return _json([message])


def _json(value: Sequence[Any]) -> str:
    return orjson.dumps(value).decode()
