"""Users for the usage and admin tests: each with API keys and a client per key, and
the replies they ask for through the chat API, useChat and the gateway."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.server.conftest import MODEL, Server
from tests.server.sse import read_all

PASSWORD = "correct horse battery staple"


@dataclass
class Key:
    id: str
    prefix: str
    key: str
    client: httpx.AsyncClient  # sends the key


@dataclass
class Member:
    name: str
    user_id: str
    keys: list[Key] = field(default_factory=list)

    @property
    def client(self) -> httpx.AsyncClient:
        """The client of the member's first key."""
        return self.keys[0].client


@asynccontextmanager
async def team(
    server: Server, keys: dict[str, int], *, admins: tuple[str, ...] = ()
) -> AsyncIterator[dict[str, Member]]:
    """The users named in `keys`, each with that many API keys."""
    members: dict[str, Member] = {}
    try:
        for name, count in keys.items():
            user = await server.store.create_user(name, PASSWORD, is_admin=name in admins)
            member = members[name] = Member(name, user.id)
            for i in range(count):
                record, key = await server.store.create_api_key(user.id, name=f"{name}-{i}")
                client = httpx.AsyncClient(
                    base_url=server.url, timeout=30, headers={"authorization": f"Bearer {key}"}
                )
                member.keys.append(Key(record.id, record.prefix, key, client))
        yield members
    finally:
        for member in members.values():
            for key in member.keys:
                await key.client.aclose()


@asynccontextmanager
async def signed_in(server: Server, name: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client with a page session of `name` (no API key)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as page:
        r = await page.post("/api/auth/login", json={"name": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        yield page


@dataclass
class Reply:
    chat_id: str
    message_id: str  # the assistant's


async def streamed(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Reply:
    """POST a request that answers a UI message stream, read it whole."""
    async with client.stream("POST", path, json=body) as r:
        assert r.status_code == 200, await r.aread()
        events = await read_all(r)
    assert events[-1].type == "[DONE]"
    return Reply(r.headers["x-streamkeep-chat-id"], r.headers["x-streamkeep-message-id"])


async def chat_reply(
    client: httpx.AsyncClient, content: str, *, chat_id: str | None = None
) -> Reply:
    """A reply through the chat API, in a new chat unless `chat_id` is given."""
    if chat_id is None:
        r = await client.post("/api/chats", json={})
        assert r.status_code == 201, r.text
        chat_id = r.json()["id"]
    return await streamed(client, f"/api/chats/{chat_id}/messages", {"content": content})


async def gateway_reply(
    client: httpx.AsyncClient, content: str, *, chat_id: str | None = None, stream: bool = False
) -> Reply:
    """A reply through `/v1/chat/completions`, kept as a new chat unless `chat_id`."""
    headers = {"x-streamkeep-chat-id": chat_id} if chat_id is not None else {}
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": stream}
    r = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, r.text
    return Reply(r.headers["x-streamkeep-chat-id"], r.headers["x-streamkeep-message-id"])
