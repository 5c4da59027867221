"""Typed llm events -> Anthropic's Messages stream, and the whole `message` body.

One `MessageEncoder` per response. The events it writes (each frame names its event,
`streamkeep.sse.named`), in order:

    message_start        {"message": {"id": "msg_...", "content": [], "usage": ...}}
    ping
    content_block_start  {"index": i, "content_block": {"type": "text" | "thinking" |
                          "redacted_thinking" | "tool_use", ...}}
    content_block_delta  {"index": i, "delta": {"type": "text_delta" | "thinking_delta" |
                          "signature_delta" | "input_json_delta", ...}}
    content_block_stop   {"index": i}
    message_delta        {"delta": {"stop_reason", "stop_sequence"}, "usage": {...}}
    message_stop

A failure after the first byte ends the stream with `event: error` (the Anthropic SDK
raises APIStatusError-like errors on it). Text and thinking blocks are one at a time;
tool_use blocks stay open until their call is complete, so the argument deltas of
parallel OpenAI calls keep their own indexes however they interleave (the SDK joins
deltas by index). Arguments stream as they come when their text opens with `{`; any
other is held and sent whole, as the parsed object (`{}` when none), at the end.
"""

from __future__ import annotations

import secrets
from typing import Any

import orjson

from streamkeep.gateway.arguments import HeldArguments
from streamkeep.generation.steps import ReplyEvent
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamError,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.types import (
    Completion,
    FinishReason,
    ReasoningPart,
    TextPart,
    ToolCall,
    ToolCallPart,
    Usage,
)
from streamkeep.sse import named

_STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool-calls": "tool_use",
    "content-filter": "refusal",
}
_RAW_KEPT = frozenset(("end_turn", "max_tokens", "tool_use", "stop_sequence", "refusal"))

_dumps = orjson.dumps


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def stop_reason(reason: FinishReason | None, raw: str | None = None) -> str:
    """Our normalised reason in Anthropic's words (its own word when it gave one)."""
    if raw in _RAW_KEPT:
        return raw
    return _STOP_REASONS.get(reason or "stop", "end_turn")


def error_type(status: int) -> str:
    """Anthropic's error `type` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 413:
        return "request_too_large"
    if status == 429:
        return "rate_limit_error"
    if status in (503, 529):
        return "overloaded_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def error_body(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _usage(usage: Usage | None) -> dict[str, Any]:
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_input_tokens,
    }


def _event(name: bytes, data: dict[str, Any]) -> bytes:
    return named(name, _dumps(data))


class MessageEncoder:
    """Stateful encoder of one streamed response, as named-event payloads.

    It speaks the generation engine's encoder interface (`start`, `encode`, `error`,
    `end`) like `ChunkEncoder`; a pure relay (nothing stored) uses `encode` alone,
    which then also turns `Finish` / `StreamError` into the closing events.
    """

    __slots__ = (
        "_error",
        "_message_id",
        "_model",
        "_next",
        "_open",
        "_started",
        "_tools",
        "_usage",
        "failure",
        "raw_reason",
    )

    def __init__(self, *, model: str, message_id: str | None = None) -> None:
        self._model = model
        self._message_id = message_id or new_message_id()
        self._started = False
        self._next = 0  # the next block's index
        self._open: tuple[str, int] | None = None  # the open text/thinking block
        self._tools: dict[str, _Call] = {}  # call id -> its open tool_use block
        self._usage: Usage | None = None
        self._error: str | None = None
        #: the provider's failure, when the caller saw it (it picks the HTTP status)
        self.failure: LLMError | None = None
        #: the provider's own stop word (`stop_sequence`), noted by the gateway's tap
        self.raw_reason: str | None = None

    @property
    def started(self) -> bool:
        """Whether the reply began (message_start went out)."""
        return self._started

    # -- the generation engine's interface -------------------------------------------

    def start(self, message_id: str, metadata: dict[str, Any]) -> list[bytes]:
        # Nothing before the provider's first event: a refusal can still be an HTTP error.
        return []

    def encode(self, event: ReplyEvent) -> list[bytes]:
        """The payloads for one provider event (possibly none)."""
        if type(event) is TextDelta:
            return self._delta("text", "text_delta", event.text)
        if isinstance(event, ReasoningDelta):
            return self._delta("thinking", "thinking_delta", event.text)
        if isinstance(event, ReasoningSignature):
            out = self._opened("thinking")
            index = self._open[1] if self._open is not None else 0
            delta = {"type": "signature_delta", "signature": event.signature}
            out.append(_block_delta(index, delta))
            return out + self._close()
        if isinstance(event, RedactedReasoning):
            block = {"type": "redacted_thinking", "data": event.data}
            out = self._begin() + self._close()
            index = self._block_start(out, block)
            out.append(_stop(index))
            return out
        if isinstance(event, ToolCallStart):
            return self._tool_start(event.call_id, event.name)
        if isinstance(event, ToolCallDelta):
            return self._tool_args(event.call_id, event.arguments_delta)
        if isinstance(event, ToolCallComplete):
            return self._tool_complete(event.call)
        if isinstance(event, UsageReport):
            self._usage = event.usage
            return []
        if isinstance(event, Finish):
            self.raw_reason = event.raw_reason
            return self._finish(stop_reason(event.reason, event.raw_reason))
        if isinstance(event, StreamError):
            self.failure = event.error
            return [self._error_event(event.error.message)]
        return []

    def error(self, error_text: str) -> list[bytes]:
        """Note the failure; its event goes out from `end`, once the reply is stored."""
        self._error = error_text
        return []

    def end(
        self,
        metadata: dict[str, Any],
        finish_reason: FinishReason | None,
        *,
        aborted: bool = False,
    ) -> list[bytes]:
        """The closing events; a stopped reply ends as `end_turn`, one cut short by the
        server shutting down with an error event (it is no whole answer)."""
        if self._error is not None or finish_reason == "error":
            return [self._error_event(self._error or "the model failed")]
        if metadata.get("status") == "interrupted":
            return [self._error_event("the server shut down before the answer was complete")]
        return self._finish(stop_reason(finish_reason, self.raw_reason))

    # -- pieces ---------------------------------------------------------------------

    def _begin(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": self._message_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(self._usage),
        }
        return [
            _event(b"message_start", {"type": "message_start", "message": message}),
            _event(b"ping", {"type": "ping"}),
        ]

    def _block_start(self, out: list[bytes], block: dict[str, Any]) -> int:
        index = self._next
        self._next += 1
        data = {"type": "content_block_start", "index": index, "content_block": block}
        out.append(_event(b"content_block_start", data))
        return index

    def _opened(self, kind: str) -> list[bytes]:
        """The events that make the open block one of `kind` (none when it is)."""
        out = self._begin()
        if self._open is not None and self._open[0] == kind:
            return out
        out += self._close()
        block: dict[str, Any] = (
            {"type": "text", "text": ""}
            if kind == "text"
            else {"type": "thinking", "thinking": "", "signature": ""}
        )
        self._open = (kind, self._block_start(out, block))
        return out

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        index = self._open[1]
        self._open = None
        return [_stop(index)]

    def _delta(self, kind: str, delta_type: str, text: str) -> list[bytes]:
        if not text:
            return []
        out = self._opened(kind)
        assert self._open is not None
        out.append(_block_delta(self._open[1], {"type": delta_type, kind: text}))
        return out

    def _tool_start(self, call_id: str, name: str) -> list[bytes]:
        out = self._begin() + self._close()
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        self._tools[call_id] = _Call(self._block_start(out, block))
        return out

    def _tool_args(self, call_id: str, piece: str) -> list[bytes]:
        call = self._tools.get(call_id)
        text = None if call is None else call.args.feed(piece)
        if call is None or text is None:
            return []
        return [_block_delta(call.index, {"type": "input_json_delta", "partial_json": text})]

    def _tool_complete(self, call: ToolCall) -> list[bytes]:
        out: list[bytes] = []
        if call.id not in self._tools:  # a provider that gives calls whole
            out += self._tool_start(call.id, call.name)
        state = self._tools.pop(call.id)
        if not state.args.live:
            delta = {"type": "input_json_delta", "partial_json": _dumps(call.arguments).decode()}
            out.append(_block_delta(state.index, delta))
        out.append(_stop(state.index))
        return out

    def _finish(self, reason: str) -> list[bytes]:
        out = self._begin() + self._close()
        for state in self._tools.values():  # stopped mid-call: end its block
            if not state.args.live:
                delta = {"type": "input_json_delta", "partial_json": "{}"}
                out.append(_block_delta(state.index, delta))
            out.append(_stop(state.index))
        self._tools.clear()
        usage = _usage(self._usage)
        data = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": usage,
        }
        out.append(_event(b"message_delta", data))
        out.append(_event(b"message_stop", {"type": "message_stop"}))
        return out

    def _error_event(self, text: str) -> bytes:
        status = getattr(self.failure, "status", None)
        kind = error_type(status) if isinstance(status, int) else "api_error"
        if self.failure is not None:
            text = self.failure.message
        return _event(b"error", error_body(kind, text))


def _block_delta(index: int, delta: dict[str, Any]) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": delta}
    return _event(b"content_block_delta", data)


def _stop(index: int) -> bytes:
    return _event(b"content_block_stop", {"type": "content_block_stop", "index": index})


class _Call:
    """A tool_use block on its way: its index, and its argument text."""

    __slots__ = ("args", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.args = HeldArguments()


def message_body(
    completion: Completion,
    *,
    model: str,
    message_id: str | None = None,
    raw_reason: str | None = None,
) -> dict[str, Any]:
    """The non-streaming `message` response for an accumulated completion."""
    content: list[dict[str, Any]] = []
    for part in completion.parts:
        if isinstance(part, TextPart):
            if part.text:
                content.append({"type": "text", "text": part.text})
        elif isinstance(part, ReasoningPart):
            if part.redacted is not None:
                content.append({"type": "redacted_thinking", "data": part.redacted})
            else:
                block = {
                    "type": "thinking",
                    "thinking": part.text,
                    "signature": part.signature or "",
                }
                content.append(block)
        elif isinstance(part, ToolCallPart):
            call = part.call
            content.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
            )
    return {
        "id": message_id or new_message_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(completion.finish_reason, raw_reason),
        "stop_sequence": None,
        "usage": _usage(completion.usage),
    }
