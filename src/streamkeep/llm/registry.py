"""Model names to providers: `PROVIDER/MODEL` resolved against the configured providers.

Providers are built on first use, so a configured vendor costs nothing until a request
names it and the embedded model's file is only looked for when `local/...` is used.
The vendor modules are imported inside the factory for the same reason.

Which models there are (`available_models`): each provider's configured `models`; an
OpenAI-compatible provider configured without a list passes any name through, so its
own `GET /models` is asked (Ollama, vLLM, llama.cpp, OpenAI itself), with a short time
limit, and its answer is kept for `models_ttl` seconds. A provider that fails to answer
is logged (why) and lists nothing until it is asked again `models_retry` seconds later;
the configured names are listed all the same.

A fallback alias (`[aliases]` of the settings) is a name of its own, listed after the
providers' models; `stream` tries its models in order (`streamkeep.llm.fallback`), each
attempt traced as its own provider call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from opentelemetry import metrics, trace

from streamkeep.config import ProviderConfig, Settings
from streamkeep.llm.errors import LLMError, ProviderError, UnknownModelError
from streamkeep.llm.events import EventStream
from streamkeep.llm.fallback import fallback_stream
from streamkeep.llm.provider import Provider
from streamkeep.llm.runtime import EmbeddedRuntime, Status
from streamkeep.llm.tracing import CallObserver, error_type, traced_stream
from streamkeep.llm.types import ChatRequest
from streamkeep.llm.usage import with_usage

_DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}

logger = logging.getLogger(__name__)


@runtime_checkable
class _ListsModels(Protocol):
    """A provider that can say which models it serves (the OpenAI-compatible one)."""

    async def list_models(self) -> list[str]: ...


@dataclasses.dataclass(slots=True)
class _Listing:
    """A pass-through provider's own model list, as last asked."""

    names: list[str] = dataclasses.field(default_factory=list)
    asked: float = -math.inf  # time.monotonic() of the last answer (or failure)
    ok: bool = False
    asking: asyncio.Task[None] | None = None


class ModelRegistry:
    """Every model streamkeep can talk to, from `Settings`; one per app (or CLI run)."""

    #: seconds a pass-through provider's model list is reused
    models_ttl = 60.0
    #: seconds before a provider that failed to list its models is asked again
    models_retry = 10.0
    #: seconds a provider gets to list its models (a page waits for it)
    models_timeout = 3.0

    def __init__(
        self,
        settings: Settings,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
        observer: CallObserver | None = None,
        runtime: EmbeddedRuntime | None = None,
    ) -> None:
        """`tracer_provider`, `meter_provider`: where the calls' GenAI telemetry goes
        (None: OpenTelemetry's global ones); `observer`: told of every call and retry
        (the app's Prometheus metrics). Message content goes into the spans only with
        the setting `capture_content`. `runtime`: the embedded model's, which a
        `local/...` model waits for (None: the model is built as soon as asked)."""
        self.runtime = runtime
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._observer = observer
        self._capture_content = settings.capture_content
        self._configs = settings.all_providers()
        self._aliases = {name: list(models) for name, models in settings.aliases.items()}
        self._providers: dict[str, Provider] = {}
        self._listings: dict[str, _Listing] = {}

    def models(self) -> list[str]:
        """Every `provider/model` of the configured lists (pass-through providers list
        none), then the fallback aliases."""
        named = [f"{name}/{model}" for name, cfg in self._configs.items() for model in cfg.models]
        return [*named, *self._aliases]

    def status(self, model: str) -> Status | None:
        """Why `model` cannot answer yet (the embedded runtime's state), or None."""
        cfg = self._configs.get(model.partition("/")[0])
        if cfg is None or cfg.kind != "local" or self.runtime is None:
            return None
        status = self.runtime.status()
        return None if status.state == "ready" else status

    def alias(self, model: str) -> list[str] | None:
        """The models a fallback alias tries, in order; None for any other name."""
        return self._aliases.get(model)

    async def available_models(self) -> list[str]:
        """Every `provider/model` of the configured lists, and of what each pass-through
        OpenAI-compatible provider lists itself (see the module docstring)."""
        passing = [n for n, cfg in self._configs.items() if cfg.kind == "openai" and not cfg.models]
        listed = dict(zip(passing, await asyncio.gather(*map(self._listed, passing)), strict=True))
        named = [
            f"{name}/{model}"
            for name, cfg in self._configs.items()
            for model in (cfg.models or listed.get(name, []))
        ]
        return [*named, *self._aliases]

    async def _listed(self, name: str) -> list[str]:
        listing = self._listings.setdefault(name, _Listing())
        kept = self.models_ttl if listing.ok else self.models_retry
        if listing.asking is None and time.monotonic() >= listing.asked + kept:
            listing.asking = asyncio.create_task(self._ask(name, listing))
        if listing.asking is not None:
            # Shielded: a caller that leaves does not cancel the answer others wait for.
            await asyncio.shield(listing.asking)
        return listing.names

    async def _ask(self, name: str, listing: _Listing) -> None:
        listing.names, listing.ok = [], False
        try:
            provider = self._provider(name, self._configs[name])
            if isinstance(provider, _ListsModels):
                async with asyncio.timeout(self.models_timeout):
                    listing.names = await provider.list_models()
                listing.ok = True
        except TimeoutError:
            logger.warning(
                "provider %r did not list its models within %gs", name, self.models_timeout
            )
        except (LLMError, ValueError) as exc:
            logger.warning("provider %r did not list its models: %s", name, exc)
        except Exception:  # a listing never fails the page; the configured ones are listed
            logger.exception("provider %r did not list its models", name)
        finally:
            listing.asked, listing.asking = time.monotonic(), None

    def resolve(self, model: str) -> tuple[Provider, str]:
        """The provider for `model` and the provider's own name for it; for a fallback
        alias, those of its first model that can be built.

        Raises UnknownModelError (or ConfigurationError while building the provider).
        """
        targets = self._aliases.get(model)
        if targets is not None:
            failure: LLMError | None = None
            for target in targets:
                try:
                    return self.resolve(target)
                except LLMError as exc:
                    failure = exc
            assert failure is not None  # an alias names at least one model (config)
            raise failure
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

    def stream(self, model: str, request: ChatRequest) -> EventStream:
        """Stream `request` from the model named `model`, traced, always with usage
        (the provider's, or an estimate flagged `estimated` when it sent none).

        Resolves at once, so an unknown model raises here (before any event), which
        lets an HTTP caller answer 4xx instead of opening a stream that fails. A
        fallback alias's models are opened one after another as the stream is read.
        """
        targets = self._aliases.get(model)
        if targets is not None:
            return fallback_stream(targets, lambda target: self.stream(target, request))
        provider, own_name = self.resolve(model)
        cfg = self._configs[model.partition("/")[0]]
        request = dataclasses.replace(request, model=own_name)
        if cfg.kind != "openai" and request.openai_extra:
            # Never sent to this provider: not traced as if it were either.
            request = dataclasses.replace(request, openai_extra={})
        return traced_stream(
            with_usage(provider.stream(request), request),
            provider=provider.name,
            request=request,
            server_address=_host(cfg),
            capture_content=self._capture_content,
            tracer_provider=self._tracer_provider,
            meter_provider=self._meter_provider,
            observer=self._observer,
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
        asking = [t for listing in self._listings.values() if (t := listing.asking) is not None]
        for task in asking:
            task.cancel()
        await asyncio.gather(*asking, return_exceptions=True)
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            await provider.aclose()

    def _provider(self, name: str, cfg: ProviderConfig) -> Provider:
        provider = self._providers.get(name)
        if provider is None:
            if cfg.kind == "local" and self.runtime is not None:
                self.runtime.check()  # ModelNotReady while its runtime is prepared
            on_retry = partial(_retried, self._observer) if self._observer is not None else None
            provider = self._providers[name] = build_provider(name, cfg, on_retry=on_retry)
        return provider


def _retried(observer: CallObserver, provider: str, error: ProviderError) -> None:
    observer.retried(provider, error_type(error))


def build_provider(
    name: str,
    cfg: ProviderConfig,
    *,
    on_retry: Callable[[str, ProviderError], None] | None = None,
) -> Provider:
    """A new provider for one configured entry (`on_retry`: see `RetryPolicy`)."""
    if cfg.kind == "local":
        from streamkeep.llm.local import LocalProvider

        return LocalProvider(name)

    from streamkeep.llm.transport import RetryPolicy, Timeouts

    timeouts = Timeouts(
        connect=cfg.connect_timeout, first_token=cfg.first_token_timeout, idle=cfg.idle_timeout
    )
    retry = RetryPolicy(max_retries=cfg.max_retries, on_retry=on_retry)
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


def provider_url(cfg: ProviderConfig) -> str:
    """Where a provider is reached: its base URL ("in-process" for the embedded model)."""
    if cfg.kind == "local":
        return "in-process"
    return cfg.base_url or _DEFAULT_BASE_URLS[cfg.kind]


def _host(cfg: ProviderConfig) -> str | None:
    """The peer's host for tracing (`server.address`); None for the in-process model."""
    if cfg.kind == "local":
        return None
    return urlsplit(cfg.base_url or _DEFAULT_BASE_URLS[cfg.kind]).hostname
