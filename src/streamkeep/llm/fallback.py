"""Fallback aliases: one model name for an ordered list of provider models.

`fallback_stream` tries the models in order. An attempt that fails before its first
content event (text, reasoning, a tool call, or a finish) with a failure the next model
may not have (`falls_through`) is closed, and the next model is tried; nothing of it was
sent. Once an attempt sent a content event it is the answer: a later failure ends the
stream as it would without an alias, and nothing is tried again. The last model's
failure is what the caller gets.

The stream starts with one `Routed` event naming the model that answers (or, when every
model failed, the last one tried) and why each one before it was skipped. Usage reports
an attempt sends before its first content (counts so far) are held back until the
attempt proves itself, and dropped with it when it fails.

Which failures fall through: a connection that fails or breaks, a time limit, a stream
cut short or failing before any content, HTTP 408, 429 and 5xx, and a model that cannot
be opened at all (a provider without its key). Also 401, 403 and 404: they say this
model's provider does not take its key, or does not serve the model, which is the
configuration of this one model, not the caller's request; the next model may well
answer, and the skip is recorded with the message (and logged). Any other 4xx (400,
413, 422, ...) refuses the request itself, which the next model would refuse too: it
ends the stream at once. Each model's own `max_retries` are spent before its failure
counts (set `max_retries = 0` on a provider to move on at once).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any

from streamkeep.llm.errors import (
    ConfigurationError,
    LLMError,
    ProviderConnectionError,
    ProviderHTTPError,
    ProviderIncomplete,
    ProviderStreamError,
    ProviderTimeout,
)
from streamkeep.llm.events import (
    EventStream,
    Routed,
    Skipped,
    StreamError,
    StreamEvent,
    UsageReport,
)

logger = logging.getLogger(__name__)

# HTTP statuses of a model's provider that the next model may not answer with.
_TARGET_STATUSES = frozenset({401, 403, 404, 408, 429})
# In-stream error codes that refuse the request itself (Anthropic's and OpenAI's names).
_REQUEST_CODES = frozenset({"invalid_request_error", "invalid_request", "request_too_large"})


def falls_through(error: LLMError) -> bool:
    """True when `error`, before any content, should move an alias to its next model."""
    if isinstance(error, ProviderHTTPError):
        return error.status >= 500 or error.status in _TARGET_STATUSES
    if isinstance(error, ProviderStreamError):
        return error.code not in _REQUEST_CODES
    return isinstance(
        error, ProviderConnectionError | ProviderTimeout | ProviderIncomplete | ConfigurationError
    )


def skipped_json(skipped: Skipped) -> dict[str, Any]:
    """How a skipped model is stored and shown: `model`, `kind`, `error`, and the
    provider's HTTP `status` when it answered with one."""
    out: dict[str, Any] = {
        "model": skipped.model,
        "kind": skipped.error.kind,
        "error": skipped.error.message,
    }
    status = getattr(skipped.error, "status", None)
    if isinstance(status, int):
        out["status"] = status
    return out


async def fallback_stream(
    models: Sequence[str], open_model: Callable[[str], EventStream]
) -> AsyncGenerator[StreamEvent, None]:
    """The answer of the first of `models` that answers (module docstring);
    `open_model("provider/model")` opens one attempt (it may raise an LLMError)."""
    skipped: list[Skipped] = []
    for i, model in enumerate(models):
        last = i == len(models) - 1
        try:
            stream = open_model(model)
        except LLMError as exc:
            if last or not falls_through(exc):
                yield Routed(model, tuple(skipped))
                yield StreamError(exc)
                return
            skipped.append(_skip(model, exc))
            continue
        try:
            held: list[StreamEvent] = []
            async for event in stream:
                if type(event) is UsageReport:  # counts so far: kept until it answers
                    held.append(event)
                    continue
                if type(event) is StreamError and not last and falls_through(event.error):
                    skipped.append(_skip(model, event.error))
                    break
                # Its first content (or a failure it keeps): this model is the answer.
                yield Routed(model, tuple(skipped))
                for kept in held:
                    yield kept
                yield event
                async for rest in stream:
                    yield rest
                return
            else:  # ended without a word (no provider does): it is the answer all the same
                yield Routed(model, tuple(skipped))
                for kept in held:
                    yield kept
                return
        finally:
            await stream.aclose()


def _skip(model: str, error: LLMError) -> Skipped:
    # A key or a model name that does not work is configuration to fix: said louder.
    misconfigured = isinstance(error, ConfigurationError) or (
        isinstance(error, ProviderHTTPError) and error.status in (401, 403, 404)
    )
    log = logger.warning if misconfigured else logger.info
    log("fallback: %s failed before answering, trying the next model: %s", model, error.message)
    return Skipped(model, error)
