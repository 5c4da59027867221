"""What the fake upstream says: the `Script`, its `[[directives]]`, and the `Plan`.

`Plan` turns a `Script` and the request body into the exact pieces to send (the byte
formats live in `upstream_encoders.py`); the server in `upstream.py` only moves them
onto the socket and obeys `DROP` / `HANG`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any

import orjson

from tests.fakes.upstream_encoders import (
    DROP,
    END,
    HANG,
    RESET,
    AnthropicStream,
    Fault,
    OpenAIStream,
    Piece,
    anthropic_whole,
    openai_whole,
)

__all__ = [
    "DROP",
    "END",
    "HANG",
    "RESET",
    "Fault",
    "Piece",
    "Plan",
    "Script",
    "parse_directive",
    "split_words",
]

MODEL = "fake-model"
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    529: "Overloaded",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_LOREM = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua"
)
_THOUGHTS = "let me think about this step by step first"
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
_WORDS = re.compile(r"\s*\S+")
# [[...]]: quoted values are taken whole, so a "]]" in them (JSON of `calls`) is no end.
_DIRECTIVE = re.compile(r"""\[\[((?:'[^']*'|"(?:\\.|[^"\\])*"|[^'"\]]|\](?!\]))*)\]\]""", re.S)


@dataclass
class Script:
    """How the fake answers one request (see the module docstring for the rules)."""

    tokens: int = 8
    delay: float = 0.0
    text: str | None = None
    reasoning: int = 0
    # One call of this tool, arguments {"q": <the user's text>}, id call_fake<n>.
    tool: str | None = None
    # Calls made after `tool`'s, as (name, arguments as JSON text), ids call_<n>_<i>
    # (OpenAI, all in one response at indexes 0, 1, ...) or toolu_<n>_<i> (Anthropic,
    # one tool_use block each). In a directive: a JSON list of [name, arguments] pairs.
    calls: list[tuple[str, str]] | None = None
    # Characters per argument delta; 0: each call's arguments in about 4 pieces.
    args_chunk: int = 0
    # Anthropic: a redacted_thinking block (data "redacted-<n>") after the thinking.
    redacted: bool = False
    fail_after: int | None = None
    error_after: int | None = None
    status: int | None = None
    retry_after: float | None = None
    hang_before_first_byte: float = 0.0
    hang_after: int | None = None
    # After this many chunks the body ends, well-formed but with no closing events.
    cut_after: int | None = None
    # After this many chunks the connection is reset (a TCP RST).
    reset_after: int | None = None
    usage: bool = True
    # The OpenAI finish_reason to end with (Anthropic gets the matching stop_reason);
    # None: "tool_calls" after a tool call, else "stop".
    finish: str | None = None
    # Whether an OpenAI stream ends with `data: [DONE]`.
    done: bool = True
    # How a streamed body is delimited: "chunked", "length" (Content-Length) or
    # "close" (neither: the body ends when the connection closes).
    framing: str = "chunked"
    # Body pieces sent as they are; DROP or HANG among them act at that point.
    raw: list[bytes | Fault] | None = None


def parse_directive(text: str) -> Script | None:
    """The `Script` a `[[key=value ...]]` directive in `text` asks for, if any."""
    match = _DIRECTIVE.search(text)
    if match is None:
        return None
    kinds = {f.name: f.type for f in fields(Script)}
    values: dict[str, Any] = {}
    for item in shlex.split(match.group(1)):
        key, _, raw = item.partition("=")
        if key not in kinds or key == "raw":
            raise ValueError(f"unknown directive field {key!r}")
        values[key] = _coerce(str(kinds[key]), raw)
    return Script(**values)


def calls_directive(calls: list[tuple[str, dict[str, Any]]], **fields: Any) -> str:
    """A `[[calls=...]]` directive making these calls (name, arguments), with any other
    scalar `Script` fields. The JSON list is spaced (`[ [`, `] ]`): a directive ends at
    the first `]]`."""
    pairs = orjson.dumps([[name, orjson.dumps(args).decode()] for name, args in calls]).decode()
    pairs = pairs.replace("[[", "[ [").replace("]]", "] ]")
    extra = "".join(f" {key}={shlex.quote(str(value))}" for key, value in fields.items())
    return f"[[calls='{pairs}'{extra}]]"


def _coerce(kind: str, raw: str) -> Any:
    if raw.lower() in ("none", "null"):
        return None
    if kind.startswith("list"):  # `calls`: [[name, arguments], ...]
        pairs = orjson.loads(raw)
        if not isinstance(pairs, list) or not all(_is_pair(p) for p in pairs):
            raise ValueError(f"calls must be a JSON list of [name, arguments] pairs: {raw}")
        return [(name, arguments) for name, arguments in pairs]
    if kind.startswith("bool"):
        return raw.lower() in ("1", "true", "yes")
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    return raw


def _is_pair(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)


def strip_directive(text: str) -> str:
    return _DIRECTIVE.sub("", text).strip()


def _cycle(words: str, i: int) -> str:
    pool = words.split()
    return pool[i % len(pool)]


def lorem(tokens: int) -> str:
    """The text a script of `tokens` tokens (and no `text`) answers."""
    return " ".join(_cycle(_LOREM, i) for i in range(tokens))


def split_words(text: str) -> list[str]:
    """Word tokens that concatenate back to `text` (leading spaces kept, like BPE)."""
    return _WORDS.findall(text)


def _text_of(content: Any, results: bool = True) -> str:
    """The text in an OpenAI or Anthropic message content (string or list of blocks);
    with `results`, that of Anthropic's tool_result blocks too."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    out = []
    for block in content:
        if isinstance(block, dict):
            if block.get("type") == "text":
                out.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result" and results:
                out.append(_text_of(block.get("content")))
    return " ".join(out)


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the user's last message (tool results are not the user's)."""
    for message in reversed(_messages(body)):
        if message.get("role") == "user" and (text := _text_of(message.get("content"), False)):
            return text
    return ""


def tool_results(body: dict[str, Any]) -> list[str] | None:
    """The texts of the tool results the request ends with (OpenAI's `tool` messages,
    or an Anthropic user turn of tool_result blocks); None when it ends otherwise."""
    messages = _messages(body)
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") == "tool":
            results.insert(0, _text_of(message.get("content")))
            continue
        content = message.get("content")
        if not results and message.get("role") == "user" and isinstance(content, list):
            blocks = [b for b in content if isinstance(b, dict)]
            if blocks and all(b.get("type") == "tool_result" for b in blocks):
                results = [_text_of(b.get("content")) for b in blocks]
        break
    return results or None


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def prompt_words(body: dict[str, Any]) -> int:
    texts = [_text_of(m.get("content")) for m in _messages(body)]
    texts.append(_text_of(body.get("system")))
    return sum(len(t.split()) for t in texts)


def _echo(body: dict[str, Any]) -> Script:
    """The answer when nothing is scripted: the tool results the request ends with, or
    the user's words."""
    results = tool_results(body)
    if results is not None:
        return Script(text="Tool results: " + " | ".join(results))
    said = f"Hello! You said: {strip_directive(last_user_text(body))}"
    images = last_user_images(body)
    return Script(text=said + (f" [images: {' '.join(images)}]" if images else ""))


def last_user_images(body: dict[str, Any]) -> list[str]:
    """The last user message's images, each as `<media type>:<first 12 hex digits of
    the SHA-256 of its bytes>` (OpenAI image_url data URIs, Anthropic base64 blocks),
    or `url:<url>`: what the echo tells, so a test sees the bytes arrived whole."""
    for message in reversed(_messages(body)):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
        if blocks and all(b.get("type") == "tool_result" for b in blocks):
            return []
        return [d for b in blocks if (d := _image_digest(b)) is not None]
    return []


def _image_digest(block: dict[str, Any]) -> str | None:
    if block.get("type") == "image_url":
        url = str((block.get("image_url") or {}).get("url", ""))
        if not url.startswith("data:"):
            return f"url:{url}"
        head, _, data = url.partition(",")
        media_type = head[5:].split(";")[0]
    elif block.get("type") == "image":
        source = block.get("source") or {}
        if source.get("type") != "base64":
            return f"url:{source.get('url')}"
        media_type, data = str(source.get("media_type")), str(source.get("data"))
    else:
        return None
    digest = hashlib.sha256(base64.b64decode(data)).hexdigest()[:12]
    return f"{media_type}:{digest}"


def _pieces(text: str, size: int) -> list[str]:
    """`text` in pieces of `size` characters (0: about 4 pieces); "" is one piece."""
    step = size if size > 0 else max(1, len(text) // 4)
    return [text[i : i + step] for i in range(0, len(text), step)] or [""]


def models_body(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in models],
    }


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": str(status)}}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


@dataclass
class PlannedCall:
    """One tool call of an answer: its id, name and argument pieces, in order."""

    id: str
    name: str
    pieces: list[str]

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


@dataclass
class Plan:
    """Everything needed to answer one chat request."""

    script: Script
    anthropic: bool
    streaming: bool
    model: str
    number: int
    prompt_tokens: int
    reasoning: list[str]
    text: list[str]
    calls: list[PlannedCall]
    include_usage: bool

    @classmethod
    def build(
        cls, script: Script | None, body: dict[str, Any], anthropic: bool, number: int
    ) -> Plan:
        script = script or _echo(body)
        if script.text is not None:
            text = split_words(script.text)
        elif script.tool is None and not script.calls:
            text = split_words(lorem(script.tokens))
        else:
            text = []
        prefix = "toolu" if anthropic else "call"
        calls = [
            PlannedCall(f"{prefix}_{number}_{i}", name, _pieces(arguments, script.args_chunk))
            for i, (name, arguments) in enumerate(script.calls or ())
        ]
        if script.tool is not None:
            query = strip_directive(last_user_text(body)) or "query"
            encoded = orjson.dumps({"q": query}).decode()
            pieces = _pieces(encoded, script.args_chunk)
            calls.insert(0, PlannedCall(f"{prefix}_fake{number}", script.tool, pieces))
        wants_usage = anthropic or bool((body.get("stream_options") or {}).get("include_usage"))
        return cls(
            script=script,
            anthropic=anthropic,
            streaming=body.get("stream") is True,
            model=str(body.get("model") or MODEL),
            number=number,
            prompt_tokens=prompt_words(body),
            reasoning=split_words(" ".join(_cycle(_THOUGHTS, i) for i in range(script.reasoning))),
            text=text,
            calls=calls,
            include_usage=script.usage and wants_usage,
        )

    # -- shared ----------------------------------------------------------------

    @property
    def response_id(self) -> str:
        return f"{'msg' if self.anthropic else 'chatcmpl'}_fake{self.number}"

    @property
    def thinking(self) -> str:
        """The whole thinking text (what `signature` signs)."""
        return "".join(self.reasoning)

    @property
    def signature(self) -> str:
        """The signature of this answer's thinking block (Anthropic)."""
        return f"sig-{self.number}"

    @property
    def redaction(self) -> str | None:
        """The data of this answer's redacted_thinking block (Anthropic), if any."""
        return f"redacted-{self.number}" if self.anthropic and self.script.redacted else None

    @property
    def chunks(self) -> int:
        """The output chunks of the whole answer."""
        return sum(1 for _ in self._outputs())

    def error_body(self) -> dict[str, Any]:
        status = self.script.status or 500
        message = f"fake upstream error {status}"
        return anthropic_error(status, message) if self.anthropic else openai_error(status, message)

    def _outputs(self) -> Iterator[tuple[str, str, int]]:
        """(kind, piece, call index) for every output chunk, in order."""
        for word in self.reasoning:
            yield "reasoning", word, 0
        if self.redaction is not None:
            yield "redacted", self.redaction, 0
        for word in self.text:
            yield "text", word, 0
        for i, call in enumerate(self.calls):
            for piece in call.pieces:
                yield "tool", piece, i

    def _fault_at(self, sent: int) -> str | None:
        s = self.script
        if s.fail_after == sent:
            return "drop"
        if s.error_after == sent:
            return "error"
        if s.hang_after == sent:
            return "hang"
        if s.cut_after == sent:
            return "end"
        if s.reset_after == sent:
            return "reset"
        return None

    async def stream_pieces(self) -> AsyncIterator[Piece]:
        """The SSE body, piece by piece, with the script's pacing and faults."""
        if self.script.raw is not None:
            for i, raw in enumerate(self.script.raw):
                if i and self.script.delay:
                    await asyncio.sleep(self.script.delay)
                yield raw
            return
        encoder = AnthropicStream(self) if self.anthropic else OpenAIStream(self)
        if (fault := self._fault_at(0)) is not None and fault != "error":
            yield encoder.fault(fault)  # a fault "after 0 chunks" comes before any body byte
            return
        for piece in encoder.opening():
            yield piece
        sent = 0
        for kind, value, call in self._outputs():
            if (fault := self._fault_at(sent)) is not None:
                yield encoder.fault(fault)
                return
            if sent and self.script.delay:
                await asyncio.sleep(self.script.delay)
            for piece in encoder.output(kind, value, call):
                yield piece
            sent += 1
        if (fault := self._fault_at(sent)) is not None:
            yield encoder.fault(fault)
            return
        for piece in encoder.closing(sent):
            yield piece

    async def content_length(self) -> int:
        """A streamed body's Content-Length: its bytes up to an END fault, else those of
        the whole answer as if no fault came (so a DROP or RESET leaves the body short)."""
        script = replace(self.script, delay=0.0, fail_after=None, hang_after=None, reset_after=None)
        if script.raw is not None:
            script.raw = [p for p in script.raw if p not in (DROP, HANG, RESET)]
        total = 0
        async for piece in replace(self, script=script).stream_pieces():
            if piece is END:
                break
            if isinstance(piece, bytes):
                total += len(piece)
        return total

    @property
    def finish_reason(self) -> str:
        if self.script.finish is not None:
            return self.script.finish
        return "tool_calls" if self.calls else "stop"

    @property
    def stop_reason(self) -> str:
        """Anthropic's word for `finish_reason`."""
        return _STOP_REASONS.get(self.finish_reason, self.finish_reason)

    def whole_body(self) -> dict[str, Any]:
        return anthropic_whole(self) if self.anthropic else openai_whole(self)
