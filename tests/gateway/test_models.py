"""`GET /v1/models` lists what an OpenAI-compatible provider configured without a model
list serves (its own `/models`, asked with a short time limit and kept a while), beside
the configured models; a provider that fails or hangs is logged and leaves them listed."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streamkeep.llm.registry import ModelRegistry
from tests.fakes.upstream import FakeUpstream, Script
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_sdk import USER

OWN = ["llama3.2:1b", "qwen2.5:0.5b"]


@pytest.fixture
async def gw(gateway_factory: GatewayFactory, fake_upstream: FakeUpstream) -> Gateway:
    """The gateway as a user with Ollama or vLLM runs it: `OPENAI_BASE_URL` set (any
    name passes through), beside the configured `fake` provider and its list."""
    fake_upstream.models = [*OWN, OWN[0]]  # a repeat is listed once
    return await gateway_factory(openai_base_url=fake_upstream.base_url, openai_api_key="sk-t")


def registry(gw: Gateway) -> ModelRegistry:
    reg: ModelRegistry = gw.app.state.registry
    return reg


async def listed(gw: Gateway) -> list[str]:
    client = gw.async_client()
    try:
        return [m.id async for m in client.models.list()]
    finally:
        await client.close()


async def test_a_pass_through_provider_lists_its_own_models(gw: Gateway) -> None:
    assert await listed(gw) == ["openai/llama3.2:1b", "openai/qwen2.5:0.5b", MODEL]
    (headers,) = gw.upstream.models_headers
    assert headers["authorization"] == "Bearer sk-t"
    r = await gw.http.get("/v1/models")
    assert r.json()["data"][1] == {
        "id": "openai/qwen2.5:0.5b",
        "object": "model",
        "created": 0,
        "owned_by": "openai",
    }
    assert len(gw.upstream.models_headers) == 1  # kept, not asked again

    # A listed model is one a client can use.
    client = gw.async_client()
    done = await client.chat.completions.create(model="openai/qwen2.5:0.5b", messages=USER)  # type: ignore[arg-type]
    await client.close()
    assert done.choices[0].message.content
    assert gw.upstream.requests[-1]["model"] == "qwen2.5:0.5b"


async def test_the_list_is_asked_again_once_it_expires(gw: Gateway) -> None:
    assert await listed(gw) == ["openai/llama3.2:1b", "openai/qwen2.5:0.5b", MODEL]
    gw.upstream.models = ["phi4"]
    assert await listed(gw) == ["openai/llama3.2:1b", "openai/qwen2.5:0.5b", MODEL]
    registry(gw).models_ttl = 0.0
    assert await listed(gw) == ["openai/phi4", MODEL]
    assert len(gw.upstream.models_headers) == 2


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (Script(status=500), "HTTP 500: fake upstream error 500"),
        (Script(status=401), "HTTP 401: fake upstream error 401"),
        (Script(raw=[b"<html>busy</html>"]), "an answer that is not JSON"),
        (Script(raw=[b'{"object": "list", "data": "none"}']), "without a `data` list"),
    ],
    ids=["500", "401", "not-json", "not-a-list"],
)
async def test_a_failed_listing_leaves_the_configured_models_and_says_why(
    gw: Gateway, caplog: pytest.LogCaptureFixture, answer: Script, why: str
) -> None:
    gw.upstream.models_answer = answer
    with caplog.at_level(logging.WARNING, logger="streamkeep.llm.registry"):
        assert await listed(gw) == [MODEL]
    (record,) = [r for r in caplog.records if r.name == "streamkeep.llm.registry"]
    assert "'openai'" in record.getMessage() and why in record.getMessage()

    # Not asked again at once (the page would pay for each failure) ...
    assert await listed(gw) == [MODEL]
    assert len(gw.upstream.models_headers) == 1
    # ... but again after `models_retry`, when it may have recovered.
    gw.upstream.models_answer = None
    registry(gw).models_retry = 0.0
    assert await listed(gw) == ["openai/llama3.2:1b", "openai/qwen2.5:0.5b", MODEL]


async def test_a_hanging_provider_holds_the_list_only_for_the_time_limit(
    gw: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    gw.upstream.models_answer = Script(hang_before_first_byte=3600)
    registry(gw).models_timeout = 0.3
    with caplog.at_level(logging.WARNING, logger="streamkeep.llm.registry"):
        # Callers at the same time share one question to the provider.
        lists = await asyncio.gather(*(listed(gw) for _ in range(3)))
    assert lists == [[MODEL]] * 3
    assert len(gw.upstream.models_headers) == 1
    (record,) = [r for r in caplog.records if r.name == "streamkeep.llm.registry"]
    assert record.getMessage() == "provider 'openai' did not list its models within 0.3s"


async def test_an_unreachable_provider_is_logged(
    gateway_factory: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    gw = await gateway_factory(openai_base_url="http://127.0.0.1:9/v1")  # discard port: closed
    with caplog.at_level(logging.WARNING, logger="streamkeep.llm.registry"):
        assert await listed(gw) == [MODEL]
    (record,) = [r for r in caplog.records if r.name == "streamkeep.llm.registry"]
    assert "provider 'openai' did not list its models: " in record.getMessage()


async def test_configured_lists_are_not_asked(gateway: Gateway) -> None:
    assert await listed(gateway) == [MODEL]
    assert gateway.upstream.models_headers == []
