"""Admin endpoints: every user with their usage, disabling a user (their live replies
stopped and stored, their credentials refused at once), every user's chats; anyone
but an admin is answered as if the paths did not exist.

Real uvicorn, real SQLite and PostgreSQL (the `server` fixture), the fake upstream.
"""

from __future__ import annotations

from typing import Any

from tests.server.conftest import Server
from tests.server.isolation import SLOW
from tests.server.sse import events, until
from tests.server.team import PASSWORD, chat_reply, gateway_reply, signed_in, team
from tests.store.usage_sums import summed_usage

ADMIN_CALLS: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/api/admin/users", {}),
    ("POST", "/api/admin/users/alice/disable", {}),
    ("POST", "/api/admin/users/nobody/disable", {}),
    ("GET", "/api/admin/chats", {}),
    ("GET", "/api/admin/chats", {"params": {"user": "alice", "limit": "x"}}),
]


async def test_anyone_but_an_admin_finds_no_admin_paths(server: Server) -> None:
    async with team(server, {"root": 1, "alice": 1, "bob": 1}, admins=("root",)) as members:
        bob = members["bob"].client
        unknown = await bob.get("/api/admin/nothing-here")
        assert unknown.status_code == 404
        for method, path, kwargs in ADMIN_CALLS:
            r = await bob.request(method, path, **kwargs)
            assert (r.status_code, r.json()) == (404, unknown.json()), (method, path)
        async with signed_in(server, "bob") as page:  # a session is no different
            r = await page.get("/api/admin/users")
            assert (r.status_code, r.json()) == (404, unknown.json())
        # Nothing happened: alice still works, and still is not disabled.
        assert (await members["alice"].client.get("/api/me")).status_code == 200
        # Without credentials it is the 401 of every path under /api/.
        assert (await server.client.get("/api/admin/users")).status_code == 401
        # The admin reaches them.
        root = members["root"].client
        assert (await root.get("/api/admin/users")).status_code == 200
        assert (await root.get("/api/admin/chats")).status_code == 200


async def test_with_auth_off_the_single_user_is_the_admin(server: Server) -> None:
    chat = await server.new_chat()
    assert (await server.client.get("/api/admin/users")).json() == {"items": []}
    chats = (await server.client.get("/api/admin/chats")).json()["items"]
    assert [(c["id"], c["owner"]) for c in chats] == [(chat["id"], None)]
    r = await server.client.post("/api/admin/users/nobody/disable")
    assert r.status_code == 404 and r.json()["error"]["message"] == "user 'nobody' not found"


async def test_every_user_with_their_usage(server: Server) -> None:
    async with team(server, {"root": 1, "alice": 1, "bob": 1}, admins=("root",)) as members:
        await chat_reply(members["alice"].client, "[[tokens=3]] hi")  # 2 in, 3 out
        await gateway_reply(members["alice"].client, "[[tokens=1]] a b c")  # 4 in, 1 out
        await chat_reply(members["bob"].client, "[[tokens=2]] yo")  # 2 in, 2 out
        r = await members["root"].client.get("/api/admin/users")
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert [(u["name"], u["is_admin"]) for u in items] == [
            ("root", True),
            ("alice", False),
            ("bob", False),
        ]
        by_user = await summed_usage(server.store, server.app.state.database, "user")
        nothing = dict.fromkeys(by_user["alice"], 0) | {"estimated": False}
        for user in items:
            assert user["usage"] == by_user.get(user["name"], nothing), user["name"]
        usage = {u["name"]: u["usage"] for u in items}
        assert (usage["alice"]["messages"], usage["alice"]["input_tokens"]) == (2, 6)
        assert (usage["alice"]["output_tokens"], usage["bob"]["output_tokens"]) == (4, 2)
        assert usage["root"]["messages"] == 0


async def test_every_users_chats_with_their_owners(server: Server) -> None:
    async with team(server, {"root": 1, "alice": 1, "bob": 1}, admins=("root",)) as members:
        root, alice, bob = (members[n].client for n in ("root", "alice", "bob"))
        made = {}
        for name, client in (("alice", alice), ("bob", bob), ("alice", alice), ("root", root)):
            chat = (await client.post("/api/chats", json={"title": f"of {name}"})).json()
            made[chat["id"]] = name
        listed = (await root.get("/api/admin/chats")).json()
        assert {c["id"]: c["owner"] for c in listed["items"]} == made
        assert all(c["title"] == f"of {c['owner']}" for c in listed["items"])
        assert "user_id" not in listed["items"][0]

        only = (await root.get("/api/admin/chats", params={"user": "alice"})).json()["items"]
        assert sorted(c["id"] for c in only) == sorted(i for i, n in made.items() if n == "alice")
        r = await root.get("/api/admin/chats", params={"user": "nobody"})
        assert r.status_code == 404

        # Pages: one chat at a time, newest first, every chat once.
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": "1", **({"cursor": cursor} if cursor else {})}
            page = (await root.get("/api/admin/chats", params=params)).json()
            seen += [c["id"] for c in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [c["id"] for c in listed["items"]]

        # The normal list stays the caller's own, the admin's included.
        mine = (await root.get("/api/chats")).json()["items"]
        assert [made[c["id"]] for c in mine] == ["root"]
        assert {made[c["id"]] for c in (await bob.get("/api/chats")).json()["items"]} == {"bob"}


async def test_disabling_a_user_stops_their_live_replies_and_refuses_them_at_once(
    server: Server,
) -> None:
    async with team(server, {"root": 1, "alice": 2, "bob": 1}, admins=("root",)) as members:
        root, bob = members["root"].client, members["bob"].client
        alice_keys = [k.client for k in members["alice"].keys]
        async with signed_in(server, "alice") as page:
            alice_chats = [
                (await c.post("/api/chats", json={})).json()["id"] for c in (*alice_keys, page)
            ]
            bob_chat = (await bob.post("/api/chats", json={})).json()["id"]
            async with (
                alice_keys[0].stream(
                    "POST", f"/api/chats/{alice_chats[0]}/messages", json={"content": SLOW}
                ) as first,
                page.stream(
                    "POST", f"/api/chats/{alice_chats[2]}/messages", json={"content": SLOW}
                ) as second,
                bob.stream(
                    "POST", f"/api/chats/{bob_chat}/messages", json={"content": SLOW}
                ) as bobs,
            ):
                streams = [events(r) for r in (first, second, bobs)]
                seen = [await until(s, "text-delta") for s in streams]  # all three are live

                r = await root.post("/api/admin/users/alice/disable")
                assert r.status_code == 200, r.text
                body = r.json()
                assert sorted(body["stopped"]) == sorted([alice_chats[0], alice_chats[2]])
                assert body["user"]["name"] == "alice" and body["user"]["disabled_at"]

                # Refused at once: both keys and the session, on the next request.
                for client in (*alice_keys, page):
                    assert (await client.get("/api/me")).status_code == 401
                r = await server.client.post(
                    "/api/auth/login", json={"name": "alice", "password": PASSWORD}
                )
                assert r.status_code == 401

                # Her live replies end as stopped; bob's runs on.
                for i in (0, 1):
                    seen[i] += [e async for e in streams[i]]
                    assert seen[i][-1].type == "[DONE]"
                    assert "abort" in [e.type for e in seen[i]]
                assert (await bob.get(f"/api/chats/{bob_chat}")).json()["active_generation"]
                seen[2] += [e async for e in streams[2]]
                assert "abort" not in [e.type for e in seen[2]]

        for chat_id, status in (
            (alice_chats[0], "stopped"),
            (alice_chats[2], "stopped"),
            (bob_chat, "complete"),
        ):
            reply = (await server.store.active_branch(chat_id))[-1]
            assert (reply.role, reply.status) == ("assistant", status), chat_id
            assert await server.store.running_generation(chat_id) is None
        assert (await server.store.active_branch(alice_chats[1])) == []  # never asked

        listed = (await root.get("/api/admin/users")).json()["items"]
        assert [u["name"] for u in listed if u["disabled_at"]] == ["alice"]
        # Again: nothing left to stop, and the first disabled_at stays.
        again = (await root.post("/api/admin/users/alice/disable")).json()
        assert again == {"user": body["user"], "stopped": []}


async def test_an_admin_cannot_disable_themselves(server: Server) -> None:
    async with team(server, {"root": 1}, admins=("root",)) as members:
        r = await members["root"].client.post("/api/admin/users/root/disable")
        assert r.status_code == 422 and r.json()["error"]["type"] == "invalid_operation"
        assert (await members["root"].client.get("/api/me")).status_code == 200
