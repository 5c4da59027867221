"""The OpenAI-compatible provider: Chat Completions with `stream: true`.

One adapter serves OpenAI, Azure, vLLM, Ollama, llama.cpp, Groq, xAI, DeepSeek,
OpenRouter, Gemini's compatibility endpoint and the like. `OpenAIChunkParser` turns the
SSE body into typed events (pure, no I/O: tests and the benchmark drive it with bytes);
`OpenAIProvider` builds the request and moves bytes from the transport to the parser.

What the parser tolerates, because some server out there sends it: SSE comments and
CRLF, a first chunk with empty `choices` (Azure's prompt filter results), chunks without
`delta`, chunks that are not JSON (skipped and counted in `skipped_chunks`), a lone
surrogate escape in a string (U+FFFD instead: see `streamkeep.text`), usage on
any chunk (xAI sends it before the last) or under `x_groq.usage` (the last one wins),
reasoning as `reasoning_content` (DeepSeek) or `reasoning` (vLLM, Ollama, Groq,
OpenRouter), content as a list of typed blocks (Mistral), a `refusal` (kept as text),
the deprecated `function_call` delta, and every tool-call quirk `ToolCallAssembler` documents.

Order of the last events. OpenAI sends `finish_reason` on one chunk, then (with
`include_usage`) a usage chunk with `choices: []`, then `data: [DONE]`. The finish is
held until `[DONE]` or the end of the body, then: the `ToolCallComplete`s, one
`UsageReport` if usage came, and `Finish` last. Either a finish reason or `[DONE]` says
the answer is finished (`[DONE]` alone finishes as "unknown", open tool calls counted
as cut off). A body that ends with neither was cut short (a connection closed
mid-answer, a proxy's time limit): it ends with a `StreamError` (`ProviderIncomplete`).
An `error` object in a chunk (OpenRouter, with HTTP 200 and `finish_reason: "error"`),
`finish_reason: "error"` or an SSE event named `error` ends the stream with a
`StreamError` instead, after the usage seen so far; open tool calls are then not
completed, since a consumer might run them (these endings are `StreamParser`'s, the
same for every vendor: see `streamkeep.llm.parser`). Finish reasons map one to one
(`raw_reason` keeps the vendor's word): a server that says "stop" after tool calls
(older Ollama) gets "stop", so a consumer deciding whether to run tools should look at
the calls, not only the reason.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson

from streamkeep.llm.errors import ProviderIncomplete, ProviderStreamError
from streamkeep.llm.events import ReasoningDelta, StreamEvent, TextDelta
from streamkeep.llm.http_provider import HTTPProvider
from streamkeep.llm.parser import StreamParser, count
from streamkeep.llm.transport import RetryPolicy, Timeouts, get_json
from streamkeep.llm.types import ChatRequest, FinishReason, Message, ToolCall, Usage
from streamkeep.text import loads_repairing

_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "function_call": "tool-calls",
    "content_filter": "content-filter",
}


class OpenAIChunkParser(StreamParser):
    """Chat Completions SSE body bytes in, typed stream events out."""

    __slots__ = ("_finish_reason", "_sniffed", "_whole", "skipped_chunks")

    def __init__(self, provider: str = "openai") -> None:
        super().__init__(provider)
        self.skipped_chunks = 0
        self._finish_reason: str | None = None
        # Whether the body's first byte was seen; the body, if it was one JSON document.
        self._sniffed = False
        self._whole: bytearray | None = None

    @property
    def finished(self) -> bool:
        """True once a finish reason came: the answer is whole, whatever follows."""
        return self._finish_reason is not None

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Take the next bytes of the body; return the events they complete."""
        out: list[StreamEvent] = []
        if self._done:
            return out
        if self._whole is not None:
            self._whole += data
            return out
        if not self._sniffed and self._sniff(data):
            return out
        for event in self.sse.feed(data):
            payload = event.data
            if payload[:1] != "{" and self._special(payload, event.event, out):
                break
            try:
                chunk = orjson.loads(payload)
            except orjson.JSONDecodeError:  # e.g. a lone surrogate escape ("\ud800")
                chunk = loads_repairing(payload)
            if type(chunk) is not dict:
                self.skipped_chunks += 1
                continue
            if event.event == "error":  # some servers name the event, not the field
                self.fail(self._error(chunk.get("error") or chunk), out)
                break
            self._chunk(chunk, out)
            if self.done:  # an error chunk ended the stream
                break
        return out

    def close(self) -> list[StreamEvent]:
        """The body ended: the final events, unless `[DONE]` or an error came already."""
        self.sse.flush()
        if self.done:
            return []
        out: list[StreamEvent] = []
        if self._whole is not None:
            self._whole_body(out)
        elif self._finish_reason is not None:
            self._end(out)
        else:
            self.fail(ProviderIncomplete(provider=self.provider), out)
        return out

    def _sniff(self, data: bytes) -> bool:
        """True when the body is one JSON document: the server ignored `stream: true`.

        An event stream starts with a field name or `:`, never with `{`.
        """
        head = data.lstrip()
        if not head:
            return False
        self._sniffed = True
        if head[:1] != b"{":
            return False
        self._whole = bytearray(head)
        return True

    def _whole_body(self, out: list[StreamEvent]) -> None:
        """A whole chat.completion (or an error): one chunk whose delta is the message.
        A document that is not whole JSON was cut short."""
        try:
            body = orjson.loads(self._whole or b"")
        except orjson.JSONDecodeError:
            body = loads_repairing(bytes(self._whole or b""))
            if body is None:  # not JSON at all: the document was cut short
                self.skipped_chunks += 1
                self.fail(ProviderIncomplete(provider=self.provider), out)
                return
        if type(body) is not dict:
            self.skipped_chunks += 1
            body = {}
        choices = body.get("choices")
        if type(choices) is list:
            choices = [{**c, "delta": c.get("message")} for c in choices if type(c) is dict]
            body = {**body, "choices": choices}
        self._chunk(body, out)
        if not self.done:
            self._end(out)

    def _special(self, payload: str, event_type: str | None, out: list[StreamEvent]) -> bool:
        """`[DONE]`, or a non-JSON `event: error`; True when the stream ended."""
        text = payload.strip()
        if text == "[DONE]":
            self._end(out)
            return True
        if event_type == "error" and not text.startswith("{"):
            self.fail(self.stream_error(text or "error"), out)
            return True
        return False

    def _chunk(self, chunk: dict[str, Any], out: list[StreamEvent]) -> None:
        if self.response_id is None and (rid := chunk.get("id")) and type(rid) is str:
            self.response_id = rid
        if self.model is None and (model := chunk.get("model")) and type(model) is str:
            self.model = model
        error = chunk.get("error")
        if error:
            self.fail(self._error(error), out)
            return
        usage = chunk.get("usage") or _groq_usage(chunk)
        if usage:
            self.usage = _parse_usage(usage) or self.usage
        choices = chunk.get("choices")
        if not choices or type(choices) is not list:
            return
        choice = choices[0]
        if type(choice) is not dict or choice.get("index", 0) not in (0, None):
            return  # n > 1: only the first choice is the answer
        delta = choice.get("delta")
        if delta and type(delta) is dict:
            self._delta(delta, out)
        reason = choice.get("finish_reason")
        if reason and type(reason) is str:
            if reason == "error":
                message = "the provider ended the answer with finish_reason 'error'"
                self.fail(self.stream_error(message), out)
            else:
                self._finish_reason = reason

    def _delta(self, delta: dict[str, Any], out: list[StreamEvent]) -> None:
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and type(reasoning) is str:
            out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if content:
            if type(content) is str:
                out.append(TextDelta(content))
            elif type(content) is list:
                _content_blocks(content, out)
        # A refusal (structured outputs) is what the user gets to read instead.
        refusal = delta.get("refusal")
        if refusal and type(refusal) is str:
            out.append(TextDelta(refusal))
        tool_calls = delta.get("tool_calls")
        if tool_calls and type(tool_calls) is list:
            for call in tool_calls:
                if type(call) is dict:
                    self._tool_call(call, out)
        # The deprecated shape, only when there is no `tool_calls`: llama-cpp-python's
        # server sends each fragment of a call in both.
        function_call = delta.get("function_call")
        if function_call and type(function_call) is dict and not tool_calls:
            self._tool_call({"function": function_call}, out)

    def _tool_call(self, call: dict[str, Any], out: list[StreamEvent]) -> None:
        function = call.get("function")
        if type(function) is not dict:
            function = {}
        index = call.get("index")
        call_id = call.get("id")
        name = function.get("name")
        arguments = function.get("arguments")
        if arguments is not None and type(arguments) not in (str, dict):
            arguments = orjson.dumps(arguments).decode()  # a list or number: reported later
        out.extend(
            self.calls.feed(
                index if type(index) is int else None,
                call_id if type(call_id) is str else None,
                name if type(name) is str else None,
                arguments,
            )
        )

    def _end(self, out: list[StreamEvent]) -> None:
        raw = self._finish_reason
        reason: FinishReason = _FINISH_REASONS.get(raw, "other") if raw else "unknown"
        self.end(out, reason, raw, truncated=reason in ("length", "unknown"))

    def _error(self, error: Any) -> ProviderStreamError:
        """The error object of a chunk (or the chunk itself, when it is one)."""
        if type(error) is not dict:
            return self.stream_error(str(error))
        message = error.get("message") or orjson.dumps(error).decode()
        return self.stream_error(str(message), error.get("code") or error.get("type"))


def _content_blocks(blocks: list[Any], out: list[StreamEvent]) -> None:
    """Content sent as typed blocks (Mistral's reasoning models): text and thinking."""
    for block in blocks:
        if type(block) is not dict:
            continue
        kind = block.get("type")
        if kind == "text" and (text := block.get("text")) and type(text) is str:
            out.append(TextDelta(text))
        elif kind == "thinking":
            for inner in block.get("thinking") or ():
                if type(inner) is dict and (text := inner.get("text")) and type(text) is str:
                    out.append(ReasoningDelta(text))


def _groq_usage(chunk: dict[str, Any]) -> Any:
    x_groq = chunk.get("x_groq")
    return x_groq.get("usage") if type(x_groq) is dict else None


def _parse_usage(raw: Any) -> Usage | None:
    if type(raw) is not dict:
        return None
    output = raw.get("completion_tokens_details")
    prompt = raw.get("prompt_tokens_details")
    cached = prompt.get("cached_tokens") if type(prompt) is dict else None
    if not count(raw.get("prompt_tokens")) and not count(raw.get("completion_tokens")):
        # No prompt is 0 tokens: this counted nothing (llama-cpp-python's server sends
        # zeros with its function-calling streams). Reported as no usage: estimated.
        return None
    return Usage(
        input_tokens=count(raw.get("prompt_tokens")),
        output_tokens=count(raw.get("completion_tokens")),
        reasoning_tokens=count(output.get("reasoning_tokens") if type(output) is dict else 0),
        # DeepSeek reports cache hits under its own name.
        cached_input_tokens=count(cached or raw.get("prompt_cache_hit_tokens")),
        estimated=False,
    )


def request_body(request: ChatRequest) -> dict[str, Any]:
    """The Chat Completions JSON body for a request, streaming, with usage asked for:
    its fields, then `extra`, then what of `openai_extra` is not set yet."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [_message(m) for m in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.parameters,
                },
            }
            for t in request.tools
        ]
    optional = {
        "tool_choice": request.tool_choice,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": request.stop,
        "seed": request.seed,
        "response_format": request.response_format,
        "user": request.user,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    body.update(request.extra)
    for key, value in request.openai_extra.items():
        body.setdefault(key, value)  # never in place of a field set above
    stream_options = body.get("stream_options")
    body["stream"] = True
    body["stream_options"] = {
        **(stream_options if isinstance(stream_options, dict) else {}),
        "include_usage": True,
    }
    return body


def _message(message: Message) -> dict[str, Any]:
    """One message as Chat Completions takes it. Reasoning and thinking blocks are not
    sent back: DeepSeek rejects `reasoning_content` in the history, and no
    OpenAI-compatible server needs them. A tool's error has no flag here: its content
    says it."""
    if message.role == "tool":
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    # A call without text keeps `content: ""`: OpenAI takes null too, but
    # llama-cpp-python's server refuses anything but a string.
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "user" and message.images:
        images = [{"type": "image_url", "image_url": {"url": i.data_uri()}} for i in message.images]
        text = [{"type": "text", "text": message.content}] if message.content else []
        out["content"] = [*images, *text]
    if message.role == "assistant" and message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": _arguments(call)},
            }
            for call in message.tool_calls
        ]
    return out


def _arguments(call: ToolCall) -> str:
    """The exact text the model wrote when it was a JSON object; else what we parsed
    (`{}` for blank or "null" arguments, which some servers' templates cannot load)."""
    raw = call.raw_arguments
    if call.parse_error is None and raw.strip() not in ("", "null"):
        return raw
    return orjson.dumps(call.arguments).decode()


class OpenAIProvider(HTTPProvider):
    """A Chat Completions endpoint: `base_url` is the part before `/chat/completions`."""

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
    ) -> None:
        headers = {"accept": "text/event-stream", **(extra_headers or {})}
        if api_key:
            headers["authorization"] = f"Bearer {api_key}"
        url = base_url.rstrip("/") + "/chat/completions"
        super().__init__(name, url, headers, timeouts=timeouts, retry=retry, client=client)
        self._models_url = base_url.rstrip("/") + "/models"

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        return request_body(request)

    def _parser(self) -> OpenAIChunkParser:
        return OpenAIChunkParser(self.name)

    async def list_models(self) -> list[str]:
        """The model ids the endpoint's `GET /models` lists (OpenAI's list shape, which
        vLLM, Ollama, llama.cpp and the rest answer too); bound it with `asyncio.timeout`.

        Raises a `ProviderError` subclass, or ValueError for an answer that is no list.
        """
        body = await get_json(
            self.open(), self._models_url, headers=self._headers, provider=self.name
        )
        return model_ids(body)


def model_ids(body: Any) -> list[str]:
    """The ids of an OpenAI `{"object": "list", "data": [{"id": ...}, ...]}` answer, in
    its order, each once. Raises ValueError for any other shape."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise ValueError("an answer without a `data` list of models")
    ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    return list(dict.fromkeys(i for i in ids if i))
