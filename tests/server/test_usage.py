"""Usage: every reply keeps the API key it was asked with, and `GET /api/usage` sums
the stored replies per user, model, day and key, for whom the caller may see.

Real uvicorn, real SQLite and PostgreSQL (the `server` fixture), the fake upstream,
whose usage reports are exact: input tokens are the words of the prompt, output tokens
the chunks sent (see tests/fakes/upstream.py).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streamkeep.cli import main as cli_main
from streamkeep.store import Database
from tests.server.conftest import Server
from tests.server.team import Member, chat_reply, gateway_reply, signed_in, streamed, team
from tests.store.usage_sums import as_sums, summed_usage


async def test_each_reply_keeps_the_key_it_was_asked_with(server: Server) -> None:
    async with team(server, {"alice": 2, "bob": 1}) as members:
        alice, bob = members["alice"], members["bob"]
        a1, a2 = alice.keys
        kept: dict[str, str | None] = {}  # reply id -> the key it must have

        first = await chat_reply(a1.client, "hello")
        kept[first.message_id] = a1.id
        prompt = (await server.store.get_message(first.message_id)).parent_id
        assert prompt is not None
        again = await streamed(a2.client, f"/api/messages/{first.message_id}/regenerate", {})
        kept[again.message_id] = a2.id
        edited = await streamed(a2.client, f"/api/messages/{prompt}/edit", {"content": "hey"})
        kept[edited.message_id] = a2.id

        ui = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "hi"}]}
        use = await streamed(a1.client, "/api/chat", {"id": "chat-ui", "messages": [ui]})
        kept[use.message_id] = a1.id
        body = {"id": "chat-ui", "messages": [], "trigger": "regenerate-message"}
        kept[(await streamed(a2.client, "/api/chat", body)).message_id] = a2.id

        called = await gateway_reply(a2.client, "hi")
        kept[called.message_id] = a2.id
        continued = await gateway_reply(a1.client, "more", chat_id=called.chat_id, stream=True)
        kept[continued.message_id] = a1.id

        kept[(await chat_reply(bob.client, "hi")).message_id] = bob.keys[0].id
        async with signed_in(server, "alice") as page:  # the page's session: no key
            kept[(await chat_reply(page, "hi")).message_id] = None

        for message_id, key_id in kept.items():
            message = await server.store.get_message(message_id)
            assert (message.role, message.api_key_id) == ("assistant", key_id), message_id
            if message.parent_id is not None:  # the prompt is the user's, not the key's
                assert (await server.store.get_message(message.parent_id)).api_key_id is None


GROUPS = ("user", "model", "day", "key")


def database(server: Server) -> Database:
    db: Database = server.app.state.database
    return db


def counts(messages: int, i: int, o: int, r: int = 0, c: int = 0) -> dict[str, Any]:
    """An exact (not estimated) group's numbers."""
    return {
        "messages": messages,
        "input_tokens": i,
        "output_tokens": o,
        "reasoning_tokens": r,
        "cached_input_tokens": c,
        "estimated": False,
        "estimated_messages": 0,
    }


async def replies(server: Server, members: dict[str, Member]) -> None:
    """Replies of alice and bob, through the chat API, the gateway and a page session,
    each in a new chat so the fake's numbers are exact: input tokens are the words of
    the one user message, output tokens the chunks (reasoning included)."""
    alice, bob = members["alice"], members["bob"]
    await chat_reply(alice.keys[0].client, "[[tokens=3]] hi")  # 2 in, 3 out
    await gateway_reply(alice.keys[1].client, "[[tokens=4 reasoning=2]] one two")  # 4 in, 6 out
    await chat_reply(bob.client, "[[tokens=2]] yo")  # 2 in, 2 out
    await gateway_reply(bob.client, "[[tokens=1]] a b c", stream=True)  # 4 in, 1 out
    async with signed_in(server, "bob") as page:  # no key; no usage reported: estimated
        await chat_reply(page, "[[tokens=5 usage=false]] x")


async def report(client: Any, **params: str) -> dict[str, Any]:
    r = await client.get("/api/usage", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_usage_per_user_model_day_and_key_is_exact(server: Server) -> None:
    async with team(server, {"root": 1, "alice": 2, "bob": 1}, admins=("root",)) as members:
        await replies(server, members)
        root, alice, bob = members["root"], members["alice"], members["bob"]
        db = database(server)

        for group_by in GROUPS:  # the admin sees everyone's: the sum over every reply
            body = await report(root.client, group_by=group_by)
            assert body["group_by"] == group_by and body["from"] is body["to"] is None
            assert as_sums(body["items"]) == await summed_usage(server.store, db, group_by)
            totals = {
                k: sum(i[k] for i in body["items"]) for k in body["total"] if k != "estimated"
            }
            assert body["total"] == {**totals, "estimated": True}

        by_key = as_sums((await report(root.client, group_by="key"))["items"])
        a1, a2, b1 = alice.keys[0].prefix, alice.keys[1].prefix, bob.keys[0].prefix
        assert by_key[a1] == counts(1, 2, 3)
        assert by_key[a2] == counts(1, 4, 6, r=2)
        assert by_key[b1] == counts(2, 6, 3)
        assert by_key["(no key)"]["estimated_messages"] == 1
        assert list(by_key) == ["(no key)", *sorted([a1, a2, b1])]

        by_user = as_sums((await report(root.client, group_by="user"))["items"])
        assert by_user["alice"] == counts(2, 6, 9, r=2)
        assert by_user["bob"]["messages"] == 3 and by_user["bob"]["estimated"] is True
        assert set(by_user) == {"alice", "bob"}  # root asked for nothing
        by_day = (await report(root.client, group_by="day"))["items"]
        assert [d["messages"] for d in by_day] == [5]  # (a test run across midnight: 2 days)
        assert by_day[0]["group"] == datetime.now(UTC).date().isoformat() or len(by_day) == 2

        # A user sees only their own, per key, model, day...
        for member in (alice, bob):
            for group_by in GROUPS:
                body = await report(member.keys[-1].client, group_by=group_by)
                mine = await summed_usage(server.store, db, group_by, user_id=member.user_id)
                assert as_sums(body["items"]) == mine, (member.name, group_by)
        assert [i["group"] for i in (await report(bob.client, group_by="key"))["items"]] == [
            "(no key)",
            b1,
        ]
        assert [i["group"] for i in (await report(alice.client))["items"]] == ["alice"]
        # ...and naming themselves changes nothing; an admin names anyone.
        assert await report(bob.client, user="bob") == await report(bob.client)
        assert await report(root.client, user="bob") == await report(bob.client)
        only_alice = await report(root.client, group_by="key", user="alice")
        assert [i["group"] for i in only_alice["items"]] == sorted([a1, a2])


async def test_a_user_cannot_see_or_probe_another_users_usage(server: Server) -> None:
    async with team(server, {"root": 1, "alice": 2, "bob": 1}, admins=("root",)) as members:
        await replies(server, members)
        bob, root = members["bob"].client, members["root"].client
        for name in ("alice", "root", "nobody"):  # another user's name is as nobody's
            r = await bob.get("/api/usage", params={"user": name, "group_by": "key"})
            assert r.status_code == 404, r.text
            assert r.json() == {
                "error": {"type": "not_found", "message": f"user {name!r} not found"}
            }
        r = await root.get("/api/usage", params={"user": "nobody"})
        assert r.status_code == 404
        body = await report(bob, group_by="user")
        assert [i["group"] for i in body["items"]] == ["bob"]
        assert "alice" not in json.dumps(body)


async def test_from_and_to(server: Server) -> None:
    async with team(server, {"alice": 2, "bob": 1}) as members:
        await replies(server, members)
        alice = members["alice"].client
        db = database(server)
        # Split at the stored time of one reply: `from` takes it, `to` leaves it out.
        chats = (await members["bob"].client.get("/api/chats")).json()["items"]
        assert len(chats) == 3
        middle = (await server.store.active_branch(chats[1]["id"]))[-1].created_at
        at = middle.isoformat()
        for params, filters in (
            ({"from": at}, {"start": middle}),
            ({"to": at}, {"end": middle}),
            ({"from": at, "to": at}, {"start": middle, "end": middle}),
        ):
            for group_by in GROUPS:
                body = await report(alice, group_by=group_by, **params)
                assert as_sums(body["items"]) == await summed_usage(
                    server.store, db, group_by, user_id=members["alice"].user_id, **filters
                ), params
            body = await report(members["bob"].client, group_by="key", **params)
            expected = await summed_usage(
                server.store, db, "key", user_id=members["bob"].user_id, **filters
            )
            assert as_sums(body["items"]) == expected
            assert body["from"] == (at.replace("+00:00", "Z") if "from" in params else None)
        # A real split of bob's three: the middle one and the last, and the first.
        assert (await report(members["bob"].client, **{"from": at}))["total"]["messages"] == 2
        assert (await report(members["bob"].client, to=at))["total"]["messages"] == 1

        today = datetime.now(UTC).date()
        assert (await report(alice, **{"from": str(today + timedelta(days=1))}))["items"] == []
        assert (await report(alice, to="2000-01-01"))["total"]["messages"] == 0
        everything = await report(alice, **{"from": "2000-01-01", "to": "2100-01-01T00:00"})
        assert everything["items"] == (await report(alice))["items"]
        # Dates and times without a zone are UTC; with one, they are turned into UTC.
        assert everything["from"] == "2000-01-01T00:00:00Z"
        assert everything["to"] == "2100-01-01T00:00:00Z"
        shifted = await report(alice, **{"from": "2026-01-01T02:00:00+02:00"})
        assert shifted["from"] == "2026-01-01T00:00:00Z"

        for params in (
            {"from": "2026-02-01", "to": "2026-01-01"},
            {"from": "yesterday"},
            {"to": "2026-13-01"},
            {"group_by": "week"},
            # In range where written, not in UTC: no year 0 or 10000.
            {"from": "0001-01-01T00:00:00+01:00"},
            {"to": "9999-12-31T23:59:59-01:00"},
        ):
            r = await alice.get("/api/usage", params=params)
            assert r.status_code == 422, params
            assert r.json()["error"]["type"] == "invalid_request"


async def test_the_cli_prints_what_the_api_answers_an_admin(
    server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    async with team(server, {"root": 1, "alice": 2, "bob": 1}, admins=("root",)) as members:
        await replies(server, members)
        url = database(server).engine.url.render_as_string(hide_password=False)
        url = url.replace("+aiosqlite", "").replace("+asyncpg", "")

        async def cli(*argv: str) -> tuple[int, str, str]:
            # In a thread: the command runs its own event loop, as it does in a shell.
            code = await asyncio.to_thread(cli_main, ["usage", "--database-url", url, *argv])
            out, err = capsys.readouterr()
            return code, out, err

        root = members["root"].client
        for group_by in GROUPS:
            for params in ({}, {"user": "alice"}, {"from": "2000-01-01", "to": "2100-01-01"}):
                flags = [f"--{k}={v}" for k, v in params.items()]
                code, out, _ = await cli("--format", "json", "--group-by", group_by, *flags)
                assert code == 0
                api = await report(root, group_by=group_by, **params)
                assert json.loads(out) == api, (group_by, params)

        code, out, _ = await cli("--group-by", "key")  # the table: a row a group, the total
        assert code == 0
        assert "total" in out and members["bob"].keys[0].prefix in out and "(no key)" in out
        code, _, err = await cli("--user", "nobody")
        assert code == 1 and "nobody" in err
        code, _, err = await cli("--from", "2026-02-01", "--to", "2026-01-01")
        assert code == 2 and "--from is after --to" in err


async def test_with_auth_off_everything_is_the_single_users(server: Server) -> None:
    await chat_reply(server.client, "[[tokens=3]] hi")
    body = await report(server.client, group_by="user")
    assert body["items"] == [{"group": "(single-user)", **counts(1, 2, 3)}]
    assert body["total"] == counts(1, 2, 3)
    body = await report(server.client, group_by="key")
    assert [i["group"] for i in body["items"]] == ["(no key)"]
    r = await server.client.get("/api/usage", params={"user": "nobody"})
    assert r.status_code == 404
