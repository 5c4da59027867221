"""A quiet stream is kept alive with SSE comments, which clients skip."""

from __future__ import annotations

import pytest

from streamkeep.http import responses
from streamkeep.sse import PING
from tests.fakes.upstream import Script
from tests.server.conftest import Server
from tests.server.sse import events, text_of


async def test_a_quiet_stream_gets_keepalive_comments(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(responses, "PING_INTERVAL", 0.1)
    chat = await server.new_chat()
    # The model thinks for a while before its first byte, then answers quickly.
    server.upstream.enqueue(Script(tokens=5, hang_before_first_byte=0.6))
    path = f"/api/chats/{chat['id']}/messages"
    raw = b""
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        async for data in r.aiter_raw():
            raw += data
    before_first_token = raw.split(b'"type":"text-delta"', 1)[0]
    assert before_first_token.count(PING) >= 3
    assert raw.endswith(b"data: [DONE]\n\n")


async def test_the_keepalive_comments_change_no_event(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(responses, "PING_INTERVAL", 0.05)
    chat = await server.new_chat()
    server.upstream.enqueue(Script(tokens=6, delay=0.12, hang_before_first_byte=0.3))
    path = f"/api/chats/{chat['id']}/messages"
    async with server.client.stream("POST", path, json={"content": "go"}) as r:
        evts = [e async for e in events(r)]
    assert [e.seq for e in evts[:-1]] == list(range(1, len(evts)))
    assert len(text_of(evts).split()) == 6
    assert evts[-2].type == "finish" and evts[-1].type == "[DONE]"
