"""Every failure as one JSON shape: `{"error": {"type": "...", "message": "..."}}`.

The domain raises its own exceptions (store, llm, generation); this module is the one
place that maps them onto HTTP statuses, so routes never build error responses:

    404  not_found, unknown_model      an id or model nobody knows
    409  generation_conflict           the chat already has a running generation
    413  message_too_long              content over settings.max_message_chars
    422  invalid_request, invalid_operation   a malformed or impossible request
    503  shutting_down, database_unavailable, redis_unavailable  try again later

A 500 is a bug; it still answers in the same shape, without internals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis import exceptions as redis_exc
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException

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


def _field_name(loc: Sequence[Any]) -> str:
    # ("body", "content") -> "content"; the location kind is implied by the message.
    if not loc:
        return "body"
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[0])


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _field_name(first.get("loc", ("body",)))
    message = f"{field}: {first.get('msg', 'invalid')}"
    fields = [{"field": _field_name(e.get("loc", ())), "message": e.get("msg", "")} for e in errors]
    return error_response(422, "invalid_request", message, field=field, fields=fields)


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
    kind = "not_found" if exc.status_code == 404 else "http_error"
    return error_response(exc.status_code, kind, str(exc.detail))


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
