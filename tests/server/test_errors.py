"""The one table from error kind to status (`server.errors`), on a bare app: each kind of
failure a route raises answers with its status and the one JSON shape."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from redis import exceptions as redis_exc
from sqlalchemy import exc as sa_exc

from streamkeep.generation.errors import GenerationError, ShuttingDown
from streamkeep.http.auth import IdentityUnavailable, Unauthorized
from streamkeep.http.limits import LimitExceeded
from streamkeep.llm.errors import LLMError, ProviderTimeout, UnknownModelError
from streamkeep.server.errors import ANSWERS, RequestRefused, install
from streamkeep.store.errors import (
    EventSeqMoved,
    GenerationConflict,
    InvalidOperation,
    NotFound,
    StoreError,
)
from streamkeep.tools import UnknownTools


async def answer(exc: Exception) -> httpx.Response:
    app = FastAPI()
    install(app)

    @app.get("/fail")
    async def fail() -> None:
        raise exc

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/fail")


CASES = [
    (NotFound("chat", "chat_x"), 404, "not_found", "chat 'chat_x' not found"),
    (UnknownModelError("no model 'a/b'"), 404, "unknown_model", "no model 'a/b'"),
    (InvalidOperation("a bad cursor"), 422, "invalid_operation", "a bad cursor"),
    (RequestRefused(413, "message_too_long", "too long"), 413, "message_too_long", "too long"),
    (ShuttingDown(), 503, "shutting_down", "the server is shutting down"),
    (
        sa_exc.OperationalError("SELECT 1", {}, ConnectionError("gone")),
        503,
        "database_unavailable",
        "the database is not reachable",
    ),
    (ConnectionRefusedError(), 503, "database_unavailable", "the database is not reachable"),
    (redis_exc.ConnectionError("gone"), 503, "redis_unavailable", "Redis is not reachable"),
]


@pytest.mark.parametrize(("exc", "status", "kind", "message"), CASES)
async def test_each_kind_answers_with_its_status(
    exc: Exception, status: int, kind: str, message: str
) -> None:
    r = await answer(exc)
    assert r.status_code == status
    assert r.json() == {"error": {"type": kind, "message": message}}


async def test_a_conflict_names_the_generation() -> None:
    r = await answer(GenerationConflict(generation_id="gen_1", message_id="msg_1", same_key=False))
    assert r.status_code == 409
    assert r.json()["error"] == {
        "type": "generation_conflict",
        "message": "chat has a running generation 'gen_1'",
        "generation_id": "gen_1",
        "message_id": "msg_1",
        "running": True,
    }


@pytest.mark.parametrize("exc", [ShuttingDown(), redis_exc.TimeoutError("slow")])
async def test_try_again_soon_says_when(exc: Exception) -> None:
    assert (await answer(exc)).headers["retry-after"] == "1"


async def test_a_dropped_connection_under_a_statement_is_the_database_away() -> None:
    dropped = sa_exc.DBAPIError("SELECT 1", {}, Exception("reset"), connection_invalidated=True)
    assert (await answer(dropped)).json()["error"]["type"] == "database_unavailable"


@pytest.mark.parametrize(
    "exc",
    [
        EventSeqMoved("chat_x", 5),
        ProviderTimeout("slow", phase="idle"),
        sa_exc.DBAPIError("SELECT 1", {}, Exception("syntax")),
        ValueError("a bug"),
    ],
)
async def test_a_kind_the_table_does_not_know_is_a_500_without_internals(exc: Exception) -> None:
    r = await answer(exc)
    assert r.status_code == 500
    assert r.json() == {"error": {"type": "internal_error", "message": "internal server error"}}


def _kinds(base: type[Exception]) -> set[str]:
    found = {str(getattr(base, "kind", ""))}
    for sub in base.__subclasses__():
        found |= _kinds(sub)
    return found


def test_every_row_of_the_table_is_a_kind_something_raises() -> None:
    domain = _kinds(StoreError) | _kinds(LLMError) | _kinds(GenerationError)
    domain |= {Unauthorized.kind, IdentityUnavailable.kind, LimitExceeded.kind, UnknownTools.kind}
    infrastructure = {"database_unavailable", "redis_unavailable"}
    assert set(ANSWERS) <= domain | infrastructure
