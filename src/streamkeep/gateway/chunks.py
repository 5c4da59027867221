"""Typed llm events -> OpenAI `chat.completion.chunk` payloads, and the whole body.

One `ChunkEncoder` per response. The frames it writes, in order:

    role chunk  {"delta": {"role": "assistant", "content": ""}}   (with the first event)
    deltas      {"content": ...} | {"reasoning_content": ...} |
                {"tool_calls": [{"index", "id", "type", "function": {"name", "arguments"}}]}
    finish      {"delta": {}, "finish_reason": "stop" | "length" | "tool_calls" | ...}
    usage       {"choices": [], "usage": {...}}        only with stream_options.include_usage
    data: [DONE]

A failure after the first byte ends the stream with a chunk carrying an `error` object
(the OpenAI SDK raises APIError on it), then `[DONE]`. Tool calls get indexes 0, 1, 2
in the order they started, so parallel calls stay apart however their deltas interleave.

A client joins a call's `arguments` deltas; what it ends with is `openai_arguments(call)`,
the same string a whole answer carries, whose JSON is what is stored. Arguments whose
text opens with `{` stream as they come; any other (`null`, none at all, JSON that is
not an object) is held until the call is complete and goes out as one delta, `{}` for
the empty ones.

Text deltas are the hot path: their frame is a precomputed prefix, the JSON string of
the text and a precomputed suffix, so one small `orjson.dumps(str)` per token.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from streamkeep.gateway.arguments import HeldArguments
from streamkeep.gateway.errors import stream_error_payload
from streamkeep.generation.steps import ReplyEvent
from streamkeep.llm.errors import LLMError
from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    StreamError,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.types import Completion, FinishReason, ToolCall, Usage
from streamkeep.sse import DONE

_OPENAI_REASONS: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "content-filter": "content_filter",
    "tool-calls": "tool_calls",
}
_RAW_KEPT = frozenset(("stop", "length", "content_filter", "tool_calls", "function_call"))

_dumps = orjson.dumps


def new_completion_id() -> str:
    return "chatcmpl-" + secrets.token_urlsafe(18)


def openai_finish_reason(reason: FinishReason | None, raw: str | None = None) -> str:
    """Our normalised reason back in OpenAI's words (its own word when it gave one)."""
    if raw in _RAW_KEPT:
        return raw
    return _OPENAI_REASONS.get(reason or "stop", "stop")


def openai_arguments(call: ToolCall) -> str:
    """The call's `arguments` string as clients get it, streamed or not: the provider's
    text when it is a JSON object, `{}` for none or `null` (stored as `{}`), and the text
    as sent when it is no object at all (stored as `rawInput`, so the caller sees what
    the model said rather than an empty call it might run)."""
    raw = call.raw_arguments
    text = raw.strip()
    if text and text != "null" and (text[0] == "{" or call.parse_error is not None):
        return raw
    return _dumps(call.arguments).decode()


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


class ChunkEncoder:
    """Stateful encoder of one streamed response, as JSON payloads (no SSE framing).

    It speaks the generation engine's encoder interface (`start`, `encode`, `error`,
    `end`), so a stored gateway call runs through the same `Generation` as the chat API
    and only its frames differ; a pure relay (nothing stored) uses `encode` alone, which
    then also turns `Finish` / `StreamError` into the closing payloads.
    """

    __slots__ = (
        "_args",
        "_error",
        "_head",
        "_include_usage",
        "_indexes",
        "_started",
        "_tail",
        "_text_prefix",
        "_text_suffix",
        "_usage",
        "failure",
    )

    def __init__(
        self,
        *,
        model: str,
        completion_id: str | None = None,
        created: int | None = None,
        include_usage: bool = False,
    ) -> None:
        meta = {
            "id": completion_id or new_completion_id(),
            "object": "chat.completion.chunk",
            "created": int(time.time()) if created is None else created,
            "model": model,
        }
        # `{"id":...,"model":"..."` without its closing brace: every chunk starts so.
        self._head = _dumps(meta)[:-1]
        self._include_usage = include_usage
        # OpenAI puts "usage": null on every chunk when the client asked for usage.
        self._tail = b',"usage":null}' if include_usage else b"}"
        self._text_prefix = self._head + b',"choices":[{"index":0,"delta":{"content":'
        self._text_suffix = b'},"logprobs":null,"finish_reason":null}]' + self._tail
        self._started = False
        self._indexes: dict[str, int] = {}  # call id -> tool_calls index
        self._args: dict[str, HeldArguments] = {}  # call id -> its arguments, until complete
        self._usage: Usage | None = None
        self._error: str | None = None
        #: the provider's failure, when the caller saw it (it picks the HTTP status)
        self.failure: LLMError | None = None

    @property
    def started(self) -> bool:
        """Whether the reply began (a role chunk went out). A failure before that can
        still be answered with an HTTP error status instead of a stream."""
        return self._started

    # -- the generation engine's interface -------------------------------------------

    def start(self, message_id: str, metadata: dict[str, Any]) -> list[bytes]:
        # Nothing before the provider's first event: a refusal can still be an HTTP error.
        return []

    def encode(self, event: ReplyEvent) -> list[bytes]:
        """The payloads for one provider event (possibly none; the gateway runs no
        tool loop, so no loop event comes)."""
        if type(event) is TextDelta:  # the hot path first
            if not event.text:
                return []
            return self._first(self._text_prefix + _dumps(event.text) + self._text_suffix)
        if isinstance(event, ReasoningDelta):
            return self._first(self._delta({"reasoning_content": event.text})) if event.text else []
        if isinstance(event, ToolCallStart):
            return self._first(self._tool_start(event.call_id, event.name))
        if isinstance(event, ToolCallDelta):
            return self._tool_args(event.call_id, event.arguments_delta)
        if isinstance(event, ToolCallComplete):
            return self._tool_complete(event.call)
        if isinstance(event, UsageReport):
            self._usage = event.usage
            return []
        if isinstance(event, Finish):
            return self._finish(openai_finish_reason(event.reason, event.raw_reason))
        if isinstance(event, StreamError):
            self.failure = event.error
            return [self._error_chunk(event.error.message), DONE]
        return []

    def error(self, error_text: str) -> list[bytes]:
        """Note the failure; its chunk goes out from `end`, once the reply is stored,
        so a client that stops reading at the error finds the stored reply final."""
        self._error = error_text
        return []

    def end(
        self,
        metadata: dict[str, Any],
        finish_reason: FinishReason | None,
        *,
        aborted: bool = False,
    ) -> list[bytes]:
        """The closing payloads; a stopped reply ends as "stop" like a finished one. A
        reply cut short by the server shutting down ends with an error chunk: OpenAI has
        no finish reason for it, and "stop" would pass a truncated answer as whole."""
        if self._error is not None or finish_reason == "error":
            return [self._error_chunk(self._error or "the model failed"), DONE]
        if metadata.get("status") == "interrupted":
            text = "the server shut down before the answer was complete"
            return [self._error_chunk(text), DONE]
        return self._finish(openai_finish_reason(finish_reason))

    # -- pieces ---------------------------------------------------------------------

    def _first(self, payload: bytes) -> list[bytes]:
        if self._started:
            return [payload]
        self._started = True
        return [self._delta({"role": "assistant", "content": ""}), payload]

    def _error_chunk(self, text: str) -> bytes:
        payload = stream_error_payload(self.failure, text)
        body = b'"choices":[],"error":' + _dumps(payload)
        return self._head + b"," + body + b"}"  # no `"usage": null` on this one

    def _chunk(self, body: bytes) -> bytes:
        return self._head + b"," + body + self._tail

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._chunk(b'"choices":' + _dumps([choice]))

    def _tool_start(self, call_id: str, name: str) -> bytes:
        index = self._indexes.setdefault(call_id, len(self._indexes))
        self._args[call_id] = HeldArguments()
        call = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        return self._delta({"tool_calls": [call]})

    def _tool_args(self, call_id: str, piece: str) -> list[bytes]:
        args = self._args.get(call_id)
        text = None if args is None else args.feed(piece)
        return [] if text is None else [self._arguments(call_id, text)]

    def _arguments(self, call_id: str, text: str) -> bytes:
        index = self._indexes[call_id]
        return self._delta({"tool_calls": [{"index": index, "function": {"arguments": text}}]})

    def _tool_complete(self, call: ToolCall) -> list[bytes]:
        """The held arguments, normalised; providers that give a call whole (no
        start/deltas) still reach the client."""
        out: list[bytes] = []
        if call.id not in self._indexes:
            out += self._first(self._tool_start(call.id, call.name))
        args = self._args.pop(call.id, None)
        if args is not None and not args.live:
            out.append(self._arguments(call.id, openai_arguments(call)))
        return out

    def _finish(self, reason: str) -> list[bytes]:
        # A call never completed (the reply was stopped in it) still gets its arguments.
        held = [
            self._arguments(call_id, openai_arguments(ToolCall(call_id, "", {}, "".join(a.held))))
            for call_id, a in self._args.items()
            if not a.live
        ]
        self._args.clear()
        out = [*held, *self._first(self._delta({}, reason))]
        if self._include_usage and self._usage is not None:
            usage = _dumps(openai_usage(self._usage))
            out.append(self._head + b',"choices":[],"usage":' + usage + b"}")
        out.append(DONE)
        return out


def completion_body(
    completion: Completion,
    *,
    model: str,
    completion_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """The non-streaming `chat.completion` response for an accumulated completion."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text or None,
        "refusal": None,
    }
    if completion.reasoning:
        message["reasoning_content"] = completion.reasoning
    calls = completion.tool_calls
    if calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": openai_arguments(c)},
            }
            for c in calls
        ]
    body: dict[str, Any] = {
        "id": completion_id or new_completion_id(),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": openai_finish_reason(completion.finish_reason),
            }
        ],
    }
    if completion.usage is not None:
        body["usage"] = openai_usage(completion.usage)
    return body
