"""OTLP export from two real `streamkeep serve` workers (PostgreSQL, Redis, the fake
upstream), into a real OTLP/HTTP receiver (`tests.otlp`): one trace per reply, with the
request, generation and provider-call spans, and the resume on the other worker linked
to it; the metrics go out too. The servers flush at shutdown (SIGTERM)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from tests.fakes.upstream import FakeUpstream
from tests.otlp import OtlpReceiver, Span
from tests.scaleout.test_processes import new_chat, serve, start_reply
from tests.server.sse import events, until
from tests.server.test_serve import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

SERVER, CLIENT = 2, 3  # SpanKind in OTLP's numbering


def export_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
    }


def statuses_of(spans: list[Span], status: str) -> list[Span]:
    return [s for s in spans if s.attributes["streamkeep.generation.status"] == status]


def one(spans: list[Span], what: str) -> Span:
    assert len(spans) == 1, f"{what}: {[(s.name, s.attributes) for s in spans]}"
    return spans[0]


async def test_one_trace_per_reply_and_the_resume_linked(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    with OtlpReceiver() as receiver:
        env = export_env(receiver)
        with serve(tmp_path / "a", fake_upstream, pg_url, keys, **env) as proc_a:
            a = await wait_ready(proc_a)
            with serve(tmp_path / "b", fake_upstream, pg_url, keys, **env) as proc_b:
                b = await wait_ready(proc_b)
                chat_id = await new_chat(a)
                async with start_reply(a, chat_id, "[[tokens=40 delay=0.02]] hi") as (_, stream):
                    seen = [e for _ in range(4) for e in await until(stream, "text-delta")]
                last = seen[-1].seq
                headers = {"last-event-id": str(last)}
                async with b.stream("GET", f"/api/chats/{chat_id}/stream", headers=headers) as r:
                    assert r.status_code == 200
                    rest = [e async for e in events(r)]
                assert rest[-1].type == "[DONE]"
                # A second reply, started on a, stopped through b.
                async with start_reply(a, chat_id, "[[tokens=5000 delay=0.02]] go") as (_, s):
                    await until(s, "text-delta")
                    r = await b.post(f"/api/chats/{chat_id}/stop")
                    assert r.json() == {"stopped": True}
                await b.aclose()
            await a.aclose()
        # Both servers have exited (SIGTERM): what they buffered was flushed.
        received = receiver.received
        assert received.failures == []
        spans = received.spans()

    generations = [s for s in spans if s.name == "generation"]
    statuses = [s.attributes["streamkeep.generation.status"] for s in generations]
    assert sorted(statuses) == ["complete", "stopped"]
    generation = one(statuses_of(generations, "complete"), "the complete generation")
    stopped = one(statuses_of(generations, "stopped"), "the stopped generation")
    assert generation.attributes["streamkeep.chat.id"] == chat_id
    assert generation.attributes["streamkeep.generation.steps"] == 1
    assert generation.attributes["gen_ai.request.model"] == "openai/fake-model"
    trace = [s for s in spans if s.trace_id == generation.trace_id]

    request = one([s for s in trace if s.span_id == generation.parent_span_id], "its parent")
    assert request.kind == SERVER
    assert request.attributes["http.route"] == "/api/chats/{chat_id}/messages"
    children = [s for s in trace if s.parent_span_id == generation.span_id]
    assert sorted(s.name for s in children) == [
        "chat fake-model",
        "db final write",
        "db start reply",
    ]
    call = one([s for s in children if s.name == "chat fake-model"], "provider calls")
    assert call.kind == CLIENT
    assert call.name == "chat fake-model"
    assert call.attributes["gen_ai.provider.name"] == "openai"
    assert request.resource["service.name"] == "streamkeep"

    resumes = [s for s in spans if s.attributes.get("http.route") == "/api/chats/{chat_id}/stream"]
    resume = one(resumes, "resume requests")
    assert (generation.trace_id, generation.span_id) in resume.links
    # It ran on the other worker, in a trace of its own.
    assert resume.resource["service.instance.id"] != request.resource["service.instance.id"]
    assert resume.trace_id != generation.trace_id
    stop = one(
        [s for s in spans if s.attributes.get("http.route") == "/api/chats/{chat_id}/stop"], "stops"
    )
    assert (stopped.trace_id, stopped.span_id) in stop.links
    assert stop.resource["service.instance.id"] == resume.resource["service.instance.id"]

    names = received.metric_names()
    for name in (
        "gen_ai.client.operation.duration",
        "gen_ai.client.operation.time_to_first_chunk",
        "gen_ai.client.token.usage",
        "streamkeep_generations_finished_total",
        "streamkeep_http_requests_total",
        "streamkeep_active_streams",
        "streamkeep_model_time_to_first_token_seconds_bucket",
        "streamkeep_model_output_tokens_per_second_count",
    ):
        assert name in names, sorted(names)
    rates = received.last_points("streamkeep_model_output_tokens_per_second_count")
    assert ({"model": "openai/fake-model"}, 1) in rates  # the stopped call has no rate
    buckets = received.last_points("streamkeep_model_time_to_first_token_seconds_bucket")
    assert ({"model": "openai/fake-model", "le": "+Inf"}, 2) in buckets
