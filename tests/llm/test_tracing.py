"""GenAI tracing of real provider streams against the fake upstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from streamkeep.config import ProviderConfig, Settings
from streamkeep.llm.anthropic import AnthropicProvider
from streamkeep.llm.events import StreamEvent, TextDelta
from streamkeep.llm.openai import OpenAIProvider
from streamkeep.llm.registry import ModelRegistry
from streamkeep.llm.tracing import traced_stream
from streamkeep.llm.transport import RetryPolicy, Timeouts
from streamkeep.llm.types import ChatRequest, Message
from tests.fakes.upstream import FakeUpstream, Script


@dataclass
class Telemetry:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def only_span(self) -> ReadableSpan:
        spans = self.spans.get_finished_spans()
        assert len(spans) == 1
        return spans[0]

    def points(self, name: str) -> list[HistogramDataPoint]:
        data = self.metrics.get_metrics_data()
        assert data is not None
        found: list[HistogramDataPoint] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name and isinstance(metric.data, Histogram):
                        found += metric.data.data_points
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Telemetry(spans, reader, tracer_provider, meter_provider)
    meter_provider.shutdown()
    tracer_provider.shutdown()


@pytest.fixture
async def provider(fake_upstream: FakeUpstream) -> AsyncIterator[OpenAIProvider]:
    async with aiohttp.ClientSession() as session:
        p = OpenAIProvider(
            "openai",
            fake_upstream.base_url,
            "key",
            timeouts=Timeouts(first_token=5, idle=5),
            retry=RetryPolicy(max_retries=0),
            client=session,
        )
        yield p
        await p.aclose()


REQUEST = ChatRequest(
    model="fake-model",
    messages=[Message("system", "Be brief."), Message("user", "hello there")],
    max_tokens=50,
    temperature=0.5,
    top_p=0.9,
    stop=["END"],
)


def traced(
    provider: OpenAIProvider, telemetry: Telemetry, **kwargs: Any
) -> AsyncIterator[StreamEvent]:
    return traced_stream(
        provider.stream(REQUEST),
        provider="openai",
        request=REQUEST,
        server_address="127.0.0.1",
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        **kwargs,
    )


async def test_a_completed_stream_is_one_client_span_with_genai_attributes(
    fake_upstream: FakeUpstream, provider: OpenAIProvider, telemetry: Telemetry
) -> None:
    fake_upstream.enqueue(Script(text="one two three"))
    events = [e async for e in traced(provider, telemetry)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"

    span = telemetry.only_span()
    assert span.name == "chat fake-model"
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "fake-model"
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["gen_ai.request.max_tokens"] == 50
    assert attrs["gen_ai.request.temperature"] == 0.5
    assert attrs["gen_ai.request.top_p"] == 0.9
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert attrs["gen_ai.response.model"] == "fake-model"
    assert attrs["gen_ai.response.id"] == "chatcmpl_fake1"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    # The fake's exact counts: 4 words in the messages, 3 content chunks.
    assert attrs["gen_ai.usage.input_tokens"] == 4
    assert attrs["gen_ai.usage.output_tokens"] == 3
    ttfc = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttfc, float) and ttfc > 0
    assert "gen_ai.input.messages" not in attrs
    assert "gen_ai.output.messages" not in attrs


async def test_metrics_record_duration_tokens_and_first_chunk(
    fake_upstream: FakeUpstream, provider: OpenAIProvider, telemetry: Telemetry
) -> None:
    fake_upstream.enqueue(Script(text="one two three"))
    _ = [e async for e in traced(provider, telemetry)]

    tokens = {
        p.attributes["gen_ai.token.type"]: p
        for p in telemetry.points("gen_ai.client.token.usage")
        if p.attributes
    }
    assert tokens["input"].sum == 4 and tokens["input"].count == 1
    assert tokens["output"].sum == 3
    assert tokens["output"].attributes is not None
    assert tokens["output"].attributes["gen_ai.provider.name"] == "openai"
    assert tokens["output"].attributes["gen_ai.response.model"] == "fake-model"
    [duration] = telemetry.points("gen_ai.client.operation.duration")
    assert duration.count == 1 and duration.sum > 0
    assert duration.attributes is not None and "error.type" not in duration.attributes
    [first] = telemetry.points("gen_ai.client.operation.time_to_first_chunk")
    assert first.count == 1


async def test_content_is_captured_only_when_asked(
    fake_upstream: FakeUpstream, provider: OpenAIProvider, telemetry: Telemetry
) -> None:
    fake_upstream.enqueue(Script(text="hi you", reasoning=2))
    _ = [e async for e in traced(provider, telemetry, capture_content=True)]
    attrs = dict(telemetry.only_span().attributes or {})
    assert json.loads(str(attrs["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be brief."}
    ]
    assert json.loads(str(attrs["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "hello there"}]}
    ]
    [output] = json.loads(str(attrs["gen_ai.output.messages"]))
    assert output["role"] == "assistant"
    assert output["parts"] == [
        {"type": "reasoning", "content": "let me"},
        {"type": "text", "content": "hi you"},
    ]
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 2


async def test_a_provider_error_sets_error_type_and_status(
    fake_upstream: FakeUpstream, provider: OpenAIProvider, telemetry: Telemetry
) -> None:
    fake_upstream.enqueue(Script(status=400))
    _ = [e async for e in traced(provider, telemetry)]
    span = telemetry.only_span()
    assert span.status.status_code is StatusCode.ERROR
    assert "fake upstream error 400" in (span.status.description or "")
    assert dict(span.attributes or {})["error.type"] == "400"
    [duration] = telemetry.points("gen_ai.client.operation.duration")
    assert duration.attributes is not None and duration.attributes["error.type"] == "400"
    assert telemetry.points("gen_ai.client.token.usage") == []


async def test_a_broken_connection_is_an_error_of_its_class(
    fake_upstream: FakeUpstream, provider: OpenAIProvider, telemetry: Telemetry
) -> None:
    fake_upstream.enqueue(Script(tokens=5, fail_after=2))
    _ = [e async for e in traced(provider, telemetry)]
    attrs = dict(telemetry.only_span().attributes or {})
    assert attrs["error.type"] == "ProviderConnectionError"
    assert attrs["gen_ai.response.finish_reasons"] == ("error",)


async def test_stopping_early_ends_the_span_and_closes_upstream(
    fake_upstream: FakeUpstream, provider: OpenAIProvider, telemetry: Telemetry
) -> None:
    fake_upstream.enqueue(Script(tokens=10, hang_after=3))
    stream = traced(provider, telemetry)
    async for event in stream:
        if isinstance(event, TextDelta):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    span = telemetry.only_span()
    attrs = dict(span.attributes or {})
    assert attrs["streamkeep.cancelled"] is True
    assert span.status.status_code is StatusCode.UNSET
    async with asyncio.timeout(5):
        await fake_upstream.wait_idle()
    assert fake_upstream.closed_by_client == 1


async def test_anthropic_stream_reports_cache_reads(
    fake_upstream: FakeUpstream, telemetry: Telemetry
) -> None:
    body = (Path(__file__).parent / "transcripts" / "anthropic_text.sse").read_bytes()
    fake_upstream.enqueue(Script(raw=[body]))
    anthropic = AnthropicProvider("anthropic", fake_upstream.root_url, "k")
    request = ChatRequest(model="claude-sonnet-4-5", messages=[Message("user", "hi")])
    stream = traced_stream(
        anthropic.stream(request),
        provider="anthropic",
        request=request,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    _ = [e async for e in stream]
    await anthropic.aclose()
    span = telemetry.only_span()
    attrs = dict(span.attributes or {})
    assert span.name == "chat claude-sonnet-4-5"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.response.model"] == "claude-sonnet-4-5-20250929"
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["gen_ai.usage.input_tokens"] == 2060
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 2048
    assert "server.address" not in attrs


@pytest.mark.parametrize("capture", [False, True])
async def test_the_capture_content_setting_reaches_the_registry_spans(
    fake_upstream: FakeUpstream, telemetry: Telemetry, capture: bool
) -> None:
    settings = Settings(
        enable_local_model=False,
        providers={
            "fake": ProviderConfig(kind="openai", base_url=fake_upstream.base_url, api_key="x")
        },
        capture_content=capture,
    )
    registry = ModelRegistry(
        settings,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    try:
        request = ChatRequest(model="fake/fake-model", messages=[Message("user", "psst")])
        _ = [e async for e in registry.stream("fake/fake-model", request)]
    finally:
        await registry.aclose()
    attrs = dict(telemetry.only_span().attributes or {})
    assert ("gen_ai.input.messages" in attrs) is capture
    assert ("psst" in json.dumps(attrs)) is capture
