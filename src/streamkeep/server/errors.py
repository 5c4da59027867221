"""Every failure as one JSON shape: `{"error": {"type": "...", "message": "..."}}`.

The domain raises its own exceptions, each with its `kind` (`StoreError`, `LLMError`,
`GenerationError`); routes raise `RequestRefused` with a status of their own. This
module is the one place that maps them onto HTTP statuses, so routes never build error
responses. One handler answers them all from the table `ANSWERS`, kind -> status
(exceptions of other libraries get their kind first, from `FOREIGN_KINDS`, as httpx
maps httpcore's exceptions onto its own):

    400  http_error                    a body that cannot be read (not UTF-8)
    401  unauthorized                  no credentials, or ones that do not work
    404  not_found, unknown_model      an id or model nobody knows
    405  http_error                    a method the path does not take (`Allow` lists them)
    409  generation_conflict           the chat already has a running generation
    413  message_too_long              content over settings.max_message_chars
    413  request_too_large             a body over settings.max_body_bytes (every path)
    422  invalid_request, invalid_operation   a malformed or impossible request
    429  rate_limited                  over a limit of the user's or key's (`Retry-After`)
    503  shutting_down, database_unavailable, redis_unavailable  try again later
    503  model_not_ready               the embedded model is being prepared (`Retry-After`)
    503  configuration_error           the model cannot be used as configured (says why)

An `invalid_request` names its `field` (`"body"` when the JSON itself is broken, with
the line and column in the message). A kind the table does not know is a bug: a 500,
in the same shape, without internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import exceptions as redis_exc
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from streamkeep.generation.errors import GenerationError
from streamkeep.http.auth import IdentityUnavailable, Unauthorized
from streamkeep.http.limits import LimitExceeded
from streamkeep.llm.errors import LLMError, ModelNotReady
from streamkeep.store.errors import StoreError
from streamkeep.tools import UnknownTools

logger = logging.getLogger(__name__)


class RequestRefused(Exception):
    """A request a route refuses, with its own status and `kind` (the body's `type`)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class Answer:
    """How the API answers one kind of failure."""

    status: int
    #: said instead of the exception's own message (which may name internals)
    message: str | None = None
    #: attributes of the exception the error body carries too
    fields: tuple[str, ...] = ()
    #: a `retry-after: 1` header: the same request will soon succeed
    retry: bool = False
    #: headers the response carries too
    headers: tuple[tuple[str, str], ...] = ()


ANSWERS: dict[str, Answer] = {
    "unauthorized": Answer(401, headers=(("www-authenticate", "Bearer"),)),
    "not_found": Answer(404),
    "unknown_model": Answer(404),
    "generation_conflict": Answer(409, fields=("generation_id", "message_id", "running")),
    "invalid_operation": Answer(422),
    "invalid_request": Answer(422, fields=("field", "fields")),
    "rate_limited": Answer(429),
    "invalid_image": Answer(400),
    "images_not_supported": Answer(400),
    "image_too_large": Answer(413),
    "unsupported_image_type": Answer(415),
    "shutting_down": Answer(503, "the server is shutting down", retry=True),
    # The embedded model's runtime is being prepared (`llm.runtime`).
    "model_not_ready": Answer(503, fields=("retry_after",)),
    "configuration_error": Answer(503),
    "database_unavailable": Answer(503, "the database is not reachable"),
    # A JWT's signing keys (the product's JWKS) could not be fetched.
    "identity_unavailable": Answer(503, retry=True),
    # Only what needs another worker fails (its stream, its stop): this one's replies
    # run on, their frames waiting for Redis.
    "redis_unavailable": Answer(503, "Redis is not reachable", retry=True),
}

#: Other libraries' exceptions, by the kind of failure they are.
FOREIGN_KINDS: tuple[tuple[type[Exception], str], ...] = (
    (sa_exc.OperationalError, "database_unavailable"),
    (sa_exc.InterfaceError, "database_unavailable"),
    (sa_exc.TimeoutError, "database_unavailable"),
    (ConnectionRefusedError, "database_unavailable"),
    (redis_exc.ConnectionError, "redis_unavailable"),
    (redis_exc.TimeoutError, "redis_unavailable"),
)

# What the handler is registered for; anything else is a 500 from `_unexpected`.
_DOMAIN = (
    RequestRefused,
    StoreError,
    LLMError,
    GenerationError,
    Unauthorized,
    IdentityUnavailable,
    LimitExceeded,
    UnknownTools,
)
_HANDLED = (*_DOMAIN, sa_exc.DBAPIError, *(cls for cls, _ in FOREIGN_KINDS))


def error_response(status: int, type: str, message: str, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"type": type, "message": message, **extra}
    return JSONResponse({"error": body}, status_code=status)


def body_too_large(limit: int) -> JSONResponse:
    """The answer to a request body over `limit` bytes, on every path. It also carries
    OpenAI's `param` and `code`, so the gateway's clients read it as one of theirs."""
    message = f"the request body is larger than the limit of {limit} bytes"
    return error_response(413, "request_too_large", message, param=None, code="request_too_large")


def _field_name(loc: Sequence[Any]) -> str:
    # ("body", "content") -> "content"; the location kind is implied by the message.
    if not loc:
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0])


def _message(error: Any) -> str:
    if error.get("type") == "string_unicode":  # pydantic's own, for a key of the body
        return "must be valid Unicode: a lone surrogate cannot be encoded as UTF-8"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return _invalid_json(first, exc.body)
    field = _field_name(first.get("loc", ("body",)))
    message = f"{field}: {_message(first)}"
    fields = [{"field": _field_name(e.get("loc", ())), "message": _message(e)} for e in errors]
    return error_response(422, "invalid_request", message, field=field, fields=fields)


def _invalid_json(error: Any, document: Any) -> JSONResponse:
    """Where the body's JSON breaks, in the gateway's words for the same body (it parses
    with orjson): `unexpected character, expected ',' or '}': line 3 column 3 (char
    19)`. FastAPI parsed it with `json`, whose own words are the fallback."""
    if isinstance(document, str):
        try:
            orjson.loads(document)
        except orjson.JSONDecodeError as exc:
            return _bad_body(f"The request body is not valid JSON: {exc}")
    loc = error.get("loc", ())
    where = str((error.get("ctx") or {}).get("error", "invalid JSON"))
    if len(loc) == 2 and isinstance(loc[1], int) and isinstance(document, str):
        where = str(json.JSONDecodeError(where, document, loc[1]))
    return _bad_body(f"The request body is not valid JSON: {where}")


def _bad_body(message: str) -> JSONResponse:
    """A body that is not a JSON document at all: the field is the body itself."""
    fields = [{"field": "body", "message": message}]
    return error_response(422, "invalid_request", message, field="body", fields=fields)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 413:  # a body over the limit, counted as it was read
        return body_too_large(request.app.state.settings.max_body_bytes)
    if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
        # FastAPI's answer to a JSON body that is not UTF-8 (nor UTF-16/32).
        cause = exc.__cause__
        return _bad_body(
            "The request body is not valid JSON: it is not UTF-8 "
            f"(byte 0x{cause.object[cause.start]:02x} at position {cause.start})"
        )
    kind = "not_found" if exc.status_code == 404 else "http_error"
    response = error_response(exc.status_code, kind, str(exc.detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405 and (methods := _route_methods(request)):
        # Starlette names the methods of the one route it tried; a path has a route
        # per method (GET and POST /api/chats), and `Allow` must list them all.
        response.headers["allow"] = ", ".join(sorted(methods))
    return response


def _route_methods(request: Request) -> set[str]:
    """The methods some route (not a mount: the page's files) takes on this path."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    return {
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    }


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def _kind(exc: Exception) -> str | None:
    """The kind of failure `exc` is, when this module knows it."""
    if isinstance(exc, _DOMAIN):
        return exc.kind
    for cls, kind in FOREIGN_KINDS:
        if isinstance(exc, cls):
            return kind
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        # The connection died under a statement (the server restarted or ended the
        # session): the driver's error is a plain DBAPIError, but SQLAlchemy knows.
        return "database_unavailable"
    return None


async def _known(request: Request, exc: Exception) -> JSONResponse:
    kind = _kind(exc)
    answer = Answer(exc.status) if isinstance(exc, RequestRefused) else ANSWERS.get(kind or "")
    if kind is None or answer is None:
        return await _unexpected(request, exc)
    if not isinstance(exc, _DOMAIN):
        # The database or Redis being away, not a bug in us.
        logger.warning("%s: %s", kind, exc)
    message = answer.message or str(exc)
    extra = {name: getattr(exc, name) for name in answer.fields}
    response = error_response(answer.status, kind, message, **extra)
    if answer.retry:
        response.headers["retry-after"] = "1"
    response.headers.update(dict(answer.headers))
    if isinstance(exc, LimitExceeded):
        response.headers.update(exc.headers)
    if isinstance(exc, ModelNotReady):
        response.headers["retry-after"] = str(exc.retry_after)
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    """Register the handlers."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    for cls in _HANDLED:
        app.add_exception_handler(cls, _known)
    app.add_exception_handler(Exception, _unexpected)
