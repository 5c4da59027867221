"""Plain data shared by every provider: the request, messages, usage, the result.

These are dataclasses rather than pydantic models on purpose: they are built once per
token on the hot path, and slotted dataclasses cost a fraction of a validated model.
Validation of untrusted input happens at the HTTP edge, not here.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]

# Normalised finish reasons (the Vercel AI SDK's names, which the stream protocol uses).
FinishReason = Literal[
    "stop", "length", "content-filter", "tool-calls", "error", "other", "unknown"
]


@dataclass(slots=True)
class ToolCall:
    """One complete tool call the model asked for."""

    id: str
    name: str
    arguments: dict[str, Any]
    # The argument text exactly as the provider sent it (kept for replay and audit).
    raw_arguments: str = ""
    # Set when the arguments could not be parsed as a JSON object (e.g. cut off by
    # finish_reason "length"); `arguments` is then {}.
    parse_error: str | None = None


@dataclass(slots=True)
class Message:
    """One message of the conversation sent to the model.

    `reasoning` is the thinking as text (for counting and display); `thinking` holds
    the blocks, in order, for a provider that takes them back: Anthropic gets the signed
    and the redacted ones, before the text and the calls. OpenAI-compatible servers get
    neither (some reject reasoning in the history).
    """

    role: Role
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None  # role == "tool": the call this answers
    name: str | None = None  # role == "tool": the tool's name (Anthropic wants none; fine)
    thinking: list[ReasoningPart] = field(default_factory=list)  # role == "assistant"
    is_error: bool = False  # role == "tool": the content is the call's error
    # role == "user": images, sent before the text (each provider in its own format).
    images: list[ImagePart] = field(default_factory=list)


@dataclass(slots=True)
class ImagePart:
    """An image of a user message: its bytes and type (checked by magic bytes when it
    came in). `ref` names the stored image when `data` is still to be read (see
    `streamkeep.generation.parts.load_images`)."""

    media_type: str
    data: bytes = b""
    ref: str | None = None

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode()}"


@dataclass(slots=True)
class ToolSpec:
    """A function the model may call (OpenAI / JSON-schema shape)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(slots=True)
class ChatRequest:
    """What to ask a provider.

    `model` is the provider's own model name (no prefix) for `provider.stream(request)`.
    `ModelRegistry.stream("PROVIDER/MODEL", request)` sets it from the name it is
    given, so a request for the registry leaves it out: `ChatRequest(messages=[...])`.
    """

    model: str = ""
    messages: list[Message] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: Any = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    # Provider-specific fields passed through verbatim into the request body
    # (e.g. {"stream_options": {...}} or {"reasoning_effort": "low"}).
    extra: dict[str, Any] = field(default_factory=dict)
    # Fields only an OpenAI-compatible provider is sent (the gateway passes a Chat
    # Completions body's fields streamkeep does not model: `logit_bias`, vLLM's
    # `top_k`, ...); other providers ignore them. They fill in what the body lacks and
    # never replace a field set otherwise (`model`, `messages`, `tools`, `stream`, ...).
    openai_extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cached_input_tokens: int = 0
    # True when the numbers were counted or guessed by us, not reported by the provider.
    estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "estimated": self.estimated,
        }


@dataclass(slots=True)
class TextPart:
    text: str
    type: Literal["text"] = "text"


@dataclass(slots=True)
class ReasoningPart:
    """One thinking block. Anthropic signs its blocks, and sends some redacted (opaque
    `data`, with no text); either must go back verbatim with the history."""

    text: str
    type: Literal["reasoning"] = "reasoning"
    signature: str | None = None
    redacted: str | None = None  # a redacted block's data; `text` is then ""


@dataclass(slots=True)
class ToolCallPart:
    call: ToolCall
    type: Literal["tool-call"] = "tool-call"


Part = TextPart | ReasoningPart | ToolCallPart


@dataclass(slots=True)
class Completion:
    """The final assistant message assembled from a stream (see `Accumulator`)."""

    parts: list[Part] = field(default_factory=list)
    usage: Usage | None = None
    # The provider's counts so far (a `final=False` report) while `usage` is unknown.
    partial_usage: Usage | None = None
    finish_reason: FinishReason | None = None
    response_id: str | None = None
    model: str | None = None
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def reasoning(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, ReasoningPart))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [p.call for p in self.parts if isinstance(p, ToolCallPart)]

    def as_message(self) -> Message:
        """The answer as the assistant turn of the next request's history: its text,
        its thinking blocks (signed ones go back to Anthropic) and its calls."""
        return Message(
            "assistant",
            self.text,
            reasoning=self.reasoning,
            tool_calls=self.tool_calls,
            thinking=[p for p in self.parts if isinstance(p, ReasoningPart)],
        )
