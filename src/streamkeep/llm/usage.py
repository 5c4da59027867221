"""Usage for every answer: the provider's exact numbers, or an estimate flagged as one.

Some OpenAI-compatible servers (llama.cpp's, several proxies) never send usage in a
stream, even when asked. Rather than store "no usage", the registry passes each stream
through `with_usage`, which adds an estimate (`estimated=True`) before the end when the
provider reported none. The estimate is the common ~4 characters per token rule: good
enough for accounting dashboards, and marked so nobody mistakes it for a bill. Only what
is unknown is estimated: the counts a provider reported so far (`final=False`, e.g. the
embedded model's prompt, tokenised before it answers) are kept as they are.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator

from streamkeep.llm.events import (
    EventStream,
    Finish,
    ReasoningDelta,
    StreamError,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from streamkeep.llm.types import ChatRequest, Completion, Usage

CHARS_PER_TOKEN = 4


def estimate_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN) if chars > 0 else 0


def prompt_chars(request: ChatRequest) -> int:
    total = 0
    for message in request.messages:
        total += len(message.content) + len(message.reasoning)
        for call in message.tool_calls:
            total += len(call.name) + len(call.raw_arguments or "")
    for tool in request.tools:
        total += len(tool.name) + len(tool.description)
    return total


def estimate_usage(
    prompt: int, output: int, reasoning: int = 0, *, known: Usage | None = None
) -> Usage:
    """Usage from character counts (prompt, visible output, reasoning), flagged estimated;
    the input counts come from `known` (the provider's counts so far) when it has them."""
    reasoning_tokens = estimate_tokens(reasoning)
    exact_input = known is not None and known.input_tokens > 0
    return Usage(
        input_tokens=known.input_tokens if known and exact_input else estimate_tokens(prompt),
        output_tokens=estimate_tokens(output) + reasoning_tokens,
        reasoning_tokens=reasoning_tokens,
        cached_input_tokens=known.cached_input_tokens if known and exact_input else 0,
        estimated=True,
    )


def add_usage(a: Usage, b: Usage) -> Usage:
    """The usage of two model calls together (e.g. the steps of a tool loop)."""
    return Usage(
        input_tokens=a.input_tokens + b.input_tokens,
        output_tokens=a.output_tokens + b.output_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cached_input_tokens=a.cached_input_tokens + b.cached_input_tokens,
        estimated=a.estimated or b.estimated,
    )


def completion_chars(completion: Completion) -> tuple[int, int]:
    """(output, reasoning) characters of an answer so far, for `estimate_usage`."""
    output = len(completion.text) + sum(len(c.raw_arguments) for c in completion.tool_calls)
    return output, len(completion.reasoning)


async def with_usage(
    stream: EventStream, request: ChatRequest
) -> AsyncGenerator[StreamEvent, None]:
    """Pass `stream` through; if it ends without usage, report an estimate first."""
    reported = False
    known: Usage | None = None  # the provider's counts so far
    output_chars = 0
    reasoning_chars = 0
    try:
        async for event in stream:
            if isinstance(event, TextDelta):
                output_chars += len(event.text)
            elif isinstance(event, ToolCallDelta):
                output_chars += len(event.arguments_delta)
            elif isinstance(event, ReasoningDelta):
                reasoning_chars += len(event.text)
            elif isinstance(event, UsageReport):
                if event.final:
                    reported = True
                else:
                    known = event.usage
            elif isinstance(event, Finish | StreamError) and not reported:
                estimate = estimate_usage(
                    prompt_chars(request), output_chars, reasoning_chars, known=known
                )
                yield UsageReport(estimate)
            yield event
    finally:
        await stream.aclose()
