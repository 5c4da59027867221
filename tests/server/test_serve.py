"""`streamkeep serve` as a real process: graceful SIGTERM, and recovery after SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from streamkeep.store import ChatStore, Database
from tests.conftest import free_port
from tests.fakes.upstream import FakeUpstream
from tests.server.sse import Event, events, until

pytestmark = pytest.mark.slow


@contextmanager
def serve(data_dir: Path, upstream: FakeUpstream, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    environ = os.environ | {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "x",
        "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
        "STREAMKEEP_MODEL": "openai/fake-model",
        **env,
    }
    cmd = [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.PIPE)
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def wait_ready(proc: subprocess.Popen[bytes]) -> httpx.AsyncClient:
    url = f"http://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]
    client = httpx.AsyncClient(base_url=url, timeout=30)
    async with asyncio.timeout(60):  # start-up is set-up: a bounded wait, not a measure
        while True:
            assert proc.poll() is None, "streamkeep serve exited during start-up"
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)


@asynccontextmanager
async def reply(
    client: httpx.AsyncClient, content: str
) -> AsyncIterator[tuple[str, AsyncIterator[Event]]]:
    chat = (await client.post("/api/chats", json={})).json()
    path = f"/api/chats/{chat['id']}/messages"
    async with client.stream("POST", path, json={"content": content}) as r:
        assert r.status_code == 200
        yield r.headers["x-streamkeep-message-id"], events(r)


async def stored(data_dir: Path, message_id: str) -> dict[str, Any]:
    db = Database.from_url(f"sqlite:///{data_dir / 'streamkeep.db'}")
    try:
        message = await ChatStore(db).get_message(message_id)
    finally:
        await db.dispose()
    text = "".join(p.get("text", "") for p in message.parts if p["type"] == "text")
    return {"status": message.status, "text": text}


async def branch(data_dir: Path, chat_id: str) -> list[str]:
    db = Database.from_url(f"sqlite:///{data_dir / 'streamkeep.db'}")
    try:
        return [m.id for m in await ChatStore(db).active_branch(chat_id)]
    finally:
        await db.dispose()


class HeldPost:
    """A POST in flight: the server has its headers and waits for its body (it said
    `100 Continue`, which it does once the app asks for the body)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer

    @classmethod
    async def open(cls, port: int, path: str, length: int) -> HeldPost:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode())
        async with asyncio.timeout(30):
            interim = await reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        return cls(reader, writer)

    async def finish(self, body: bytes) -> tuple[int, bytes]:
        """Send the body; the response's status, and its body if it has a length (a
        stream has none: then nothing is read)."""
        self._writer.write(body)
        try:
            async with asyncio.timeout(30):
                head = (await self._reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
                fields = dict(line.lower().split(": ", 1) for line in head[1:] if line)
                length = int(fields.get("content-length", 0))
                data = await self._reader.readexactly(length)
        finally:
            self._writer.close()
        return int(head[0].split()[1]), data


async def shutdown_begun(url: str) -> None:
    """Returns once the server handles the signal: readiness says 503, or the listener
    is closed (uvicorn begins the app's shutdown before it closes it)."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as fresh, asyncio.timeout(30):
        while True:
            try:
                if (await fresh.get("/readyz")).status_code != 200:
                    return
            except httpx.TransportError:
                return
            await asyncio.sleep(0.02)


def text_of(evts: list[Event]) -> str:
    return "".join(e.data["delta"] for e in evts if e.type == "text-delta")


async def rest_of(stream: AsyncIterator[Event]) -> list[Event]:
    seen = []
    try:
        async for event in stream:
            seen.append(event)
    except httpx.TransportError:
        pass  # the server died under us
    return seen


async def test_sigterm_finishes_short_generations_and_interrupts_long_ones(
    data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    with serve(data_dir, fake_upstream, STREAMKEEP_SHUTDOWN_GRACE="5") as proc:
        client = await wait_ready(proc)
        async with (
            reply(client, "[[tokens=4 delay=0.5]] short") as (short_id, short),
            reply(client, "[[tokens=5000 delay=0.02]] long") as (long_id, long),
        ):
            short_seen = await until(short, "text-delta")
            long_seen = await until(long, "text-delta")
            chat = (await client.post("/api/chats", json={})).json()["id"]
            body = orjson.dumps({"content": "x"})
            port: int = proc.port  # type: ignore[attr-defined]
            late = await HeldPost.open(port, f"/api/chats/{chat}/messages", len(body))
            proc.send_signal(signal.SIGTERM)
            await shutdown_begun(str(client.base_url))
            # A new generation is refused once the signal is handled (here one whose
            # request was already in flight), while the running ones carry on.
            status, answer = await late.finish(body)
            assert status == 503
            assert orjson.loads(answer)["error"]["type"] == "shutting_down"
            short_seen += await rest_of(short)
            long_seen += await rest_of(long)
        await client.aclose()
        # uvicorn ends by re-raising the signal it stopped for, once its shutdown is done.
        assert proc.wait(timeout=60) == -signal.SIGTERM
    assert await branch(data_dir, chat) == []  # the refused message was not stored
    assert [e.type for e in short_seen][-2:] == ["finish", "[DONE]"]
    assert "abort" not in [e.type for e in short_seen]
    assert "abort" in [e.type for e in long_seen]
    assert await stored(data_dir, short_id) == {"status": "complete", "text": text_of(short_seen)}
    long_stored = await stored(data_dir, long_id)
    assert long_stored["status"] == "interrupted"
    assert long_stored["text"] == text_of(long_seen)
    assert 0 < len(long_stored["text"].split()) < 5000


async def test_sigkill_leaves_the_last_checkpoint_marked_interrupted(
    data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    # A short silence threshold: the restarted server finds the dead one's reply at once.
    env = {"STREAMKEEP_CHECKPOINT_INTERVAL": "0.1", "STREAMKEEP_WORKER_STALE_AFTER": "0.5"}
    with serve(data_dir, fake_upstream, **env) as proc:
        client = await wait_ready(proc)
        async with reply(client, "[[tokens=5000 delay=0.02]] long") as (message_id, stream):
            seen = await until(stream, "text-delta")
            while not (await client.get(f"/api/messages/{message_id}")).json()["parts"]:
                seen += [await anext(stream)]  # a checkpoint has not been stored yet
            proc.send_signal(signal.SIGKILL)
            seen += await rest_of(stream)
        await client.aclose()
        proc.wait()
    # The dead process's message is still `streaming` until a server starts again.
    assert (await stored(data_dir, message_id))["status"] == "streaming"
    with serve(data_dir, fake_upstream, **env) as proc:
        client = await wait_ready(proc)
        for _ in range(200):  # a bounded wait: marked at start, or by the orphan sweep
            message = (await client.get(f"/api/messages/{message_id}")).json()
            if message["status"] != "streaming":
                break
            await asyncio.sleep(0.05)
        await client.aclose()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert message["status"] == "interrupted"
    checkpoint = "".join(p["text"] for p in message["parts"] if p["type"] == "text")
    assert checkpoint
    assert text_of(seen).startswith(checkpoint)
