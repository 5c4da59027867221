"""Fallback aliases through `/v1/chat/completions`: the call is answered by the first
model that answers, and the kept chat records which one did and why others were
skipped. Two fake upstreams on loopback, each its own provider; the OpenAI SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from streamkeep.config import ProviderConfig
from tests.fakes.upstream import FakeUpstream, Script
from tests.gateway.conftest import Gateway, GatewayFactory
from tests.gateway.test_kept import CHAT_HEADER, settled, texts
from tests.gateway.test_sdk import TEXT, USER

ALIAS = "fast"
FIRST, SECOND = "one/fake-model", "two/fake-model"


def provider(url: str) -> ProviderConfig:
    return ProviderConfig(
        kind="openai", base_url=url, api_key="x", models=["fake-model"], max_retries=0
    )


@pytest.fixture
async def second() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as up:
        yield up


@pytest.fixture
async def gw(
    gateway_factory: GatewayFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> Gateway:
    return await gateway_factory(
        providers={"one": provider(fake_upstream.base_url), "two": provider(second.base_url)},
        aliases={ALIAS: [FIRST, SECOND]},
    )


def skipped(reply: dict[str, Any]) -> list[tuple[str, int | None]]:
    return [(f["model"], f.get("status")) for f in reply["fallbacks"]]


async def test_a_whole_call_is_answered_by_the_next_model(
    gw: Gateway, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    fake_upstream.enqueue(Script(status=503))
    second.enqueue(Script(text=TEXT))
    client = gw.async_client()
    raw = await client.chat.completions.with_raw_response.create(model=ALIAS, messages=USER)  # type: ignore[arg-type]
    done = raw.parse()
    await client.close()
    assert done.choices[0].message.content == TEXT
    assert done.model == ALIAS
    reply = (await settled(gw, raw.headers[CHAT_HEADER]))["messages"][-1]
    assert (reply["status"], reply["model"], reply["answered_by"]) == ("complete", ALIAS, SECOND)
    assert skipped(reply) == [(FIRST, 503)]


async def test_a_stream_is_answered_by_the_next_model(
    gw: Gateway, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    fake_upstream.enqueue(Script(status=429))
    second.enqueue(Script(text=TEXT))
    client = gw.async_client()
    raw = await client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=USER, stream=True
    )
    chunks = [c async for c in raw.parse()]
    await client.close()
    assert "".join(c.delta.content or "" for k in chunks for c in k.choices) == TEXT
    reply = (await settled(gw, raw.headers[CHAT_HEADER]))["messages"][-1]
    assert (reply["status"], reply["answered_by"]) == ("complete", SECOND)
    assert skipped(reply) == [(FIRST, 429)]
    assert texts(reply) == TEXT


async def test_every_model_failing_answers_the_last_one_s_status(
    gw: Gateway, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    fake_upstream.enqueue(Script(status=503))
    second.enqueue(Script(status=429, retry_after=7))
    body = {"model": ALIAS, "messages": USER, "stream": True}
    r = await gw.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 429  # the last model's refusal, passed through as without alias
    assert r.headers["retry-after"] == "7"
    reply = (await settled(gw, r.headers[CHAT_HEADER]))["messages"][-1]
    assert reply["status"] == "error" and "HTTP 429" in reply["error"]
    assert reply["answered_by"] == SECOND
    assert skipped(reply) == [(FIRST, 503)]


async def test_a_failure_after_content_reaches_the_client_and_nothing_is_retried(
    gw: Gateway, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    fake_upstream.enqueue(Script(tokens=6, error_after=3))
    client = gw.async_client()
    raw = await client.chat.completions.with_raw_response.create(
        model=ALIAS, messages=USER, stream=True
    )
    with pytest.raises(openai.APIError):
        async for _ in raw.parse():
            pass
    await client.close()
    assert second.requests == []
    reply = (await settled(gw, raw.headers[CHAT_HEADER]))["messages"][-1]
    assert (reply["status"], texts(reply)) == ("error", "lorem ipsum dolor")
    assert reply["answered_by"] == FIRST and reply["fallbacks"] == []


async def test_a_400_is_passed_through_without_trying_the_next_model(
    gw: Gateway, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    fake_upstream.enqueue(Script(status=400))
    r = await gw.http.post("/v1/chat/completions", json={"model": ALIAS, "messages": USER})
    assert r.status_code == 400
    assert second.requests == []
    reply = (await settled(gw, r.headers[CHAT_HEADER]))["messages"][-1]
    assert reply["status"] == "error" and reply["answered_by"] == FIRST


async def test_unkept_calls_fall_back_too(
    gateway_factory: GatewayFactory, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    gw = await gateway_factory(
        providers={"one": provider(fake_upstream.base_url), "two": provider(second.base_url)},
        aliases={ALIAS: [FIRST, SECOND]},
        gateway_store=False,
    )
    fake_upstream.enqueue(Script(status=502))
    second.enqueue(Script(text=TEXT))
    client = gw.async_client()
    done = await client.chat.completions.create(model=ALIAS, messages=USER)  # type: ignore[arg-type]
    await client.close()
    assert done.choices[0].message.content == TEXT
    assert len(second.requests) == 1


async def test_anthropic_messages_calls_fall_back_too(
    gw: Gateway, fake_upstream: FakeUpstream, second: FakeUpstream
) -> None:
    fake_upstream.enqueue(Script(status=503))
    second.enqueue(Script(text=TEXT))
    body = {"model": ALIAS, "max_tokens": 100, "messages": USER}
    r = await gw.http.post("/v1/messages", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == [{"type": "text", "text": TEXT}]
    reply = (await settled(gw, r.headers[CHAT_HEADER]))["messages"][-1]
    assert (reply["model"], reply["answered_by"]) == (ALIAS, SECOND)
    assert skipped(reply) == [(FIRST, 503)]
