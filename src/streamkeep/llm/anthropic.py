"""Anthropic's Messages API: request mapping and the streaming event parser.

A streamed message is a sequence of named SSE events:

    message_start                 the message's id, model and input usage
    content_block_start           one per block, with its `index` and type:
      content_block_delta         text_delta | thinking_delta | signature_delta |
                                  input_json_delta (a tool_use block's input, as text)
    content_block_stop
    message_delta                 stop_reason and the cumulative output usage
    message_stop                  the end
    ping                          keep-alive, any time
    error                         a failure after HTTP 200 (e.g. overloaded_error)

Mapping to streamkeep's events: text_delta -> `TextDelta`, thinking_delta ->
`ReasoningDelta` (signatures are dropped: we never send thinking back), a tool_use
block -> `ToolCallStart`, one `ToolCallDelta` per input_json_delta, and at its
content_block_stop ends a tool call; its `ToolCallComplete` (parsed input, `{}` when empty)
                  comes at message_stop, reported cut off when stop_reason is max_tokens.
message_stop gives `UsageReport` then `Finish`; `error` gives `StreamError`. Only
message_stop says the answer is finished: a body that ends without it was cut short (a
connection closed mid-answer, a proxy's time limit) and ends with a `StreamError`
(`ProviderIncomplete`); its tool calls are not completed, lest a consumer run them.
Anthropic's `input_tokens` excludes cache reads and writes, so ours is
their sum, with the reads also in `cached_input_tokens` (OpenAI counts the same way).
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from streamkeep.llm.errors import ProviderError, ProviderIncomplete, ProviderStreamError
from streamkeep.llm.events import (
    Finish,
    ReasoningDelta,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallComplete,
    ToolCallDelta,
    ToolCallStart,
    UsageReport,
)
from streamkeep.llm.http_provider import HTTPProvider
from streamkeep.llm.sse import SSEDecoder
from streamkeep.llm.toolcalls import parse_arguments
from streamkeep.llm.transport import RetryPolicy, Timeouts
from streamkeep.llm.types import ChatRequest, FinishReason, Message, ToolCall, Usage
from streamkeep.text import loads_repairing

__all__ = ["AnthropicProvider", "AnthropicStreamParser", "request_body"]

API_VERSION = "2023-06-01"

_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool-calls",
    "refusal": "content-filter",
}


class AnthropicProvider(HTTPProvider):
    """Claude over the Messages API; `base_url` is the host, e.g. https://api.anthropic.com."""

    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        *,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        extra_headers: dict[str, str] | None = None,
        client: aiohttp.ClientSession | None = None,
        default_max_tokens: int = 4096,
    ) -> None:
        base = base_url.rstrip("/")
        # Accept a base URL given with or without the version segment.
        url = base + ("/messages" if base.endswith("/v1") else "/v1/messages")
        headers = {
            "accept": "text/event-stream",
            "anthropic-version": API_VERSION,
            **(extra_headers or {}),
        }
        if api_key:
            headers["x-api-key"] = api_key
        super().__init__(name, url, headers, timeouts=timeouts, retry=retry, client=client)
        self._default_max_tokens = default_max_tokens

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return request_body(request, self._default_max_tokens)

    def _parser(self) -> AnthropicStreamParser:
        return AnthropicStreamParser(self.name)


# -- request --------------------------------------------------------------------------


def request_body(request: ChatRequest, default_max_tokens: int = 4096) -> dict[str, Any]:
    """The Messages API JSON body for a request, streaming."""
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.max_tokens or default_max_tokens,
        "messages": _messages(request.messages),
        "stream": True,
    }
    system = "\n\n".join(m.content for m in request.messages if m.role == "system" and m.content)
    if system:
        body["system"] = system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
        choice = _tool_choice(request.tool_choice)
        if choice is not None:
            body["tool_choice"] = choice
    body.update(request.extra)
    body["stream"] = True
    return body


def _messages(messages: list[Message]) -> list[dict[str, Any]]:
    """Turns in Anthropic's shape; consecutive turns of one role are merged into one."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id or "",
                "content": message.content,
            }
        ]
    # Empty text blocks are rejected by the API, so only non-empty text is sent.
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
        )
    return blocks


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    """OpenAI-style tool_choice to Anthropic's; an Anthropic-shaped dict passes through."""
    if choice is None:
        return None
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice in ("required", "any"):
        return {"type": "any"}
    if isinstance(choice, str):
        return {"type": "tool", "name": choice}
    if isinstance(choice, dict):
        function = choice.get("function")
        if choice.get("type") == "function" and isinstance(function, dict):
            return {"type": "tool", "name": function.get("name", "")}
        return choice
    return None


# -- response -------------------------------------------------------------------------


class _ToolBlock:
    __slots__ = ("call_id", "chunks", "name")

    def __init__(self, call_id: str, name: str) -> None:
        self.call_id = call_id
        self.name = name
        self.chunks: list[str] = []

    def complete(self, *, truncated: bool) -> ToolCallComplete:
        raw = "".join(self.chunks)
        arguments, error = parse_arguments(raw, truncated=truncated)
        return ToolCallComplete(ToolCall(self.call_id, self.name, arguments, raw, error))


class AnthropicStreamParser:
    """Messages API SSE body bytes in, typed stream events out."""

    __slots__ = (
        "_blocks",
        "_done",
        "_finished",
        "_sse",
        "_stop_reason",
        "_stopped_tools",
        "_usage",
        "model",
        "provider",
        "response_id",
    )

    def __init__(self, provider: str = "anthropic") -> None:
        self.provider = provider
        self.response_id: str | None = None
        self.model: str | None = None
        self._sse = SSEDecoder()
        # index -> the kind of the open content block, or its tool call
        self._blocks: dict[int, str | _ToolBlock] = {}
        self._stopped_tools: list[_ToolBlock] = []
        self._usage: Usage | None = None
        self._stop_reason: str | None = None
        self._done = False
        self._finished = False

    @property
    def done(self) -> bool:
        """True once the final event (Finish or StreamError) was returned."""
        return self._done

    @property
    def finished(self) -> bool:
        """True once message_stop came (only it says the answer is finished)."""
        return self._finished

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take the next bytes of the body; return the events they complete."""
        out: list[StreamEvent] = []
        for sse in self._sse.feed(data):
            if self._done:
                break
            try:
                payload = orjson.loads(sse.data)
            except orjson.JSONDecodeError:  # e.g. a lone surrogate escape: U+FFFD
                payload = loads_repairing(sse.data)
            if type(payload) is not dict:
                if sse.event == "error":  # not JSON, but still an error
                    self._fail(self._stream_error(sse.data or "error", None), out)
                continue
            self._event(payload.get("type") or sse.event, payload, out)
        return out

    def close(self) -> list[StreamEvent]:
        """The body ended: the final events, unless message_stop or an error came."""
        self._sse.flush()
        if self._done:
            return []
        out: list[StreamEvent] = []
        self._fail(ProviderIncomplete(provider=self.provider), out)
        return out

    def _event(self, kind: Any, payload: dict[str, Any], out: list[StreamEvent]) -> None:
        if kind == "content_block_delta":
            self._delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_stop":
            block = self._blocks.pop(_index(payload), None)
            if isinstance(block, _ToolBlock):
                # Held until the end: only message_delta says whether max_tokens cut it.
                self._stopped_tools.append(block)
        elif kind == "message_start":
            self._message_start(payload.get("message"))
        elif kind == "message_delta":
            delta = payload.get("delta")
            if type(delta) is dict and isinstance(reason := delta.get("stop_reason"), str):
                self._stop_reason = reason
            self._add_usage(payload.get("usage"))
        elif kind == "message_stop":
            self._end(out)
        elif kind == "error":
            error = payload.get("error")
            error = error if type(error) is dict else {}
            code = error.get("type")
            self._fail(self._stream_error(str(error.get("message") or code or "error"), code), out)
        # ping and event types added later are ignored, as the API asks.

    def _delta(self, payload: dict[str, Any], out: list[StreamEvent]) -> None:
        delta = payload.get("delta")
        if type(delta) is not dict:
            return
        kind = delta.get("type")
        if kind == "text_delta" and (text := delta.get("text")):
            out.append(TextDelta(str(text)))
        elif kind == "thinking_delta" and (text := delta.get("thinking")):
            out.append(ReasoningDelta(str(text)))
        elif kind == "input_json_delta" and (text := delta.get("partial_json")):
            block = self._blocks.get(_index(payload))
            if isinstance(block, _ToolBlock):
                block.chunks.append(str(text))
                out.append(ToolCallDelta(block.call_id, str(text)))

    def _block_start(self, payload: dict[str, Any], out: list[StreamEvent]) -> None:
        block = payload.get("content_block")
        if type(block) is not dict:
            return
        kind = str(block.get("type"))
        index = _index(payload)
        if kind != "tool_use":
            self._blocks[index] = kind
            return
        call_id = str(block.get("id") or f"toolu_{index}")
        tool = _ToolBlock(call_id, str(block.get("name") or ""))
        self._blocks[index] = tool
        out.append(ToolCallStart(tool.call_id, tool.name))
        given = block.get("input")
        if given:  # usually {} with the input streamed; some proxies send it whole
            text = orjson.dumps(given).decode()
            tool.chunks.append(text)
            out.append(ToolCallDelta(tool.call_id, text))

    def _message_start(self, message: Any) -> None:
        if type(message) is not dict:
            return
        if isinstance(rid := message.get("id"), str):
            self.response_id = rid
        if isinstance(model := message.get("model"), str):
            self.model = model
        self._add_usage(message.get("usage"))

    def _add_usage(self, raw: Any) -> None:
        """Merge a usage object: later numbers replace earlier ones, field by field."""
        if type(raw) is not dict:
            return
        usage = self._usage or Usage()
        fresh = _count(raw.get("input_tokens"))
        cache_read = _count(raw.get("cache_read_input_tokens"))
        cache_write = _count(raw.get("cache_creation_input_tokens"))
        if "input_tokens" in raw or "cache_read_input_tokens" in raw:
            usage.input_tokens = fresh + cache_read + cache_write
            usage.cached_input_tokens = cache_read
        if "output_tokens" in raw:
            usage.output_tokens = _count(raw.get("output_tokens"))
        self._usage = usage

    def _end(self, out: list[StreamEvent]) -> None:
        self._done = self._finished = True
        raw = self._stop_reason
        reason: FinishReason = _FINISH_REASONS.get(raw or "", "other")
        for block in self._stopped_tools:
            out.append(block.complete(truncated=reason == "length"))
        for open_block in self._blocks.values():
            if isinstance(open_block, _ToolBlock):
                out.append(open_block.complete(truncated=True))
        self._stopped_tools.clear()
        self._blocks.clear()
        if self._usage is not None:
            out.append(UsageReport(self._usage))
        out.append(Finish(reason, self.response_id, self.model, raw))

    def _stream_error(self, message: str, code: Any) -> ProviderStreamError:
        return ProviderStreamError(
            message, provider=self.provider, code=None if code is None else str(code)
        )

    def _fail(self, error: ProviderError, out: list[StreamEvent]) -> None:
        self._done = True
        out.append(StreamError(error, self.response_id, self.model))


def _index(payload: dict[str, Any]) -> int:
    index = payload.get("index")
    return index if type(index) is int else 0


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0
