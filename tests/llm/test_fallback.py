"""Fallback aliases in the library: `ModelRegistry` resolves, lists and streams them,
each attempt traced as its own provider call. Two fake upstreams on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from streamkeep.config import ProviderConfig, Settings
from streamkeep.llm import (
    Accumulator,
    ChatRequest,
    Message,
    ProviderHTTPError,
    Routed,
    StreamEvent,
    TextDelta,
)
from streamkeep.llm.registry import ModelRegistry
from tests.fakes.upstream import FakeUpstream, Script, fake_upstream

__all__ = ["fake_upstream"]

FIRST, SECOND = "one/fake-model", "two/fake-model"


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def settings(first_url: str, second_url: str) -> Settings:
    def provider(url: str, kind: str = "openai") -> ProviderConfig:
        return ProviderConfig(kind=kind, base_url=url, api_key="x", models=["fake-model"])

    return Settings(
        enable_local_model=False,
        providers={
            "one": provider(first_url).model_copy(update={"max_retries": 0}),
            "two": provider(second_url),
            "claude": provider(second_url, "anthropic"),
        },
        aliases={"fast": [FIRST, SECOND], "mixed": [FIRST, "claude/fake-model"]},
    )


REQUEST = ChatRequest(messages=[Message("user", "hello there")])


async def test_each_attempt_is_its_own_span_and_only_the_answer_s_usage_counts(
    fake_upstream: FakeUpstream,
    second: FakeUpstream,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    tracer_provider, exporter = spans
    registry = ModelRegistry(
        settings(fake_upstream.base_url, second.base_url), tracer_provider=tracer_provider
    )
    fake_upstream.enqueue(Script(status=503))
    second.enqueue(Script(text="one two three"))
    try:
        events: list[StreamEvent] = [e async for e in registry.stream("fast", REQUEST)]
    finally:
        await registry.aclose()

    routed = events[0]
    assert isinstance(routed, Routed) and routed.model == SECOND
    ((model, error),) = [(s.model, s.error) for s in routed.skipped]
    assert model == FIRST and isinstance(error, ProviderHTTPError) and error.status == 503
    assert not any(isinstance(e, Routed) for e in events[1:])
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"
    acc = Accumulator()
    for event in events:
        acc.add(event)
    usage = acc.result().usage
    assert usage is not None and not usage.estimated  # the second's own count, not a guess
    assert usage.output_tokens == 3

    failed, answered = exporter.get_finished_spans()
    assert failed.status.status_code is StatusCode.ERROR
    assert (failed.attributes or {})["error.type"] == "503"
    assert answered.status.status_code is StatusCode.UNSET
    for span in (failed, answered):
        assert span.name == "chat fake-model"
    assert fake_upstream.port != second.port


def test_an_alias_is_listed_and_resolves_to_its_first_model() -> None:
    registry = ModelRegistry(settings("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"))
    assert registry.models()[-2:] == ["fast", "mixed"]
    provider, own_name = registry.resolve("fast")
    assert (provider.name, own_name) == ("one", "fake-model")
    assert registry.alias("fast") == [FIRST, SECOND] and registry.alias(FIRST) is None


async def test_openai_only_fields_are_traced_only_for_the_providers_sent_them(
    fake_upstream: FakeUpstream, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    tracer_provider, exporter = spans
    registry = ModelRegistry(
        settings(fake_upstream.base_url, fake_upstream.root_url), tracer_provider=tracer_provider
    )
    request = ChatRequest(messages=[Message("user", "hello there")], openai_extra={"top_k": 3})
    try:
        for model in (FIRST, "claude/fake-model"):
            async for _ in registry.stream(model, request):
                pass
    finally:
        await registry.aclose()
    openai_span, anthropic_span = exporter.get_finished_spans()
    assert (openai_span.attributes or {})["gen_ai.request.top_k"] == 3
    assert "gen_ai.request.top_k" not in (anthropic_span.attributes or {})
    assert fake_upstream.requests[0]["top_k"] == 3 and "top_k" not in fake_upstream.requests[1]
