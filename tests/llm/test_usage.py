"""Every answer has usage: the provider's exact numbers, or an estimate marked as one."""

from __future__ import annotations

from collections.abc import AsyncIterator

from streamkeep.config import ProviderConfig, Settings
from streamkeep.llm import (
    Accumulator,
    ChatRequest,
    Message,
    ProviderIncomplete,
    StreamError,
    StreamEvent,
    TextDelta,
    Usage,
    UsageReport,
)
from streamkeep.llm.registry import ModelRegistry
from streamkeep.llm.usage import estimate_tokens, with_usage
from tests.fakes.upstream import FakeUpstream, Script


def _registry(up: FakeUpstream) -> ModelRegistry:
    provider = ProviderConfig(kind="openai", base_url=up.base_url, models=["fake-model"])
    return ModelRegistry(Settings(providers={"fake": provider}, enable_local_model=False))


async def _run(registry: ModelRegistry, text: str) -> tuple[Accumulator, int]:
    acc = Accumulator()
    reports = 0
    request = ChatRequest(model="", messages=[Message("user", text)])
    async for event in registry.stream("fake/fake-model", request):
        reports += isinstance(event, UsageReport)
        acc.add(event)
    await registry.aclose()
    return acc, reports


async def test_the_providers_usage_is_passed_through_unchanged(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script(text="one two three"))
    acc, reports = await _run(_registry(fake_upstream), "count these four words")
    usage = acc.result().usage
    assert reports == 1
    assert usage is not None and not usage.estimated
    assert (usage.input_tokens, usage.output_tokens) == (4, 3)


async def test_a_stream_without_usage_gets_an_estimate_flagged_as_such(
    fake_upstream: FakeUpstream,
) -> None:
    fake_upstream.enqueue(Script(text="a reply of some length here", usage=False))
    prompt = "x" * 40
    acc, reports = await _run(_registry(fake_upstream), prompt)
    result = acc.result()
    assert reports == 1
    assert result.finish_reason == "stop"
    assert result.usage is not None and result.usage.estimated
    assert result.usage.input_tokens == estimate_tokens(len(prompt))
    assert result.usage.output_tokens == estimate_tokens(len(result.text))


async def test_a_failed_stream_still_gets_estimated_usage(fake_upstream: FakeUpstream) -> None:
    fake_upstream.enqueue(Script(tokens=6, fail_after=3, usage=False))
    acc, _ = await _run(_registry(fake_upstream), "hello")
    result = acc.result()
    assert result.finish_reason == "error"
    assert result.usage is not None and result.usage.estimated
    assert result.usage.output_tokens == estimate_tokens(len(result.text)) > 0


async def _events(*events: StreamEvent) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


async def test_counts_a_provider_reported_so_far_are_kept_and_only_the_rest_estimated() -> None:
    # The embedded model reports the prompt's exact count before it answers; a stream
    # that then fails (or is stopped) keeps that count, and only the output is a guess.
    prompt = "x" * 400  # 100 tokens by the character rule
    request = ChatRequest(model="m", messages=[Message("user", prompt)])
    so_far = UsageReport(Usage(input_tokens=37, cached_input_tokens=5), final=False)
    events = [
        e
        async for e in with_usage(
            _events(so_far, TextDelta("abcdefgh"), StreamError(ProviderIncomplete())), request
        )
    ]
    acc = Accumulator()
    for event in events:
        acc.add(event)
    result = acc.result()
    assert result.usage == Usage(
        input_tokens=37, output_tokens=estimate_tokens(8), cached_input_tokens=5, estimated=True
    )
    assert result.partial_usage == so_far.usage
    assert [type(e) for e in events] == [UsageReport, TextDelta, UsageReport, StreamError]


def test_a_report_of_the_counts_so_far_is_not_the_answers_usage() -> None:
    acc = Accumulator()
    acc.add(UsageReport(Usage(input_tokens=12), final=False))
    assert acc.result().usage is None
    acc.add(UsageReport(Usage(input_tokens=12, output_tokens=3)))
    assert acc.result().usage == Usage(input_tokens=12, output_tokens=3)
