"""The one exception hierarchy of `streamkeep.llm`.

    LLMError                      anything that went wrong talking to a model
    ├── ConfigurationError        bad or missing settings (no key, unknown provider)
    ├── UnknownModelError         a model name no provider serves
    ├── ModelNotReady             a model being prepared (has .retry_after, seconds)
    └── ProviderError             the provider (or the way to it) failed
        ├── ProviderHTTPError     it answered with an HTTP error status (has .status)
        ├── ProviderConnectionError  could not connect, or the connection broke
        ├── ProviderTimeout       connect / first-token / idle time limit passed
        ├── ProviderStreamError   an error reported inside the stream (HTTP 200)
        └── ProviderIncomplete    the stream ended before the provider said it finished

Providers map every failure at their boundary onto these; `stream()` reports them as
a `StreamError` event rather than raising, so a consumer handles one code path.
"""

from __future__ import annotations


class LLMError(Exception):
    """Base of every error raised or reported by streamkeep.llm."""

    #: a short machine-readable kind, used in API error bodies
    kind: str = "llm_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(LLMError):
    kind = "configuration_error"


class UnknownModelError(LLMError):
    kind = "unknown_model"


class ModelNotReady(LLMError):
    """The model exists but is not ready yet (the embedded model's runtime is being
    prepared, `llm.runtime`): the same request succeeds in about `retry_after` s."""

    kind = "model_not_ready"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderError(LLMError):
    kind = "provider_error"
    #: True when trying the same request again may succeed
    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "") -> None:
        super().__init__(message)
        self.provider = provider


class ProviderHTTPError(ProviderError):
    kind = "provider_http_error"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        provider: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"HTTP {status}: {message}", provider=provider)
        self.status = status
        self.provider_message = message
        self.retry_after = retry_after
        self.retryable = status == 429 or status >= 500


class ProviderConnectionError(ProviderError):
    kind = "provider_connection_error"
    retryable = True


class ProviderTimeout(ProviderError):
    kind = "provider_timeout"

    def __init__(self, message: str, *, phase: str, provider: str = "") -> None:
        super().__init__(message, provider=provider)
        #: "connect", "first_token" or "idle"
        self.phase = phase
        self.retryable = phase != "idle"


class ProviderStreamError(ProviderError):
    kind = "provider_stream_error"

    def __init__(self, message: str, *, provider: str = "", code: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.code = code


CUT_SHORT = "the provider closed the stream before finishing"


class ProviderIncomplete(ProviderError):
    """The body ended, well-formed as far as HTTP goes, without the provider saying the
    answer was finished (no finish reason, no `message_stop`): a connection closed
    mid-answer, a proxy that timed out. What came before it is a partial answer."""

    kind = "provider_incomplete"
    retryable = True  # a proxy's time limit or a restart: the next try may well finish

    def __init__(self, message: str = CUT_SHORT, *, provider: str = "") -> None:
        super().__init__(message, provider=provider)
