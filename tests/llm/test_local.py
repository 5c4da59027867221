"""The embedded SmolLM2 model, run for real on the CPU.

Greedy decoding (temperature 0) makes answers deterministic, so every stream is
compared with llama-cpp-python's own non-streaming `create_chat_completion` on the same
file: same text, same token counts, same finish reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streamkeep.llm import (
    Accumulator,
    ChatRequest,
    Completion,
    ConfigurationError,
    Finish,
    Message,
    StreamError,
    StreamEvent,
    TextDelta,
)
from streamkeep.llm.events import UsageReport
from streamkeep.llm.local import LocalProvider, template_messages
from streamkeep.llm.types import ToolCall, Usage

pytestmark = pytest.mark.slow

SEED = 7


def ask(prompt: str, **params: Any) -> ChatRequest:
    return ChatRequest(
        model="smollm2",
        messages=[Message("user", prompt)],
        temperature=0,
        seed=SEED,
        **params,
    )


def reference(llama: Any, request: ChatRequest) -> dict[str, Any]:
    """llama-cpp-python's own non-streaming answer to the same request."""
    answer: dict[str, Any] = llama.create_chat_completion(
        [{"role": m.role, "content": m.content} for m in request.messages],
        temperature=0,
        seed=SEED,
        max_tokens=request.max_tokens,
        stop=request.stop or [],
    )
    return answer


async def collect(provider: LocalProvider, request: ChatRequest) -> list[StreamEvent]:
    return [event async for event in provider.stream(request)]


def completion(events: list[StreamEvent]) -> Completion:
    acc = Accumulator()
    for event in events:
        acc.add(event)
    return acc.result()


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "reason"),
    [
        ("Name three colors.", 200, "stop"),
        # Greedy answer: "L'Étoile, la Cité, ...": multi-byte characters split across tokens.
        ("What is the capital of France?", 40, "length"),
    ],
)
async def test_streams_the_models_answer_in_many_deltas_with_exact_usage(
    local_provider: LocalProvider,
    reference_llama: Any,
    prompt: str,
    max_tokens: int,
    reason: str,
) -> None:
    request = ask(prompt, max_tokens=max_tokens)
    events = await collect(local_provider, request)
    expected = reference(reference_llama, request)

    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) >= 5
    done = completion(events)
    assert done.text == expected["choices"][0]["message"]["content"]
    assert done.finish_reason == reason == expected["choices"][0]["finish_reason"]
    assert done.usage is not None and not done.usage.estimated
    assert done.usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert done.usage.output_tokens == expected["usage"]["completion_tokens"]
    assert done.model == "smollm2"
    assert done.response_id is not None and done.response_id.startswith("local-")
    assert isinstance(events[-1], Finish) and isinstance(events[-2], UsageReport)


async def test_the_prompts_exact_count_comes_before_the_answer(
    local_provider: LocalProvider,
) -> None:
    # So that an answer stopped mid-way still has an exact input count.
    events = await collect(local_provider, ask("Say hello.", max_tokens=3))
    first, final = events[0], events[-2]
    assert isinstance(first, UsageReport) and not first.final
    assert isinstance(final, UsageReport) and final.final
    assert first.usage == Usage(input_tokens=final.usage.input_tokens)
    assert final.usage.input_tokens > 0
    assert completion(events).usage == final.usage


async def test_a_system_message_is_part_of_the_counted_prompt(
    local_provider: LocalProvider, reference_llama: Any
) -> None:
    request = ask("Say hello.", max_tokens=8)
    request.messages.insert(0, Message("system", "You answer in French, very briefly."))
    done = completion(await collect(local_provider, request))
    expected = reference(reference_llama, request)
    assert done.usage is not None
    assert done.usage.input_tokens == expected["usage"]["prompt_tokens"]
    assert done.text == expected["choices"][0]["message"]["content"]


async def test_max_tokens_ends_with_finish_length(local_provider: LocalProvider) -> None:
    done = completion(await collect(local_provider, ask("Write a story.", max_tokens=5)))
    assert done.finish_reason == "length"
    assert done.usage is not None and done.usage.output_tokens == 5
    assert done.text


async def test_a_stop_string_ends_the_answer_before_it(
    local_provider: LocalProvider, reference_llama: Any
) -> None:
    # Greedy answer: "1. Red\n2. Blue\n3. Green". The stop string spans three tokens
    # ("2", ".", " Blue"), so the first two must be held back until it is known.
    request = ask("Name three colors.", max_tokens=200, stop=["2. B"])
    done = completion(await collect(local_provider, request))
    expected = reference(reference_llama, request)
    assert done.text == expected["choices"][0]["message"]["content"]
    assert done.text == "1. Red\n"
    assert done.finish_reason == "stop"
    assert done.usage is not None
    assert done.usage.output_tokens == expected["usage"]["completion_tokens"]


async def test_cancelling_mid_stream_stops_generation_and_frees_the_model(
    local_provider: LocalProvider,
) -> None:
    before = local_provider.tokens_generated
    # Uncancelled, this greedy answer runs the full 400 tokens.
    stream = local_provider.stream(ask("Write a long story about a dragon.", max_tokens=400))
    seen = 0
    async for event in stream:
        seen += isinstance(event, TextDelta)
        if seen == 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]

    # Queued behind the cancelled one on the single worker, so when it is done,
    # the cancelled generation has certainly ended.
    after = completion(await collect(local_provider, ask("Say hello.", max_tokens=10)))
    assert after.finish_reason in ("stop", "length") and after.text
    assert after.usage is not None
    cancelled_tokens = local_provider.tokens_generated - before - after.usage.output_tokens
    assert 3 <= cancelled_tokens < 60


async def test_cancelling_the_consuming_task_stops_generation(
    local_provider: LocalProvider,
) -> None:
    first_delta = asyncio.Event()
    before = local_provider.tokens_generated

    async def consume() -> None:
        async for event in local_provider.stream(
            ask("Write a long story about a dragon.", max_tokens=400)
        ):
            if isinstance(event, TextDelta):
                first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = completion(await collect(local_provider, ask("Say hello.", max_tokens=10)))
    assert after.usage is not None
    assert local_provider.tokens_generated - before - after.usage.output_tokens < 60


async def test_two_concurrent_requests_both_complete_unmixed(
    local_provider: LocalProvider, reference_llama: Any
) -> None:
    colors = ask("Name three colors.", max_tokens=60)
    hello = ask("Say hello.", max_tokens=60)
    first, second = await asyncio.gather(
        collect(local_provider, colors), collect(local_provider, hello)
    )
    for events, request in ((first, colors), (second, hello)):
        done = completion(events)
        assert done.text == reference(reference_llama, request)["choices"][0]["message"]["content"]
        assert done.finish_reason == "stop"
    assert completion(first).response_id != completion(second).response_id


async def test_the_event_loop_keeps_running_while_the_model_generates(
    local_provider: LocalProvider,
) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticking = asyncio.create_task(ticker())
    try:
        events = await collect(local_provider, ask("Write a story.", max_tokens=30))
    finally:
        ticking.cancel()
    # Blocking in the loop would give the ticker at most one turn per event.
    assert ticks > 3 * len(events)
    assert isinstance(events[-1], Finish)


async def test_a_missing_model_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no model file"):
        LocalProvider(model_path=tmp_path / "absent.gguf")


async def test_a_broken_model_file_is_reported_as_a_stream_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")
    provider = LocalProvider(model_path=broken)
    try:
        events = await collect(provider, ask("Hi"))
    finally:
        await provider.aclose()
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert "local model failed" in events[0].error.message
    assert events[0].model == "broken"


async def test_a_closed_provider_loads_again_on_the_next_request(smollm2_path: Path) -> None:
    provider = LocalProvider(model_path=smollm2_path)
    try:
        first = completion(await collect(provider, ask("Say hello.", max_tokens=3)))
        await provider.aclose()
        again = completion(await collect(provider, ask("Say hello.", max_tokens=3)))
    finally:
        await provider.aclose()
    assert first.text == again.text and again.finish_reason == "length"


async def test_closing_the_provider_ends_a_live_stream_with_an_error(smollm2_path: Path) -> None:
    provider = LocalProvider(model_path=smollm2_path)
    stream = provider.stream(ask("Write a long story about a dragon.", max_tokens=400))
    try:
        assert isinstance(await anext(stream), UsageReport)  # the prompt's count
        assert isinstance(await anext(stream), TextDelta)
        await provider.aclose()
        rest = [event async for event in stream]
    finally:
        await provider.aclose()
    assert isinstance(rest[-1], StreamError)
    assert "closed" in rest[-1].error.message
    assert not [e for e in rest if isinstance(e, Finish)]


WEATHER = ToolCall("c1", "get_weather", {"city": "Paris"}, raw_arguments='{"city": "Paris"}')
TOOL_HISTORY = [
    Message("system", "Be brief."),
    Message("user", "Weather in Paris?"),
    Message("assistant", "", reasoning="call it", tool_calls=[WEATHER]),
    Message("tool", "18C", tool_call_id="c1", name="get_weather"),
    Message("tool", "no station", tool_call_id="c2", is_error=True),
    Message("user", "Thanks. Tomorrow?"),
]


def test_a_tool_history_is_told_as_plain_alternating_turns() -> None:
    assert template_messages(TOOL_HISTORY) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": '[called get_weather({"city": "Paris"})]'},
        {
            "role": "user",
            "content": "[get_weather result] 18C\n\n[tool error] no station\n\nThanks. Tomorrow?",
        },
    ]


async def test_a_history_with_tool_calls_and_results_is_answered(
    local_provider: LocalProvider,
) -> None:
    request = ChatRequest(
        model="smollm2", messages=TOOL_HISTORY, max_tokens=8, temperature=0, seed=SEED
    )
    events = await collect(local_provider, request)
    assert isinstance(events[-1], Finish)
    assert completion(events).text
