"""The typed events every provider's `stream()` yields.

A provider adapter translates its wire format into these and nothing else; everything
downstream (the accumulator, the chat server's UI stream, the OpenAI gateway, the
terminal) consumes only these. Slotted dataclasses keep the per-token cost low.

Ordering guarantees a consumer may rely on:
- `ToolCallStart` for a call comes before any `ToolCallDelta` for it, and
  `ToolCallComplete` after them; `call_id` is stable and unique within the response.
- `UsageReport` with the response's totals (`final=True`) comes at most once, before
  the end: the provider's numbers, however early the vendor sent them. Through
  `ModelRegistry.stream` every stream that reaches its end has one: an estimate
  flagged `estimated` when the provider sent none (see `streamkeep.llm.usage`).
- `UsageReport` with `final=False` holds the counts known so far, not the totals: the
  embedded model's prompt, counted before it answers, or Anthropic's prompt count before
  a failure. It may come more than once (a later one replaces an earlier one) so that
  an answer stopped or failed mid-way still has an exact input count. Consumers
  wanting the totals skip these.
- `ReasoningSignature` comes at the end of its thinking block, after the block's
  `ReasoningDelta`s (none, for a block with no text); the next `ReasoningDelta` begins
  another block. `RedactedReasoning` is a whole block in itself.
- A stream ends with exactly one of `Finish` or `StreamError`, and nothing after it.
- `Routed` comes only from a fallback alias (`streamkeep.llm.fallback`), once, before
  the stream's first other event: which of its models answers, and why those tried
  before it were skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from streamkeep.llm.errors import LLMError
from streamkeep.llm.types import FinishReason, ToolCall, Usage


@dataclass(slots=True, frozen=True)
class TextDelta:
    text: str


@dataclass(slots=True, frozen=True)
class ReasoningDelta:
    text: str


@dataclass(slots=True, frozen=True)
class ReasoningSignature:
    """The vendor's signature of the thinking block that just ended (Anthropic's
    signature_delta); it must go back with the block's text, unchanged."""

    signature: str


@dataclass(slots=True, frozen=True)
class RedactedReasoning:
    """A thinking block the vendor encrypted (Anthropic's redacted_thinking): nothing to
    show, but `data` must go back verbatim with the history."""

    data: str


@dataclass(slots=True, frozen=True)
class ToolCallStart:
    call_id: str
    name: str


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    call_id: str
    arguments_delta: str


@dataclass(slots=True, frozen=True)
class ToolCallComplete:
    call: ToolCall


@dataclass(slots=True, frozen=True)
class UsageReport:
    usage: Usage
    # False: the numbers so far (the prompt's), not the response's totals.
    final: bool = True


@dataclass(slots=True, frozen=True)
class Finish:
    reason: FinishReason
    response_id: str | None = None
    model: str | None = None
    # The provider's own word for the reason ("end_turn", "tool_calls", ...).
    raw_reason: str | None = None


@dataclass(slots=True, frozen=True)
class StreamError:
    """The provider failed; whatever came before this is the partial answer."""

    error: LLMError
    response_id: str | None = None
    model: str | None = None


@dataclass(slots=True, frozen=True)
class Skipped:
    """A model of a fallback alias that failed before its first content."""

    model: str  # "provider/model"
    error: LLMError


@dataclass(slots=True, frozen=True)
class Routed:
    """The model of a fallback alias whose stream follows (its answer, or, when every
    model failed, the last one's failure), and the models skipped before it."""

    model: str  # "provider/model"
    skipped: tuple[Skipped, ...] = ()


StreamEvent = (
    TextDelta
    | ReasoningDelta
    | ReasoningSignature
    | RedactedReasoning
    | ToolCallStart
    | ToolCallDelta
    | ToolCallComplete
    | UsageReport
    | Finish
    | StreamError
    | Routed
)


class EventStream(Protocol):
    """What `Provider.stream()` returns: the events, and `aclose()` to stop early.

    `aclose()` ends the stream and closes the upstream connection at once; a consumer
    that stops before the end calls it (leaving an `async for` early does not). Every
    async generator of events is one. Model: openai-python's `AsyncStream.close()`.
    """

    def __aiter__(self) -> AsyncIterator[StreamEvent]: ...

    async def __anext__(self) -> StreamEvent: ...

    async def aclose(self) -> None: ...
