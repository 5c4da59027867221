"""What every provider is: something that streams typed events for a request."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.events import EventStream
from streamkeep.llm.types import ChatRequest, Completion


@runtime_checkable
class Provider(Protocol):
    """A connection to one LLM vendor (or the embedded model).

    `stream()` never raises for a provider fault: it yields a `StreamError` and ends.
    Cancelling the iteration (or `aclose()` on it) closes the upstream connection at once.
    """

    #: the provider's prefix in model names, e.g. "openai" in "openai/gpt-4o-mini"
    name: str

    def stream(self, request: ChatRequest) -> EventStream: ...

    async def aclose(self) -> None: ...


async def complete(provider: Provider, request: ChatRequest) -> Completion:
    """A non-streaming call: the same stream, accumulated."""
    acc = Accumulator()
    stream = provider.stream(request)
    try:
        async for event in stream:
            acc.add(event)
    finally:
        await stream.aclose()
    return acc.result()
