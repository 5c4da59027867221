"""Fields of a Chat Completions body that streamkeep does not model reach an
OpenAI-compatible provider as they came, and never an Anthropic one; a field whose
answer could not be kept is refused. The fake upstream records each body it got."""

from __future__ import annotations

from typing import Any

import pytest

from streamkeep.config import ProviderConfig
from streamkeep.llm.openai import request_body
from streamkeep.llm.types import ChatRequest, Message, ToolSpec
from tests.fakes.upstream import FakeUpstream, Script
from tests.gateway.conftest import MODEL, Gateway, GatewayFactory
from tests.gateway.test_kept import CHAT_HEADER, settled
from tests.gateway.test_sdk import TEXT, USER

# What OpenAI takes and streamkeep does not model, and vLLM's / llama.cpp's samplers.
PASSED = {
    "logit_bias": {"50256": -100},
    "frequency_penalty": 0.5,
    "presence_penalty": -0.25,
    "logprobs": True,
    "top_logprobs": 2,
    "service_tier": "flex",
    "prediction": {"type": "content", "content": "The quick"},
    "metadata": {"team": "docs"},
    "store": False,
    "verbosity": "low",
    "top_k": 40,
    "min_p": 0.05,
    "repetition_penalty": 1.1,
}


async def test_unmodelled_fields_reach_an_openai_compatible_provider(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text=TEXT))
    body = {
        "model": MODEL,
        "messages": USER,
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
        **PASSED,
    }
    r = await gateway.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == TEXT
    sent = gateway.upstream.requests[-1]
    assert {k: sent[k] for k in PASSED} == PASSED
    assert sent["parallel_tool_calls"] is False and sent["reasoning_effort"] == "low"
    # What streamkeep sets itself stays its own.
    assert sent["model"] == "fake-model" and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}


async def test_unmodelled_fields_are_not_sent_to_an_anthropic_provider(
    gateway_factory: GatewayFactory, fake_upstream: FakeUpstream
) -> None:
    claude = ProviderConfig(
        kind="anthropic", base_url=fake_upstream.root_url, api_key="x", models=["claude"]
    )
    gw = await gateway_factory(providers={"claude": claude}, model="claude/claude")
    fake_upstream.enqueue(Script(text=TEXT))
    body = {"model": "claude/claude", "messages": USER, "reasoning_effort": "low", **PASSED}
    r = await gw.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    sent = fake_upstream.requests[-1]
    assert sent["model"] == "claude"
    assert not set(PASSED) & set(sent) and "reasoning_effort" not in sent


async def test_through_a_fallback_alias_only_its_openai_models_get_them(
    gateway_factory: GatewayFactory, fake_upstream: FakeUpstream
) -> None:
    gw = await gateway_factory(
        providers={
            "one": ProviderConfig(
                kind="openai", base_url=fake_upstream.base_url, models=["m"], max_retries=0
            ),
            "claude": ProviderConfig(
                kind="anthropic", base_url=fake_upstream.root_url, api_key="x", models=["c"]
            ),
        },
        aliases={"fast": ["one/m", "claude/c"]},
        model="fast",
    )
    fake_upstream.enqueue(Script(status=503))
    fake_upstream.enqueue(Script(text=TEXT))
    r = await gw.http.post(
        "/v1/chat/completions", json={"model": "fast", "messages": USER, "top_k": 3}
    )
    assert r.status_code == 200, r.text
    tried, answered = fake_upstream.requests[-2:]
    assert (tried["model"], tried["top_k"]) == ("m", 3)
    assert answered["model"] == "c" and "top_k" not in answered
    reply = (await settled(gw, r.headers[CHAT_HEADER]))["messages"][-1]
    assert reply["answered_by"] == "claude/c"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["audio"]}, "modalities"),
        ({"metadata": {"note": "a\u0000b"}}, "metadata"),  # the text rule, as everywhere
    ],
)
async def test_a_field_whose_answer_cannot_be_kept_is_refused_and_nothing_is_stored(
    gateway: Gateway, extra: dict[str, Any], param: str
) -> None:
    r = await gateway.http.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": USER, **extra}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert gateway.upstream.requests == []
    assert (await gateway.http.get("/api/chats")).json()["items"] == []


async def test_text_only_modalities_are_passed_through(gateway: Gateway) -> None:
    gateway.upstream.enqueue(Script(text=TEXT))
    body = {"model": MODEL, "messages": USER, "modalities": ["text"]}
    r = await gateway.http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    assert gateway.upstream.requests[-1]["modalities"] == ["text"]


def test_openai_extra_never_replaces_what_the_request_sets() -> None:
    request = ChatRequest(
        model="m",
        messages=[Message("user", "hi")],
        tools=[ToolSpec("f")],
        temperature=0.5,
        extra={"top_k": 4},
        openai_extra={
            "model": "other",
            "messages": [],
            "tools": [],
            "stream": False,
            "stream_options": {"include_usage": False},
            "temperature": 2,
            "top_k": 9,
            "min_p": 0.1,
        },
    )
    body = request_body(request)
    assert body["model"] == "m" and body["messages"] == [{"role": "user", "content": "hi"}]
    assert [t["function"]["name"] for t in body["tools"]] == ["f"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["top_k"], body["min_p"]) == (0.5, 4, 0.1)
