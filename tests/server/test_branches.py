"""Regenerate and edit add siblings; PATCH active_leaf_id switches between them."""

from __future__ import annotations

from tests.server.conftest import Server
from tests.server.sse import read_all, text_of


async def _stream(server: Server, path: str, body: dict[str, str] | None = None) -> str:
    async with server.client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, await r.aread()
        evts = await read_all(r)
    assert evts[0].data["messageId"] == r.headers["x-streamkeep-message-id"]
    return text_of(evts)


async def _branch(server: Server, chat_id: str) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = (await server.client.get(f"/api/chats/{chat_id}")).json()[
        "messages"
    ]
    return messages


async def test_regenerate_edit_and_switch_branch(server: Server) -> None:
    chat = await server.new_chat()
    await _stream(server, f"/api/chats/{chat['id']}/messages", {"content": "one"})
    user, first = await _branch(server, chat["id"])

    text = await _stream(server, f"/api/messages/{first['id']}/regenerate")
    assert text == "Hello! You said: one"
    user2, second = await _branch(server, chat["id"])
    assert user2["id"] == user["id"]
    assert second["id"] != first["id"]
    assert second["sibling_ids"] == [first["id"], second["id"]]

    text = await _stream(server, f"/api/messages/{user['id']}/edit", {"content": "two"})
    assert text == "Hello! You said: two"
    edited, _ = await _branch(server, chat["id"])
    assert edited["parts"] == [{"type": "text", "text": "two"}]
    assert edited["sibling_ids"] == [user["id"], edited["id"]]

    # Back to the first branch's first answer.
    r = await server.client.patch(f"/api/chats/{chat['id']}", json={"active_leaf_id": first["id"]})
    assert r.status_code == 200
    assert [m["id"] for m in await _branch(server, chat["id"])] == [user["id"], first["id"]]


async def test_bad_regenerate_and_edit_change_nothing(server: Server) -> None:
    chat = await server.new_chat()
    await _stream(server, f"/api/chats/{chat['id']}/messages", {"content": "one"})
    user, answer = await _branch(server, chat["id"])
    c = server.client
    assert (await c.post("/api/messages/msg_nope/regenerate")).status_code == 404
    assert (await c.post("/api/messages/msg_nope/edit", json={"content": "x"})).status_code == 404
    r = await c.post(f"/api/messages/{answer['id']}/edit", json={"content": "x"})
    assert r.status_code == 422  # only user messages can be edited
    r = await c.post(f"/api/messages/{user['id']}/edit", json={"content": ""})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "content"
    r = await c.patch(f"/api/chats/{chat['id']}", json={"active_leaf_id": "msg_nope"})
    assert r.status_code == 422
    assert [m["id"] for m in await _branch(server, chat["id"])] == [user["id"], answer["id"]]
    assert len(server.upstream.requests) == 1
