"""Every failure as one JSON shape: `{"error": {"type": "...", "message": "..."}}`.

The domain raises its own exceptions (store, llm, generation); this module is the one
place that maps them onto HTTP statuses, so routes never build error responses:

    400  http_error                    a body that cannot be read (not UTF-8)
    404  not_found, unknown_model      an id or model nobody knows
    405  http_error                    a method the path does not take (`Allow` lists them)
    409  generation_conflict           the chat already has a running generation
    413  message_too_long              content over settings.max_message_chars
    413  request_too_large             a body over settings.max_body_bytes (every path)
    422  invalid_request, invalid_operation   a malformed or impossible request
    503  shutting_down, database_unavailable, redis_unavailable  try again later

An `invalid_request` names its `field` (`"body"` when the JSON itself is broken, with
the line and column in the message). A 500 is a bug; it still answers in the same
shape, without internals.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import exceptions as redis_exc
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException
from starlette.routing import Match, Mount

from streamkeep.llm.errors import UnknownModelError
from streamkeep.store.errors import GenerationConflict, InvalidOperation, NotFound

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error a route raises directly, with its status and machine-readable type."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.message = message


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


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.type, exc.message)


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFound)
    return error_response(404, "not_found", exc.message)


async def _unknown_model(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownModelError)
    return error_response(404, "unknown_model", exc.message)


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GenerationConflict)
    return error_response(
        409,
        "generation_conflict",
        exc.message,
        generation_id=exc.generation_id,
        message_id=exc.message_id,
        running=exc.running,
    )


async def _invalid(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidOperation)
    return error_response(422, "invalid_operation", exc.message)


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


async def _database(request: Request, exc: Exception) -> JSONResponse:
    # A connection-level failure is the database being away, not a bug in us.
    log.warning("database unavailable: %s", exc)
    return error_response(503, "database_unavailable", "the database is not reachable")


async def _dbapi(request: Request, exc: Exception) -> JSONResponse:
    # The connection died under a statement (the server restarted or ended the
    # session): the driver's error is a plain DBAPIError, but SQLAlchemy knows.
    assert isinstance(exc, sa_exc.DBAPIError)
    if exc.connection_invalidated:
        return await _database(request, exc)
    return await _unexpected(request, exc)


async def _redis(request: Request, exc: Exception) -> JSONResponse:
    # Only what needs another worker fails (its stream, its stop): this one's replies
    # run on, their frames waiting for Redis.
    log.warning("Redis unavailable: %s", exc)
    response = error_response(503, "redis_unavailable", "Redis is not reachable")
    response.headers["retry-after"] = "1"
    return response


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal_error", "internal server error")


def install(app: FastAPI, *, shutting_down: type[Exception] | None = None) -> None:
    """Register the handlers; `shutting_down` is the manager's refusal (-> 503)."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(UnknownModelError, _unknown_model)
    app.add_exception_handler(GenerationConflict, _conflict)
    app.add_exception_handler(InvalidOperation, _invalid)
    for db_exc in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError):
        app.add_exception_handler(db_exc, _database)
    app.add_exception_handler(sa_exc.DBAPIError, _dbapi)
    app.add_exception_handler(ConnectionRefusedError, _database)
    for redis_error in (redis_exc.ConnectionError, redis_exc.TimeoutError):
        app.add_exception_handler(redis_error, _redis)
    if shutting_down is not None:
        app.add_exception_handler(shutting_down, _shutting_down)
    app.add_exception_handler(Exception, _unexpected)


async def _shutting_down(request: Request, exc: Exception) -> JSONResponse:
    response = error_response(503, "shutting_down", "the server is shutting down")
    response.headers["retry-after"] = "1"
    return response
