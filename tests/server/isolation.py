"""The isolation probe: every endpoint that names a chat or message, called by a user
who does not own it, answers exactly as for an unknown id, and changes nothing.

Used on one process (`test_accounts.py`) and across two workers with Redis
(`tests/scaleout/test_accounts_workers.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from tests.server.sse import read_all

# A reply that runs for about 3 s: long enough to resume and stop it while it runs.
SLOW = "[[tokens=60 delay=0.05]] hi"


@dataclass
class Owned:
    """What the owner made: a chat with a finished exchange."""

    chat_id: str
    user_message_id: str
    assistant_message_id: str


async def make_owned(owner: httpx.AsyncClient) -> Owned:
    r = await owner.post("/api/chats", json={"title": "mine"})
    assert r.status_code == 201, r.text
    chat_id = r.json()["id"]
    async with owner.stream(
        "POST", f"/api/chats/{chat_id}/messages", json={"content": "hello"}
    ) as r:
        assert r.status_code == 200
        await read_all(r)
    messages = (await owner.get(f"/api/chats/{chat_id}")).json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    return Owned(chat_id, messages[0]["id"], messages[1]["id"])


def _not_found(r: httpx.Response, what: str) -> None:
    assert r.status_code == 404, (r.request.method, r.request.url, r.status_code, r.text)
    assert what in r.text


async def probe(
    other: httpx.AsyncClient, owner: httpx.AsyncClient, owned: Owned, *, gateway: bool = True
) -> None:
    """`other` reaches none of `owned` on any endpoint; `owner` still has it whole."""
    chat, user_msg, reply = owned.chat_id, owned.user_message_id, owned.assistant_message_id
    before = (await owner.get(f"/api/chats/{chat}")).json()

    # Answered as for an id nobody has (the answer to an unknown id, for comparison).
    unknown = await other.get("/api/chats/c_unknown000000000000000")
    assert unknown.status_code == 404
    calls: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/api/chats/{chat}", {}),
        ("PATCH", f"/api/chats/{chat}", {"json": {"title": "theirs"}}),
        ("DELETE", f"/api/chats/{chat}", {}),
        ("GET", f"/api/messages/{user_msg}", {}),
        ("GET", f"/api/messages/{reply}", {}),
        ("POST", f"/api/chats/{chat}/stop", {}),
        ("GET", f"/api/chats/{chat}/stream", {}),
        ("GET", f"/api/chats/{chat}/stream", {"headers": {"last-event-id": "1"}}),
        ("GET", f"/api/chat/{chat}/stream", {"params": {"after": "0"}}),
        ("POST", f"/api/chats/{chat}/messages", {"json": {"content": "mine now"}}),
        ("POST", f"/api/messages/{reply}/regenerate", {}),
        ("POST", f"/api/messages/{user_msg}/edit", {"json": {"content": "edited"}}),
        (
            "POST",
            "/api/chat",
            {"json": {"id": chat, "messages": [_ui_user("take it")], "trigger": "submit-message"}},
        ),
        (
            "POST",
            "/api/chat",
            {"json": {"id": chat, "messages": [], "trigger": "regenerate-message"}},
        ),
        (
            "POST",
            f"/api/messages/{reply}/tool-results",
            {"json": {"results": [{"toolCallId": "call_1_0", "output": 1}]}},
        ),
        (
            "POST",
            "/api/chat",
            {"json": {"id": chat, "messages": [_ui_user("x"), _ui_reply(reply)]}},
        ),
    ]
    for method, path, kwargs in calls:
        r = await other.request(method, path, **kwargs)
        _not_found(r, "not found")
    if gateway:
        r = await other.post(
            "/v1/chat/completions",
            json={"model": "fake/fake-model", "messages": [{"role": "user", "content": "x"}]},
            headers={"x-streamkeep-chat-id": chat},
        )
        _not_found(r, "x-streamkeep-chat-id")

    # Ids of the owner's in the body of a request to a chat of `other`'s own.
    own = (await other.post("/api/chats", json={})).json()["id"]
    for body in ({"content": "x", "parent_id": user_msg}, {"content": "x", "parent_id": reply}):
        r = await other.post(f"/api/chats/{own}/messages", json=body)
        unknown = await other.post(
            f"/api/chats/{own}/messages", json={**body, "parent_id": "msg_unknown0000000000000"}
        )
        _alike(r, unknown, body["parent_id"])
    r = await other.patch(f"/api/chats/{own}", json={"active_leaf_id": reply})
    unknown = await other.patch(
        f"/api/chats/{own}", json={"active_leaf_id": "msg_unknown0000000000000"}
    )
    _alike(r, unknown, reply)
    # The owner's reply as the one a client's tool results continue, in `other`'s chat.
    r, unknown = [
        await other.post("/api/chat", json={"id": own, "messages": [_ui_user("x"), _ui_reply(m)]})
        for m in (reply, "msg_unknown0000000000000")
    ]
    _alike(r, unknown, reply)
    assert (await other.get(f"/api/chats/{own}")).json()["messages"] == []
    assert (await other.delete(f"/api/chats/{own}")).status_code == 204

    listed = (await other.get("/api/chats")).json()["items"]
    assert chat not in [c["id"] for c in listed]
    after = (await owner.get(f"/api/chats/{chat}")).json()
    assert after == before  # nothing changed: no title, no message, no deletion
    assert chat in [c["id"] for c in (await owner.get("/api/chats")).json()["items"]]


def _alike(r: httpx.Response, unknown: httpx.Response, used_id: str) -> None:
    """`r`, the answer to a request naming another user's id, is that to an unknown id."""
    assert 400 <= r.status_code < 500, r.text
    assert (r.status_code, r.json()) == (
        unknown.status_code,
        orjson.loads(unknown.text.replace("msg_unknown0000000000000", used_id)),
    )


def _ui_user(text: str) -> dict[str, Any]:
    return {"id": "u1", "role": "user", "parts": [{"type": "text", "text": text}]}


def _ui_reply(message_id: str) -> dict[str, Any]:
    """useChat's copy of a reply after `addToolResult` (its tool results continue it)."""
    answered = {"type": "tool-ask", "toolCallId": "call_1_0", "state": "output-available"}
    return {"id": message_id, "role": "assistant", "parts": [{**answered, "output": 1}]}
