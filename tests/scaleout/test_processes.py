"""Two real `streamkeep serve` processes on different ports, sharing PostgreSQL and Redis
(under the test's own key prefix), with the fake upstream over loopback HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from tests.conftest import TEST_REDIS_URL, free_port
from tests.fakes.upstream import FakeUpstream
from tests.scaleout.waits import eventually
from tests.server.sse import Event, events, text_of, until
from tests.server.test_serve import rest_of, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]


@contextmanager
def serve(
    home: Path,
    upstream: FakeUpstream,
    pg_url: str,
    keys: Keys,
    *args: str,
    stderr: int | None = None,
    **env: str,
) -> Iterator[subprocess.Popen[bytes]]:
    port = free_port()
    home.mkdir(exist_ok=True)
    environ = os.environ | {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "x",
        "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
        "STREAMKEEP_MODEL": "openai/fake-model",
        "STREAMKEEP_DATABASE_URL": pg_url,
        "STREAMKEEP_REDIS_URL": TEST_REDIS_URL,
        "STREAMKEEP_REDIS_PREFIX": keys.prefix,
        "STREAMKEEP_CHECKPOINT_INTERVAL": "0.2",
        **env,
    }
    cmd = [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(home), "--log-level", "warning", *args]
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=stderr)
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()


@asynccontextmanager
async def start_reply(
    client: httpx.AsyncClient, chat_id: str, content: str
) -> AsyncIterator[tuple[str, AsyncIterator[Event]]]:
    path = f"/api/chats/{chat_id}/messages"
    async with client.stream("POST", path, json={"content": content}) as r:
        assert r.status_code == 200
        yield r.headers["x-streamkeep-message-id"], events(r)


async def new_chat(client: httpx.AsyncClient) -> str:
    r = await client.post("/api/chats", json={})
    assert r.status_code == 201
    return str(r.json()["id"])


async def test_resume_and_stop_through_the_other_worker(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    with serve(tmp_path / "a", fake_upstream, pg_url, keys) as proc_a:
        a = await wait_ready(proc_a)
        with serve(tmp_path / "b", fake_upstream, pg_url, keys) as proc_b:
            b = await wait_ready(proc_b)
            assert (await b.get("/readyz")).json()["checks"]["redis"] == "ok"

            # Started on a, the connection drops; resumed on b from Last-Event-ID.
            chat_id = await new_chat(a)
            async with start_reply(a, chat_id, "[[tokens=60 delay=0.02]] hi") as (mid, stream):
                seen = [e for _ in range(8) for e in await until(stream, "text-delta")]
            last = seen[-1].seq
            assert last is not None
            headers = {"last-event-id": str(last)}
            async with b.stream("GET", f"/api/chats/{chat_id}/stream", headers=headers) as r:
                assert r.status_code == 200
                assert r.headers["x-vercel-ai-ui-message-stream"] == "v1"
                rest = [e async for e in events(r)]
            everything = seen + rest
            assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
            assert [e.type for e in rest][-2:] == ["finish", "[DONE]"]
            message = (await b.get(f"/api/messages/{mid}")).json()
            assert message["status"] == "complete"
            assert message["parts"][0]["text"] == text_of(everything)
            assert len(text_of(everything).split()) == 60

            # Started on a, stopped through b.
            async with start_reply(a, chat_id, "[[tokens=5000 delay=0.02]] go") as (mid, stream):
                seen = await until(stream, "text-delta")
                r = await b.post(f"/api/chats/{chat_id}/stop")
                assert r.json() == {"stopped": True}
                seen += await rest_of(stream)
            assert "abort" in [e.type for e in seen]
            assert (await b.get(f"/api/messages/{mid}")).json()["status"] == "stopped"
            await b.aclose()
        await a.aclose()


async def test_a_killed_workers_generation_is_interrupted_by_the_survivor(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    with (
        serve(tmp_path / "a", fake_upstream, pg_url, keys) as proc_a,
        serve(tmp_path / "b", fake_upstream, pg_url, keys) as proc_b,
    ):
        a = await wait_ready(proc_a)
        b = await wait_ready(proc_b)
        chat_id = await new_chat(a)
        async with start_reply(a, chat_id, "[[tokens=5000 delay=0.02]] long") as (mid, stream):
            seen = await until(stream, "text-delta")
            while not (await b.get(f"/api/messages/{mid}")).json()["parts"]:
                seen += [await anext(stream)]  # until a checkpoint is stored
            proc_a.send_signal(signal.SIGKILL)
            seen += await rest_of(stream)
        await a.aclose()

        async def interrupted() -> bool:
            return (await b.get(f"/api/messages/{mid}")).json()["status"] == "interrupted"

        # b's reaper: a's presence key expires, then its heartbeat goes stale.
        await eventually(interrupted, within=60, poll=0.5)
        # a never closed its stream: b gives it the expiry a normal end gives it.
        pointer = orjson.loads(await redis.get(keys.chat(chat_id)) or b"{}")
        assert pointer["message"] == mid
        stream = keys.generation(pointer["generation"])

        async def expiring() -> bool:
            return await redis.pttl(stream) > 0

        await eventually(expiring, within=10, poll=0.2)
        message = (await b.get(f"/api/messages/{mid}")).json()
        checkpoint = "".join(p["text"] for p in message["parts"] if p["type"] == "text")
        assert checkpoint and text_of(seen).startswith(checkpoint)
        # The chat is free again: b takes the next message, numbered above every id a's
        # clients may hold (a client of the dead reply resuming gets this one whole).
        async with start_reply(b, chat_id, "[[tokens=3]] again") as (_, stream):
            again = [e async for e in stream]
        assert [e.type for e in again][-2:] == ["finish", "[DONE]"]
        assert again[0].seq is not None and again[0].seq > max(e.seq or 0 for e in seen)
        await b.aclose()


async def test_serve_with_several_workers_shares_one_port(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    with serve(tmp_path / "w", fake_upstream, pg_url, keys, "--workers", "2") as proc:
        client = await wait_ready(proc)

        async def both_registered() -> bool:
            return len([k async for k in redis.scan_iter(keys.worker("*"))]) == 2

        await eventually(both_registered, within=60, poll=0.2)
        chat_id = await new_chat(client)
        async with start_reply(client, chat_id, "[[tokens=3]] hi") as (_, stream):
            assert [e.type async for e in stream][-2:] == ["finish", "[DONE]"]
        await client.aclose()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert [k async for k in redis.scan_iter(keys.worker("*"))] == []  # both left


async def test_an_earlier_replys_id_resumes_the_running_reply_whole_on_the_other_worker(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    with (
        serve(tmp_path / "a", fake_upstream, pg_url, keys) as proc_a,
        serve(tmp_path / "b", fake_upstream, pg_url, keys) as proc_b,
    ):
        a = await wait_ready(proc_a)
        b = await wait_ready(proc_b)
        chat_id = await new_chat(a)
        async with start_reply(a, chat_id, "[[tokens=60]] one") as (_, stream):
            first = [e async for e in stream]
        old_id = first[40].seq  # a client dropped here, in the first reply
        assert old_id == 41

        async with start_reply(a, chat_id, "[[tokens=120 delay=0.01]] two") as (mid, stream):
            second = [e for _ in range(45) for e in await until(stream, "text-delta")]
            assert len(second) > old_id
            headers = {"last-event-id": str(old_id)}
            async with b.stream("GET", f"/api/chats/{chat_id}/stream", headers=headers) as r:
                assert r.status_code == 200
                resumed = [e async for e in events(r)]
            second += [e async for e in stream]
        assert resumed == second  # from its start: nothing lost, nothing twice
        assert resumed[0].type == "start" and resumed[0].data["messageId"] == mid
        assert resumed[0].seq is not None and first[-1].seq is not None
        assert resumed[0].seq > first[-1].seq
        await a.aclose()
        await b.aclose()
