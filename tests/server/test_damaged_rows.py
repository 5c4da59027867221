"""Rows damaged by other means (older versions, other tools) degrade every read instead
of failing it: the chat, one message, the chat list, the page's fetch, `chats export`,
and the next reply's prompt. The damage is written straight into the real database."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from streamkeep.cli import main as cli_main
from tests.pg import execute
from tests.server.conftest import Server
from tests.server.sse import read_all


async def chat_with_a_reply(server: Server) -> tuple[str, str, str]:
    """A chat with a user message and a complete reply: (chat, user, reply) ids."""
    chat = await server.new_chat(title="fine")
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "hello"}) as r:
        await read_all(r)
    user, reply = (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"]
    return chat["id"], user["id"], reply["id"]


async def damage(server: Server, *statements: tuple[str, dict[str, Any]]) -> None:
    """Run UPDATEs on the server's database through a connection of our own."""
    url = server.app.state.settings.resolved_database_url
    if server.app.state.database.is_sqlite:
        with sqlite3.connect(make_url(url).database or "", timeout=10) as conn:
            for sql, params in statements:
                conn.execute(sql, params)
        return
    for sql, params in statements:
        # asyncpg takes $n parameters; the values here are ids and literals of ours.
        for name, value in params.items():
            sql = sql.replace(f":{name}", f"'{value}'")
        await execute(url, sql)


async def read_everything(server: Server, chat_id: str) -> dict[str, Any]:
    """Every read a client makes of the chat, each of which must answer 200."""
    c = server.client
    chat = await c.get(f"/api/chats/{chat_id}")
    assert chat.status_code == 200, chat.text
    for message in chat.json()["messages"]:
        one = await c.get(f"/api/messages/{message['id']}")
        assert one.status_code == 200, one.text
        assert one.json() == message
    listed = await c.get("/api/chats")
    assert listed.status_code == 200, listed.text
    assert chat_id in [item["id"] for item in listed.json()["items"]]
    page = await c.get("/")  # the page itself, which then fetches the chat as above
    assert page.status_code == 200
    data: dict[str, Any] = chat.json()
    return data


async def export(server: Server, chat_id: str, fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    argv = ["chats", "--url", server.url, "export", chat_id, "--format", fmt]
    assert await asyncio.to_thread(cli_main, argv) == 0
    return capsys.readouterr().out


async def reply_still_works(server: Server, chat_id: str) -> None:
    path = f"/api/chats/{chat_id}/messages"
    async with server.client.stream("POST", path, json={"content": "and now?"}) as r:
        assert r.status_code == 200
        assert [e.type for e in await read_all(r)][-2:] == ["finish", "[DONE]"]


async def test_sqlite_rows_with_undecodable_text_or_bad_json_degrade(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    if not server.app.state.database.is_sqlite:
        pytest.skip("SQLite keeps any bytes as text and any text as JSON; PostgreSQL does not")
    chat_id, user_id, reply_id = await chat_with_a_reply(server)
    await damage(
        server,
        # What the chat API stored before it refused lone surrogates: the JSON escape.
        (
            "UPDATE messages SET parts = :p WHERE id = :id",
            {"p": '[{"type": "text", "text": "a \\ud800 b"}]', "id": user_id},
        ),
        # Not JSON at all, and bytes that are not UTF-8.
        (
            "UPDATE messages SET parts = 'not json', usage = '{\"input_tokens\": ',"
            " error = CAST(X'6F6B20FF' AS TEXT) WHERE id = :id",
            {"id": reply_id},
        ),
        ("UPDATE chats SET title = CAST(X'4869FF' AS TEXT) WHERE id = :id", {"id": chat_id}),
    )
    chat = await read_everything(server, chat_id)
    assert chat["title"] == "Hi\ufffd"
    user, reply = chat["messages"]
    assert user["parts"] == [{"type": "text", "text": "a \ufffd b"}]
    assert (reply["parts"], reply["usage"], reply["error"]) == ([], None, "ok \ufffd")
    exported = await export(server, chat_id, "md", capsys)
    assert exported.startswith("# Hi\ufffd\n") and "a \ufffd b" in exported
    assert json.loads(await export(server, chat_id, "json", capsys))["title"] == "Hi\ufffd"
    await reply_still_works(server, chat_id)
    sent = server.upstream.requests[-1]["messages"]
    assert sent[0] == {"role": "user", "content": "a \ufffd b"}


async def test_rows_whose_json_has_the_wrong_shape_degrade(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    chat_id, user_id, reply_id = await chat_with_a_reply(server)
    await damage(
        server,
        ('UPDATE messages SET parts = \'{"not": "a list"}\' WHERE id = :id', {"id": user_id}),
        (
            'UPDATE messages SET parts = \'[1, {"type": "text", "text": "kept"}]\','
            " usage = '[1, 2]' WHERE id = :id",
            {"id": reply_id},
        ),
    )
    user, reply = (await read_everything(server, chat_id))["messages"]
    assert user["parts"] == []
    assert (reply["parts"], reply["usage"]) == ([{"type": "text", "text": "kept"}], None)
    assert "kept" in await export(server, chat_id, "md", capsys)
    await reply_still_works(server, chat_id)
    sent = server.upstream.requests[-1]["messages"]
    assert sent[:2] == [
        {"role": "user", "content": ""},
        {"role": "assistant", "content": "kept"},
    ]
