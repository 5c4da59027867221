"""OpenAIProvider against a real OpenAI-compatible server: llama-cpp-python's own.

The server runs the same SmolLM2 file as the embedded model, in a subprocess. With
temperature 0 and a seed its answers are deterministic, so the streamed answer is
checked against the server's own non-streaming answer to the same request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from streamkeep.llm import (
    Accumulator,
    ChatRequest,
    Completion,
    Message,
    StreamError,
    StreamEvent,
    TextDelta,
)
from streamkeep.llm.openai import OpenAIProvider
from streamkeep.llm.usage import estimate_usage, prompt_chars, with_usage
from tests.llm.llama_server import llama_server as running_llama_server

pytestmark = pytest.mark.slow

SEED = 7


@pytest.fixture(scope="session")
def llama_server(smollm2_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m llama_cpp.server` on a free port; yields its base URL (…/v1)."""
    with running_llama_server(smollm2_path, tmp_path_factory.mktemp("llama-server")) as url:
        yield url


@pytest_asyncio.fixture
async def provider(llama_server: str) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider("llamacpp", llama_server)
    yield provider
    await provider.aclose()


def ask(prompt: str, max_tokens: int) -> ChatRequest:
    return ChatRequest(
        model="smollm2",
        messages=[Message("user", prompt)],
        max_tokens=max_tokens,
        temperature=0,
        seed=SEED,
    )


async def stream_all(provider: OpenAIProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


def completion(events: list[StreamEvent]) -> Completion:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result()


async def non_streaming(base_url: str, request: ChatRequest) -> dict[str, Any]:
    """The server's own answer without streaming: its usage numbers are its count."""
    body = {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "seed": request.seed,
    }
    async with httpx.AsyncClient(timeout=60) as client:
        response = await client.post(f"{base_url}/chat/completions", json=body)
    response.raise_for_status()
    answer: dict[str, Any] = response.json()
    return answer


async def test_streams_the_same_answer_as_the_server_gives_whole(
    provider: OpenAIProvider, llama_server: str
) -> None:
    request = ask("Name three colors.", max_tokens=100)
    # Through `with_usage`, as the registry streams every provider's answer.
    events = [event async for event in with_usage(provider.stream(request), request)]
    whole = await non_streaming(llama_server, request)

    assert not [e for e in events if isinstance(e, StreamError)]
    assert len([e for e in events if isinstance(e, TextDelta)]) >= 5
    done = completion(events)
    assert done.text == whole["choices"][0]["message"]["content"]
    assert done.finish_reason == "stop" == whole["choices"][0]["finish_reason"]
    assert done.response_id and done.response_id.startswith("chatcmpl-")
    # llama-cpp-python's server sends no usage in a stream, even when asked with
    # stream_options.include_usage: the answer carries the estimate, flagged as one.
    # (Should the server start sending its own, compare with `whole["usage"]` here.)
    assert done.usage == estimate_usage(prompt_chars(request), len(done.text))


async def test_max_tokens_gives_finish_length(provider: OpenAIProvider, llama_server: str) -> None:
    request = ask("Write a long story about a dragon.", max_tokens=5)
    done = completion(await stream_all(provider, request))
    whole = await non_streaming(llama_server, request)
    assert done.finish_reason == "length" == whole["choices"][0]["finish_reason"]
    assert done.text == whole["choices"][0]["message"]["content"]
    assert whole["usage"]["completion_tokens"] == 5


async def test_cancelling_the_stream_leaves_the_server_usable(
    provider: OpenAIProvider,
) -> None:
    stream = provider.stream(ask("Write a long story about a dragon.", max_tokens=300))
    async for event in stream:
        if isinstance(event, TextDelta):
            break  # mid-answer: 300 tokens are far from done
    else:
        pytest.fail("the stream ended before its first word: nothing was cancelled")
    await stream.aclose()  # type: ignore[attr-defined]
    done = completion(await stream_all(provider, ask("Say hello.", max_tokens=20)))
    assert done.text and done.finish_reason in ("stop", "length")
