"""ModelRegistry: model names to providers, from real settings (env vars, TOML file)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from streamkeep.config import load_settings
from streamkeep.llm import (
    Accumulator,
    ChatRequest,
    Completion,
    ConfigurationError,
    Message,
    UnknownModelError,
)
from streamkeep.llm.http_provider import HTTPProvider
from streamkeep.llm.local import LocalProvider
from streamkeep.llm.registry import ModelRegistry
from tests.fakes.upstream import FakeUpstream, fake_upstream

__all__ = ["fake_upstream"]  # the fixture, imported to be used here

TOML = """
[providers.openrouter]
kind = "openai"
base_url = "{url}"

[providers.groq]
kind = "openai"
base_url = "https://api.groq.com/openai/v1"
api_key = "gsk-test"
models = ["llama-3.1-8b-instant", "gemma2-9b-it"]
"""


@pytest.fixture
def toml_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "streamkeep.toml"
    path.write_text(TOML.format(url="http://127.0.0.1:9/v1"))
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(path))
    return path


def hello(model: str = "") -> ChatRequest:
    return ChatRequest(model=model, messages=[Message("user", "Say hello.")], max_tokens=8)


async def accumulate(registry: ModelRegistry, model: str, request: ChatRequest) -> Completion:
    acc = Accumulator()
    async for event in registry.stream(model, request):
        acc.add(event)
    return acc.result()


def test_with_nothing_configured_only_the_local_model_is_listed() -> None:
    assert ModelRegistry(load_settings()).models() == ["local/smollm2"]


def test_models_lists_every_configured_model_in_order(toml_config: Path) -> None:
    assert ModelRegistry(load_settings()).models() == [
        "local/smollm2",
        "groq/llama-3.1-8b-instant",
        "groq/gemma2-9b-it",
    ]


def test_resolve_splits_at_the_first_slash_only(toml_config: Path) -> None:
    provider, model = ModelRegistry(load_settings()).resolve("openrouter/meta-llama/llama-3-8b")
    assert provider.name == "openrouter"
    assert model == "meta-llama/llama-3-8b"


def test_resolve_builds_each_provider_once(toml_config: Path) -> None:
    registry = ModelRegistry(load_settings())
    first, _ = registry.resolve("groq/gemma2-9b-it")
    second, _ = registry.resolve("groq/llama-3.1-8b-instant")
    assert first is second


async def test_prepare_builds_the_http_providers_with_their_pools_but_not_the_local_model(
    toml_config: Path,
) -> None:
    registry = ModelRegistry(load_settings())
    registry.prepare()
    try:
        built = registry._providers
        assert sorted(built) == ["groq", "openrouter"]  # the embedded model stays unloaded
        for provider in built.values():
            assert isinstance(provider, HTTPProvider)
            assert provider._client is not None and not provider._client.closed
        groq, _ = registry.resolve("groq/gemma2-9b-it")
        assert groq is built["groq"]  # requests use what was prepared
    finally:
        await registry.aclose()


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("nowhere/gpt-4o", "unknown provider 'nowhere'"),
        ("groq/gpt-4o", "provider 'groq' has no model 'gpt-4o'"),
        ("smollm2", "not of the form PROVIDER/MODEL"),
        ("local/", "not of the form PROVIDER/MODEL"),
    ],
)
def test_unknown_models_are_refused_with_a_clear_message(
    toml_config: Path, model: str, message: str
) -> None:
    with pytest.raises(UnknownModelError, match=message):
        ModelRegistry(load_settings()).resolve(model)


def test_the_unknown_provider_message_lists_the_configured_ones(toml_config: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        ModelRegistry(load_settings()).resolve("nowhere/x")
    assert "groq, local, openrouter" in info.value.message


def test_the_local_model_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKEEP_ENABLE_LOCAL_MODEL", "false")
    registry = ModelRegistry(load_settings())
    assert registry.models() == []
    with pytest.raises(UnknownModelError, match="configured providers: none"):
        registry.resolve("local/smollm2")


def test_openai_api_key_implies_an_openai_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamkeep.llm.openai import OpenAIProvider

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    registry = ModelRegistry(load_settings())
    provider, model = registry.resolve("openai/gpt-4o-mini")
    assert isinstance(provider, OpenAIProvider) and provider.name == "openai"
    assert model == "gpt-4o-mini"
    # A pass-through provider: any model name is accepted, none is listed.
    assert registry.models() == ["local/smollm2"]


def test_anthropic_api_key_implies_an_anthropic_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamkeep.llm.anthropic import AnthropicProvider

    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    provider, model = ModelRegistry(load_settings()).resolve("anthropic/claude-3-5-haiku-latest")
    assert isinstance(provider, AnthropicProvider) and provider.name == "anthropic"
    assert model == "claude-3-5-haiku-latest"


async def test_stream_through_openai_base_url_sends_the_providers_own_model_name(
    monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeUpstream
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_upstream.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    registry = ModelRegistry(load_settings())
    try:
        done = await accumulate(registry, "openai/gpt-4o-mini", hello("ignored"))
    finally:
        await registry.aclose()
    assert done.text == "Hello! You said: Say hello."
    assert fake_upstream.requests[0]["model"] == "gpt-4o-mini"
    assert fake_upstream.request_headers[0]["authorization"] == "Bearer sk-test"


async def test_stream_through_a_configured_anthropic_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeUpstream
) -> None:
    path = tmp_path / "streamkeep.toml"
    path.write_text(
        f'[providers.claude]\nkind = "anthropic"\nbase_url = "{fake_upstream.root_url}"\n'
        'api_key = "sk-ant-test"\nmodels = ["claude-3-5-haiku-latest"]\n'
    )
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(path))
    registry = ModelRegistry(load_settings())
    try:
        done = await accumulate(registry, "claude/claude-3-5-haiku-latest", hello())
    finally:
        await registry.aclose()
    assert done.text == "Hello! You said: Say hello."
    assert fake_upstream.requests[0]["model"] == "claude-3-5-haiku-latest"


def test_stream_refuses_an_unknown_model_before_streaming() -> None:
    with pytest.raises(UnknownModelError):
        ModelRegistry(load_settings()).stream("nowhere/x", hello())


def test_a_local_provider_with_a_missing_file_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The GGUF is found through the installed package: hide it from the import system.
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    with pytest.raises(ConfigurationError, match=r"streamkeep\[local\]"):
        ModelRegistry(load_settings()).resolve("local/smollm2")


@pytest.mark.slow
async def test_stream_end_to_end_through_the_local_model() -> None:
    registry = ModelRegistry(load_settings())
    request = hello("ignored")
    try:
        done = await accumulate(registry, "local/smollm2", request)
        provider, _ = registry.resolve("local/smollm2")
    finally:
        await registry.aclose()
    assert isinstance(provider, LocalProvider)
    assert done.text and done.finish_reason in ("stop", "length")
    assert done.model == "smollm2"
    assert done.usage is not None and done.usage.output_tokens <= 8
    assert request.model == "ignored"  # the caller's request is not changed


# -- `python -m streamkeep.llm`: the registry from the command line ------------------


async def run_cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamkeep.llm",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_cli_streams_the_answer_to_stdout_and_usage_to_stderr(
    monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeUpstream
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_upstream.base_url)
    code, out, err = await run_cli(
        "Hi there", "--model", "openai/gpt-4o-mini", "--system", "Be brief."
    )
    assert (code, out) == (0, "Hello! You said: Hi there\n")
    # The fake counts words: "Be brief." + "Hi there" in, 5 words out.
    assert "[openai/gpt-4o-mini: stop; 4 in, 5 out]" in err
    assert fake_upstream.requests[0]["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_cli_exits_1_with_a_clear_message_on_an_unknown_model() -> None:
    code, out, err = await run_cli("Hi", "--model", "nowhere/x")
    assert (code, out) == (1, "")
    assert "error: unknown provider 'nowhere'" in err


async def test_cli_exits_1_when_the_provider_fails(
    monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeUpstream
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_upstream.base_url)
    code, _, err = await run_cli("[[status=400]] Hi", "--model", "openai/gpt-4o-mini")
    assert code == 1
    assert "error: HTTP 400" in err


async def test_cli_exits_1_when_the_stream_is_cut_short(
    monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeUpstream
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", fake_upstream.base_url)
    code, out, err = await run_cli("[[tokens=5 cut_after=2]] Hi", "--model", "openai/gpt-4o-mini")
    assert (code, out) == (1, "lorem ipsum\n")  # the partial answer, then the error
    assert "error: the provider closed the stream before finishing" in err
