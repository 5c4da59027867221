"""OpenAI's error shape, and where each streamkeep failure lands in it.

Every gateway error is `{"error": {"message", "type", "param", "code"}}` (a superset of
the chat API's `{"error": {"type", "message"}}`), so the OpenAI SDK raises its own
exception classes (BadRequestError, NotFoundError, ...) for our failures too.

    400  invalid_request_error   a malformed body (param names the field), n > 1, text
                                 UTF-8 cannot encode or holding NUL (`streamkeep.text`)
    404  invalid_request_error   an unknown model (code model_not_found) or chat id
    409  invalid_request_error   the chat named by x-streamkeep-chat-id is generating
    413  invalid_request_error   a message over max_message_chars (code message_too_long)
    413  request_too_large       a body over max_body_bytes (`server.errors.body_too_large`)
    4xx  (the provider's)        the provider refused the request: passed through
    502  upstream_error          the provider failed (5xx, broken connection, in-stream)
    503  service_unavailable     the model is not configured, or we are shutting down,
                                 or it is being prepared (code model_not_ready,
                                 with Retry-After)
    504  timeout                 the provider did not answer in time
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from streamkeep.llm.errors import (
    ConfigurationError,
    LLMError,
    ModelNotReady,
    ProviderHTTPError,
    ProviderTimeout,
    UnknownModelError,
)


class GatewayError(Exception):
    """A failure the gateway answers with one OpenAI-shaped error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self, extra_headers: dict[str, str] | None = None) -> Response:
        headers = {**self.headers, **(extra_headers or {})}
        return Response(
            orjson.dumps(self.body()),
            status_code=self.status,
            media_type="application/json",
            headers=headers,
        )


def invalid_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param)


def from_llm_error(error: LLMError) -> GatewayError:
    """The response for a failure that happened before the first byte was sent."""
    if isinstance(error, UnknownModelError):
        return GatewayError(404, error.message, param="model", code="model_not_found")
    if isinstance(error, ModelNotReady):
        headers = {"retry-after": str(error.retry_after)}
        return GatewayError(
            503, error.message, type="service_unavailable", code=error.kind, headers=headers
        )
    if isinstance(error, ConfigurationError):
        return GatewayError(503, error.message, type="service_unavailable", code=error.kind)
    if isinstance(error, ProviderHTTPError) and 400 <= error.status < 500:
        # The provider refused the request itself: the client should see exactly that.
        headers = {}
        if error.retry_after is not None:
            headers["retry-after"] = f"{error.retry_after:g}"
        kind = "rate_limit_error" if error.status == 429 else "invalid_request_error"
        return GatewayError(error.status, error.provider_message, type=kind, headers=headers)
    if isinstance(error, ProviderTimeout):
        return GatewayError(504, error.message, type="timeout", code=error.phase)
    return GatewayError(502, error.message, type="upstream_error", code=error.kind)


def stream_error_payload(error: LLMError | None, text: str) -> dict[str, Any]:
    """The `error` object of the final chunk when a stream fails after its first byte.

    `error` is the provider's failure when known; `text` is what the generation stored.
    """
    if error is None:
        return {"message": text, "type": "server_error", "param": None, "code": None}
    status = getattr(error, "status", None)
    kind = "timeout" if isinstance(error, ProviderTimeout) else "upstream_error"
    if isinstance(status, int) and 400 <= status < 500:
        kind = "invalid_request_error"
    code = getattr(error, "code", None) or error.kind
    return {"message": error.message, "type": kind, "param": None, "code": code}
