"""Every answer has usage: the provider's exact numbers, or an estimate marked as one."""

from __future__ import annotations

from streamkeep.config import ProviderConfig, Settings
from streamkeep.llm import Accumulator, ChatRequest, Message, UsageReport
from streamkeep.llm.registry import ModelRegistry
from streamkeep.llm.usage import estimate_tokens
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
