"""How an HTTP provider's stream ends, over real HTTP on loopback: only a provider that
said it finished (OpenAI: a finish reason; Anthropic: message_stop) finishes; a body
that ends or breaks before that, however it is framed, ends with an error at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvloop

from streamkeep.llm.accumulator import Accumulator
from streamkeep.llm.anthropic import AnthropicProvider
from streamkeep.llm.errors import ProviderConnectionError, ProviderIncomplete
from streamkeep.llm.events import Finish, StreamError, StreamEvent, UsageReport
from streamkeep.llm.http_provider import HTTPProvider
from streamkeep.llm.openai import OpenAIProvider
from streamkeep.llm.transport import RetryPolicy, Timeouts
from streamkeep.llm.types import ChatRequest, Message
from tests.fakes import upstream_wire as wire
from tests.fakes.upstream import FakeUpstream, Script

TRANSCRIPTS = Path(__file__).parent / "transcripts"
FRAMINGS = ["chunked", "length", "close"]
CUT_SHORT = "the provider closed the stream before finishing"
# An idle limit no test waits for: a failure must be seen when it happens.
NEVER = Timeouts(first_token=3600, idle=3600)
HELLO = ChatRequest(model="fake-model", messages=[Message("user", "Hello")])


def provider_for(up: FakeUpstream, kind: str) -> HTTPProvider:
    retry = RetryPolicy(max_retries=0)
    if kind == "anthropic":
        return AnthropicProvider("fake", up.root_url, "k", timeouts=NEVER, retry=retry)
    return OpenAIProvider("fake", up.base_url, "k", timeouts=NEVER, retry=retry)


@pytest.fixture(params=["openai", "anthropic"])
async def provider(
    request: pytest.FixtureRequest, fake_upstream: FakeUpstream
) -> AsyncIterator[HTTPProvider]:
    p = provider_for(fake_upstream, request.param)
    yield p
    await p.aclose()


async def collect(provider: HTTPProvider) -> list[StreamEvent]:
    async with asyncio.timeout(30):  # a guard against waiting for the idle limit
        return [event async for event in provider.stream(HELLO)]


def text(events: list[StreamEvent]) -> str:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result().text


def failure(events: list[StreamEvent]) -> StreamError:
    last = events[-1]
    assert isinstance(last, StreamError), last
    assert not any(isinstance(e, Finish) for e in events)
    return last


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_body_ending_mid_answer_is_an_error_with_the_partial_kept(
    fake_upstream: FakeUpstream, provider: HTTPProvider, framing: str
) -> None:
    # A proxy that gave up: the body ends well-formed (last chunk, full length, or
    # the close) after three words, with no finish reason, message_stop or [DONE].
    fake_upstream.enqueue(Script(tokens=6, cut_after=3, framing=framing))
    events = await collect(provider)
    error = failure(events).error
    assert isinstance(error, ProviderIncomplete) and error.message == CUT_SHORT
    assert text(events) == "lorem ipsum dolor"


@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("fault", ["reset_after", "fail_after"])
async def test_a_connection_reset_or_closed_mid_answer_is_an_error_at_once(
    fake_upstream: FakeUpstream, provider: HTTPProvider, framing: str, fault: str
) -> None:
    fake_upstream.enqueue(Script(tokens=6, framing=framing, **{fault: 3}))  # type: ignore[arg-type]
    events = await collect(provider)
    error = failure(events).error
    # Without a length the close (or reset) is the body's end: it is cut short.
    expected = ProviderIncomplete if framing == "close" else ProviderConnectionError
    assert type(error) is expected
    assert text(events) == "lorem ipsum dolor"


def test_a_reset_is_an_error_at_once_under_uvloop() -> None:
    # The server runs under uvloop, whose transports report a reset their own way.
    async def main() -> list[tuple[str, list[StreamEvent]]]:
        out = []
        async with FakeUpstream() as up:
            for kind in ("openai", "anthropic"):
                p = provider_for(up, kind)
                for framing in FRAMINGS:
                    up.enqueue(Script(tokens=6, reset_after=3, framing=framing))
                    out.append((framing, await collect(p)))
                await p.aclose()
        return out

    for framing, events in uvloop.run(main()):
        assert isinstance(failure(events).error, ProviderIncomplete | ProviderConnectionError)
        assert text(events) == "lorem ipsum dolor", framing


@pytest.mark.parametrize("framing", FRAMINGS)
async def test_a_finish_reason_without_done_is_finished(
    fake_upstream: FakeUpstream, framing: str
) -> None:
    provider = provider_for(fake_upstream, "openai")
    fake_upstream.enqueue(Script(tokens=3, done=False, framing=framing))
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"
    assert isinstance(events[-2], UsageReport)
    assert text(events) == "lorem ipsum dolor"


async def test_a_connection_reset_after_the_finish_reason_loses_nothing(
    fake_upstream: FakeUpstream,
) -> None:
    provider = provider_for(fake_upstream, "openai")
    data = (TRANSCRIPTS / "openai_gpt4o_text.sse").read_bytes()
    usage_chunk = data.rindex(b"data: ", 0, data.index(b"data: [DONE]"))
    # The finish reason came; the usage chunk and [DONE] were lost to a reset.
    fake_upstream.enqueue(Script(raw=[data[:usage_chunk], wire.RESET]))  # type: ignore[list-item]
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()
    assert isinstance(events[-1], Finish) and events[-1].reason == "stop"


async def test_an_anthropic_body_cut_after_its_stop_reason_but_before_message_stop(
    fake_upstream: FakeUpstream,
) -> None:
    provider = provider_for(fake_upstream, "anthropic")
    data = (TRANSCRIPTS / "anthropic_text.sse").read_bytes()
    fake_upstream.enqueue(Script(raw=[data[: data.index(b"event: message_stop")]]))
    try:
        events = await collect(provider)
    finally:
        await provider.aclose()
    assert isinstance(failure(events).error, ProviderIncomplete)
    assert text(events)
