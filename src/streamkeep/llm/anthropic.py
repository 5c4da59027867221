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
`ReasoningDelta`, signature_delta -> `ReasoningSignature` (at the end of its thinking
block; a signature given whole in content_block_start, as some proxies do, comes at the
block's stop), a redacted_thinking block -> `RedactedReasoning`. Thinking goes back
with the history: with tools, the API wants the turn's thinking blocks before its
tool_use, signed as they came. A tool_use block and its input_json_deltas go through
the `ToolCallAssembler` every provider shares (its index is the block's `index`), so
they become `ToolCallStart` and one `ToolCallDelta` per input_json_delta; the calls
complete (`ToolCallComplete`, the input parsed, `{}` when empty) at message_stop,
reported cut off when stop_reason is max_tokens (all of them) or when their block
never stopped (those only).

How the answer ends is `StreamParser`'s (see `streamkeep.llm.parser`): message_stop
gives the calls, `UsageReport` and `Finish`; an `error` event gives `StreamError`,
after the usage seen so far (`final=False` until message_delta has counted the
output). Only message_stop says the answer is finished: a body that ends without it
was cut short (a connection closed mid-answer, a proxy's time limit) and ends with a
`StreamError` (`ProviderIncomplete`); its tool calls are not completed, lest a consumer
run them. Anthropic's `input_tokens` excludes cache reads and writes, so ours is their
sum, with the reads also in `cached_input_tokens` (OpenAI counts the same way).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import aiohttp
import orjson

from streamkeep.llm.errors import ProviderIncomplete
from streamkeep.llm.events import (
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    StreamEvent,
    TextDelta,
)
from streamkeep.llm.http_provider import HTTPProvider
from streamkeep.llm.openai import model_ids
from streamkeep.llm.parser import StreamParser, count
from streamkeep.llm.transport import RetryPolicy, Timeouts, get_json
from streamkeep.llm.types import ChatRequest, FinishReason, Message, ReasoningPart, Usage
from streamkeep.text import loads_repairing

__all__ = ["AnthropicProvider", "AnthropicStreamParser", "request_body"]

API_VERSION = "2023-06-01"
_TOOL_ID = re.compile(r"[a-zA-Z0-9_-]+")
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")

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
        self._models_url = url.removesuffix("/messages") + "/models"

    async def list_models(self) -> list[str]:
        """The model ids `GET /v1/models` lists (its first page: `streamkeep doctor`
        asks whether the key works, not for every model); bound it with
        `asyncio.timeout`. Raises a `ProviderError` subclass, or ValueError."""
        body = await get_json(
            self.open(), self._models_url, headers=self._headers, provider=self.name
        )
        return model_ids(body)

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
    """Turns in Anthropic's shape; consecutive turns of one role are merged into one.

    A user turn's tool_result blocks go first, as the API asks: tool results and a user
    message after them make one turn that starts with all the results."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            content = out[-1]["content"]
            content.extend(blocks)
            if role == "user":
                content.sort(key=lambda b: b["type"] != "tool_result")  # stable
        else:
            out.append({"role": role, "content": blocks})
    return out


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": _tool_id(message.tool_call_id or ""),
        }
        if message.content:
            result["content"] = message.content
        if message.is_error:
            result["is_error"] = True
        return [result]
    blocks: list[dict[str, Any]] = []
    if message.role == "assistant":
        blocks.extend(b for p in message.thinking if (b := _thinking(p)) is not None)
    if message.role == "user":
        blocks.extend(
            {
                "type": "image",
                "source": {
                    "type": "base64",
                    "media_type": i.media_type,
                    "data": base64.b64encode(i.data).decode(),
                },
            }
            for i in message.images
        )
    # The API rejects text blocks that are empty or only whitespace.
    if message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": _tool_id(call.id),
                "name": call.name,
                "input": call.arguments,
            }
        )
    return blocks


def _thinking(part: ReasoningPart) -> dict[str, Any] | None:
    """The block to send back; None for reasoning the API did not sign (another
    vendor's, or cut short), which it would reject."""
    if part.redacted is not None:
        return {"type": "redacted_thinking", "data": part.redacted}
    if part.signature:
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def _tool_id(call_id: str) -> str:
    """The id as the API takes it (`^[a-zA-Z0-9_-]+$`): another vendor's id may have
    other characters; both the tool_use and its tool_result map it the same way."""
    return call_id if _TOOL_ID.fullmatch(call_id) else _TOOL_ID_BAD.sub("_", call_id) or "_"


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


class AnthropicStreamParser(StreamParser):
    """Messages API SSE body bytes in, typed stream events out."""

    __slots__ = ("_finished", "_signatures", "_stop_reason", "_tool_blocks")

    def __init__(self, provider: str = "anthropic") -> None:
        super().__init__(provider)
        # Until message_delta counts the output, the usage is message_start's: the prompt.
        self.usage_final = False
        # The indexes of the tool_use blocks started and not stopped yet.
        self._tool_blocks: set[int] = set()
        # Thinking block index -> the signature its start gave whole, sent at its stop.
        self._signatures: dict[int, str] = {}
        self._stop_reason: str | None = None
        self._finished = False

    @property
    def finished(self) -> bool:
        """True once message_stop came (only it says the answer is finished)."""
        return self._finished

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take the next bytes of the body; return the events they complete."""
        out: list[StreamEvent] = []
        for sse in self.sse.feed(data):
            if self._done:
                break
            try:
                payload = orjson.loads(sse.data)
            except orjson.JSONDecodeError:  # e.g. a lone surrogate escape: U+FFFD
                payload = loads_repairing(sse.data)
            if type(payload) is not dict:
                if sse.event == "error":  # not JSON, but still an error
                    self.fail(self.stream_error(sse.data or "error"), out)
                continue
            self._event(payload.get("type") or sse.event, payload, out)
        return out

    def close(self) -> list[StreamEvent]:
        """The body ended: the final events, unless message_stop or an error came."""
        self.sse.flush()
        if self._done:
            return []
        out: list[StreamEvent] = []
        self.fail(ProviderIncomplete(provider=self.provider), out)
        return out

    def _event(self, kind: Any, payload: dict[str, Any], out: list[StreamEvent]) -> None:
        if kind == "content_block_delta":
            self._delta(payload, out)
        elif kind == "content_block_start":
            self._block_start(payload, out)
        elif kind == "content_block_stop":
            index = _index(payload)
            self._tool_blocks.discard(index)
            if (signature := self._signatures.pop(index, None)) is not None:
                out.append(ReasoningSignature(signature))
        elif kind == "message_start":
            self._message_start(payload.get("message"))
        elif kind == "message_delta":
            delta = payload.get("delta")
            if type(delta) is dict and isinstance(reason := delta.get("stop_reason"), str):
                self._stop_reason = reason
            usage = payload.get("usage")
            self._add_usage(usage)
            if type(usage) is dict:  # cumulative, and sent last: the response's totals
                self.usage_final = True
        elif kind == "message_stop":
            self._end(out)
        elif kind == "error":
            error = payload.get("error")
            error = error if type(error) is dict else {}
            code = error.get("type")
            self.fail(self.stream_error(str(error.get("message") or code or "error"), code), out)
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
        elif kind == "signature_delta" and (signature := delta.get("signature")):
            self._signatures.pop(_index(payload), None)  # this one replaces it
            out.append(ReasoningSignature(str(signature)))
        elif kind == "input_json_delta" and (text := delta.get("partial_json")):
            index = _index(payload)
            if index in self._tool_blocks:
                out.extend(self.calls.feed(index, None, None, str(text)))

    def _block_start(self, payload: dict[str, Any], out: list[StreamEvent]) -> None:
        block = payload.get("content_block")
        if type(block) is not dict:
            return
        kind = block.get("type")
        if kind == "thinking":
            self._thinking_start(_index(payload), block, out)
        elif kind == "redacted_thinking":
            if (data := block.get("data")) and type(data) is str:
                out.append(RedactedReasoning(data))
        elif kind == "tool_use":
            self._tool_start(_index(payload), block, out)

    def _thinking_start(self, index: int, block: dict[str, Any], out: list[StreamEvent]) -> None:
        """Usually empty, with the text and signature as deltas; some proxies send the
        block whole here: its signature is held until the block stops."""
        if (text := block.get("thinking")) and type(text) is str:
            out.append(ReasoningDelta(text))
        if (signature := block.get("signature")) and type(signature) is str:
            self._signatures[index] = signature

    def _tool_start(self, index: int, block: dict[str, Any], out: list[StreamEvent]) -> None:
        self._tool_blocks.add(index)
        call_id, name = block.get("id"), block.get("name")
        # Usually {} with the input streamed after; some proxies send it whole.
        given = block.get("input")
        if given is not None and type(given) is not dict:
            given = orjson.dumps(given).decode()  # not an object: reported at the end
        out.extend(
            self.calls.feed(
                index,
                call_id if type(call_id) is str else None,
                name if type(name) is str else None,
                given,
            )
        )

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
        usage = self.usage or Usage()
        fresh = count(raw.get("input_tokens"))
        cache_read = count(raw.get("cache_read_input_tokens"))
        cache_write = count(raw.get("cache_creation_input_tokens"))
        if "input_tokens" in raw or "cache_read_input_tokens" in raw:
            usage.input_tokens = fresh + cache_read + cache_write
            usage.cached_input_tokens = cache_read
        if "output_tokens" in raw:
            usage.output_tokens = count(raw.get("output_tokens"))
        self.usage = usage

    def _end(self, out: list[StreamEvent]) -> None:
        self._finished = True
        raw = self._stop_reason
        reason: FinishReason = _FINISH_REASONS.get(raw or "", "other")
        # A tool block still open at message_stop was cut off, whatever the reason says;
        # the blocks that stopped are whole unless max_tokens ended the answer.
        self.end(out, reason, raw, truncated=reason == "length", cut=self._tool_blocks)


def _index(payload: dict[str, Any]) -> int:
    index = payload.get("index")
    return index if type(index) is int else 0
