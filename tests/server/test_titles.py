"""A chat created without a title is titled from its first user message, as the
gateway titles the chats it creates: the same function, whichever way the chat began."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import MODEL, Server
from tests.server.sse import read_all

LONG = (
    "Explain   in detail\nwhy the sky is blue, and why sunsets are red, orange and "
    "sometimes even green"
)


async def send(server: Server, chat_id: str, content: str) -> None:
    path = f"/api/chats/{chat_id}/messages"
    async with server.client.stream("POST", path, json={"content": content}) as r:
        assert r.status_code == 200
        await read_all(r)


async def title(server: Server, chat_id: str) -> Any:
    chat = (await server.client.get(f"/api/chats/{chat_id}")).json()
    listed = (await server.client.get("/api/chats")).json()["items"]
    assert [c["title"] for c in listed if c["id"] == chat_id] == [chat["title"]]
    return chat["title"]


async def test_the_first_user_message_titles_an_untitled_chat(server: Server) -> None:
    chat = await server.new_chat()
    assert chat["title"] is None
    await send(server, chat["id"], "  Name three\n  colours. ")
    assert await title(server, chat["id"]) == "Name three colours."
    await send(server, chat["id"], "And three more?")
    assert await title(server, chat["id"]) == "Name three colours."


async def test_a_title_given_or_set_is_never_replaced(server: Server) -> None:
    chat = await server.new_chat(title="Mine")
    await send(server, chat["id"], "hello")
    assert await title(server, chat["id"]) == "Mine"
    other = await server.new_chat()
    await send(server, other["id"], "first")
    r = await server.client.patch(f"/api/chats/{other['id']}", json={"title": "Renamed"})
    assert r.status_code == 200
    first = (await server.client.get(f"/api/chats/{other['id']}")).json()["messages"][0]
    async with server.client.stream(
        "POST", f"/api/messages/{first['id']}/edit", json={"content": "edited first"}
    ) as r:
        await read_all(r)
    assert await title(server, other["id"]) == "Renamed"


async def test_the_chat_api_useChat_and_the_gateway_title_alike(server: Server) -> None:
    chat = await server.new_chat()
    await send(server, chat["id"], LONG)
    body = {
        "id": "usechat-1",
        "messages": [{"role": "user", "parts": [{"type": "text", "text": LONG}]}],
    }
    async with server.client.stream("POST", "/api/chat", json=body) as r:
        assert r.status_code == 200
        await read_all(r)
    r = await server.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": LONG}]},
    )
    gateway_chat = r.headers["x-streamkeep-chat-id"]
    empty = await server.new_chat()  # an empty chat the gateway goes on with
    r = await server.client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": LONG}]},
        headers={"x-streamkeep-chat-id": empty["id"]},
    )
    assert r.status_code == 200
    expected = "Explain in detail why the sky is blue, and why sunsets are red, orange and some…"
    assert len(expected) == 80
    assert await title(server, chat["id"]) == expected
    assert await title(server, "usechat-1") == expected
    assert await title(server, gateway_chat) == expected
    assert await title(server, empty["id"]) == expected
