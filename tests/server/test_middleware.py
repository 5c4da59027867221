"""Stream bodies skip the middleware only while every middleware passes bodies on
unchanged (`server.app.App`): a middleware that changes bodies sees every streamed chunk,
and the app as `create_app` builds it keeps the shortcut."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamkeep.cli.serve import build_server
from streamkeep.config import Settings
from streamkeep.server import create_app
from streamkeep.server.app import BODY_NEUTRAL
from tests.fakes.upstream import FakeUpstream, Script
from tests.server.conftest import make_settings

TAG = b": tagged\n\n"  # an SSE comment: the stream's events stay as they were


class TagBodies:
    """Appends `TAG` to every non-empty body message of an SSE response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = False

        async def tagged(message: Message) -> None:
            nonlocal stream
            if message["type"] == "http.response.start":
                stream = (b"content-type", b"text/event-stream") in message["headers"]
            elif stream and message.get("body"):
                message = {**message, "body": message["body"] + TAG}
            await send(message)

        await self.app(scope, receive, tagged)


async def test_a_middleware_that_changes_bodies_changes_every_streamed_chunk(
    data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    settings = make_settings(data_dir, fake_upstream.base_url)
    app = create_app(settings)
    app.add_middleware(TagBodies)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    server = build_server(settings, app=app, log_level="warning")
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            chat = (await client.post("/api/chats", json={})).json()
            fake_upstream.enqueue(Script(tokens=5, delay=0.05))
            chunks = []
            path = f"/api/chats/{chat['id']}/messages"
            async with client.stream("POST", path, json={"content": "go"}) as r:
                assert r.status_code == 200
                async for data in r.aiter_raw():
                    chunks.append(data)
    finally:
        server.should_exit = True
        await task
    raw = b"".join(chunks)
    assert raw.endswith(b"data: [DONE]\n\n" + TAG)
    # Paced tokens go out one write each: every one of them passed the middleware.
    frames = raw.replace(TAG, b"").count(b"\n\n")
    assert raw.count(TAG) >= 5
    assert frames >= raw.count(TAG)


def test_the_app_as_built_sends_stream_bodies_past_its_middleware() -> None:
    """Fails when a middleware not known to pass bodies on unchanged joins the stack
    (ours or the framework's): streams then pay for every wrapper (README, Benchmarks).
    If it must be there, it goes in `BODY_NEUTRAL` once read, or this test goes."""
    app = create_app(Settings(enable_local_model=False))
    app.build_middleware_stack()
    assert app.direct_body, [m.cls for m in app.user_middleware]


def test_a_middleware_that_may_change_bodies_turns_the_shortcut_off() -> None:
    app = create_app(Settings(enable_local_model=False))
    app.add_middleware(TagBodies)
    app.build_middleware_stack()
    assert not app.direct_body
    assert "tests.server.test_middleware.TagBodies" not in BODY_NEUTRAL
