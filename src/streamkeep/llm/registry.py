"""Model names to providers: `PROVIDER/MODEL` resolved against the configured providers.

Providers are built on first use, so a configured vendor costs nothing until a request
names it and the embedded model's file is only looked for when `local/...` is used.
The vendor modules are imported inside the factory for the same reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from streamkeep.config import ProviderConfig, Settings
from streamkeep.llm.errors import LLMError, UnknownModelError
from streamkeep.llm.events import StreamEvent
from streamkeep.llm.provider import Provider
from streamkeep.llm.tracing import traced_stream
from streamkeep.llm.types import ChatRequest
from streamkeep.llm.usage import with_usage

_DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class ModelRegistry:
    """Every model streamkeep can talk to, from `Settings`; one per app (or CLI run)."""

    def __init__(self, settings: Settings) -> None:
        self._configs = settings.all_providers()
        self._providers: dict[str, Provider] = {}

    def models(self) -> list[str]:
        """Every `provider/model` of the configured lists (pass-through providers list none)."""
        return [f"{name}/{model}" for name, cfg in self._configs.items() for model in cfg.models]

    def resolve(self, model: str) -> tuple[Provider, str]:
        """The provider for `model` and the provider's own name for it.

        Raises UnknownModelError (or ConfigurationError while building the provider).
        """
        prefix, _, name = model.partition("/")
        if not prefix or not name:
            raise UnknownModelError(
                f"model {model!r} is not of the form PROVIDER/MODEL (e.g. local/smollm2)"
            )
        cfg = self._configs.get(prefix)
        if cfg is None:
            known = ", ".join(sorted(self._configs)) or "none"
            raise UnknownModelError(
                f"unknown provider {prefix!r} in model {model!r}; configured providers: {known}"
            )
        if cfg.models and name not in cfg.models:
            raise UnknownModelError(
                f"provider {prefix!r} has no model {name!r}; it serves: {', '.join(cfg.models)}"
            )
        return self._provider(prefix, cfg), name

    def stream(self, model: str, request: ChatRequest) -> AsyncIterator[StreamEvent]:
        """Stream `request` from the model named `model`, traced, always with usage
        (the provider's, or an estimate flagged `estimated` when it sent none).

        Resolves at once, so an unknown model raises here (before any event), which
        lets an HTTP caller answer 4xx instead of opening a stream that fails.
        """
        provider, own_name = self.resolve(model)
        request = dataclasses.replace(request, model=own_name)
        cfg = self._configs[model.partition("/")[0]]
        return traced_stream(
            with_usage(provider.stream(request), request),
            provider=provider.name,
            request=request,
            server_address=_host(cfg),
        )

    def prepare(self) -> None:
        """Build every configured HTTP provider and open its connection pool now (a
        server calls this at start), so that no request pays for imports and TLS set-up.
        The embedded model stays unloaded until used; a provider that cannot be built
        is left for a request naming it to report."""
        for name, cfg in self._configs.items():
            if cfg.kind == "local":
                continue
            try:
                provider = self._provider(name, cfg)
            except LLMError:
                continue
            open_pool = getattr(provider, "open", None)
            if open_pool is not None:
                open_pool()

    async def aclose(self) -> None:
        """Close every provider built so far (a later request builds it again)."""
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()

    def _provider(self, name: str, cfg: ProviderConfig) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            provider = self._providers[name] = build_provider(name, cfg)
        return provider


def build_provider(name: str, cfg: ProviderConfig) -> Provider:
    """A new provider for one configured entry."""
    if cfg.kind == "local":
        from streamkeep.llm.local import LocalProvider

        return LocalProvider(name)

    from streamkeep.llm.transport import RetryPolicy, Timeouts

    timeouts = Timeouts(
        connect=cfg.connect_timeout, first_token=cfg.first_token_timeout, idle=cfg.idle_timeout
    )
    retry = RetryPolicy(max_retries=cfg.max_retries)
    base_url = cfg.base_url or _DEFAULT_BASE_URLS[cfg.kind]
    if cfg.kind == "openai":
        from streamkeep.llm.openai import OpenAIProvider

        return OpenAIProvider(
            name,
            base_url,
            cfg.api_key,
            timeouts=timeouts,
            retry=retry,
            extra_headers=cfg.extra_headers,
        )
    from streamkeep.llm.anthropic import AnthropicProvider

    return AnthropicProvider(
        name, base_url, cfg.api_key, timeouts=timeouts, retry=retry, extra_headers=cfg.extra_headers
    )


def _host(cfg: ProviderConfig) -> str | None:
    """The peer's host for tracing (`server.address`); None for the in-process model."""
    if cfg.kind == "local":
        return None
    return urlsplit(cfg.base_url or _DEFAULT_BASE_URLS[cfg.kind]).hostname
