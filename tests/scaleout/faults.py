"""Helpers of the fault tests: `streamkeep serve` on the private services, streams read
to their end in the background, the workers that own replies, readiness polls, and the
timings a test reports."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
import orjson

from streamkeep.scaleout import Keys
from tests.fakes.upstream import FakeUpstream
from tests.scaleout.test_processes import serve
from tests.scaleout.test_supervisor import Lines
from tests.scaleout.waits import eventually
from tests.server.sse import Event, events, text_of
from tests.services import PostgresServer, RedisServer

# Generous bounds on waits (never timed assertions): a reader still open past its bound
# has hung.
READ_TIMEOUT = 60.0
SETTLE = 60.0


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[bytes]
    lines: Lines  # its stderr, printed when the test fails


def new_keys() -> Keys:
    return Keys(prefix=f"skfault:{uuid.uuid4().hex[:8]}:")


@contextmanager
def server(
    home: Path, upstream: FakeUpstream, db_url: str, keys: Keys, *args: str, **env: str
) -> Iterator[Served]:
    """One `streamkeep serve` (one worker, or `--workers N` in `args`)."""
    with serve(home, upstream, db_url, keys, *args, stderr=subprocess.PIPE, **env) as proc:
        lines = Lines(proc)
        try:
            yield Served(f"http://127.0.0.1:{proc.port}", proc, lines)  # type: ignore[attr-defined]
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
            lines.close()  # all of it: the process has ended
            for at, line in lines.lines:
                print(f"[{home.name} {at:.2f}] {line}")


@contextmanager
def servers(
    tmp_path: Path, upstream: FakeUpstream, db_url: str, redis: RedisServer, **env: str
) -> Iterator[list[str]]:
    """Two single-worker servers sharing the private services (a test picks which worker
    each request goes to); their base URLs."""
    keys = new_keys()
    env = {"STREAMKEEP_REDIS_URL": redis.url, **env}
    with ExitStack() as stack:
        yield [
            stack.enter_context(server(tmp_path / f"w{n}", upstream, db_url, keys, **env)).url
            for n in range(2)
        ]


class Read:
    """One client's request, its stream read to the end in a task of its own."""

    def __init__(self, base_url: str, method: str, path: str, **kwargs: Any) -> None:
        self.events: list[Event] = []
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body: Any = None  # the JSON of an answer that is not a stream
        self.broken: str | None = None  # the connection failed (e.g. its worker died)
        self.answered = asyncio.Event()  # the status line came (or the request failed)
        self.task = asyncio.create_task(self._run(base_url, method, path, kwargs))

    async def _run(self, base_url: str, method: str, path: str, kwargs: dict[str, Any]) -> None:
        try:
            # A client of its own: a new connection, which any worker on the port may take.
            async with (
                httpx.AsyncClient(base_url=base_url, timeout=READ_TIMEOUT) as client,
                client.stream(method, path, **kwargs) as r,
            ):
                self.status, self.headers = r.status_code, dict(r.headers)
                self.answered.set()
                if r.headers.get("content-type", "").startswith("text/event-stream"):
                    async for event in events(r):
                        self.events.append(event)
                else:
                    body = await r.aread()
                    self.body = orjson.loads(body) if body else None
        except httpx.TransportError as exc:
            self.broken = repr(exc)
        finally:
            self.answered.set()

    async def ended(self, within: float = SETTLE) -> Read:
        """Wait for the end of the stream; TimeoutError if it hangs past `within`."""
        async with asyncio.timeout(within):
            await asyncio.shield(self.task)
        return self

    @property
    def message_id(self) -> str:
        return self.headers["x-streamkeep-message-id"]

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    @property
    def text(self) -> str:
        return text_of(self.events)

    @property
    def deltas(self) -> int:
        return self.types.count("text-delta")

    @property
    def finished(self) -> bool:
        return self.types[-2:] == ["finish", "[DONE]"]

    def metadata(self) -> dict[str, Any]:
        """The closing `message-metadata` (status, stored, usage)."""
        meta = [e.data["messageMetadata"] for e in self.events if e.type == "message-metadata"]
        return dict(meta[-1]) if meta else {}

    def describe(self) -> str:
        tail = self.types[-4:]
        body = f" body={self.body}" if self.body is not None else ""
        return (
            f"status={self.status} events={len(self.events)} tail={tail}{body} broken={self.broken}"
        )


def chat_of(read: Read) -> str:
    return str(read.events[0].data["messageMetadata"]["chatId"])


def reply(base_url: str, chat_id: str, content: str) -> Read:
    return Read(base_url, "POST", f"/api/chats/{chat_id}/messages", json={"content": content})


def resume(base_url: str, chat_id: str, after: int | None = None) -> Read:
    headers = {"last-event-id": str(after)} if after is not None else {}
    return Read(base_url, "GET", f"/api/chats/{chat_id}/stream", headers=headers)


async def new_chat(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=READ_TIMEOUT) as client:
        r = await client.post("/api/chats", json={})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


async def live_replies(url: str, n: int, content: str) -> list[Read]:
    """`n` new chats on `url`, each with a reply that has streamed some text."""
    reads = [reply(url, await new_chat(url), f"{content} reply {i}") for i in range(n)]
    for read in reads:
        await eventually(lambda read=read: read.deltas >= 5, within=SETTLE)  # type: ignore[misc]
    return reads


async def assert_stored_whole(db_url: str, reads: list[Read]) -> None:
    """Every reply streamed to its end, and the database has it, final, as streamed."""
    for read in reads:
        await read.ended()
        assert read.finished, read.describe()
    stored = await stored_messages(db_url, [r.message_id for r in reads])
    for read in reads:
        message = stored[read.message_id]
        assert message["status"] == "complete", (read.message_id, message)
        assert message["text"] == read.text and read.text


async def readiness(base_url: str) -> tuple[int, dict[str, Any]]:
    """`/readyz` on a new connection: (status, checks); (0, {}) when nobody answers."""
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=READ_TIMEOUT) as client:
            r = await client.get("/readyz")
    except httpx.TransportError:
        return 0, {}
    return r.status_code, dict(r.json().get("checks", {}))


async def until_ready(
    base_url: str, *, ready: bool = True, check: str = "", within: float = SETTLE
) -> float:
    """Poll `/readyz` until it is 200 (`ready`) or 503 naming `check`; returns when."""
    async with asyncio.timeout(within):
        while True:
            status, checks = await readiness(base_url)
            if ready and status == 200:
                return time.monotonic()
            if not ready and status == 503 and checks.get(check) not in (None, "ok"):
                return time.monotonic()
            await asyncio.sleep(0.05)


async def first_reply(base_url: str, *, within: float = SETTLE) -> float:
    """Start new chats until one's reply streams whole; returns when it had."""
    async with asyncio.timeout(within):
        while True:
            try:
                chat_id = await new_chat(base_url)
            except (AssertionError, httpx.TransportError):
                await asyncio.sleep(0.05)
                continue
            read = await reply(base_url, chat_id, "[[tokens=3]] hello again").ended()
            if read.finished and read.metadata().get("stored") is True:
                return time.monotonic()
            await asyncio.sleep(0.05)


async def stored_messages(db_url: str, message_ids: list[str]) -> dict[str, dict[str, Any]]:
    """id -> {status, text, error} as the database has them."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status, parts, error FROM messages WHERE id = ANY($1)", message_ids
        )
    finally:
        await conn.close()
    found = {}
    for row in rows:
        parts = orjson.loads(row["parts"]) if isinstance(row["parts"], str) else row["parts"]
        text = "".join(p.get("text", "") for p in parts or [] if p.get("type") == "text")
        found[row["id"]] = {"status": row["status"], "text": text, "error": row["error"]}
    return found


async def owners(db_url: str) -> dict[str, int]:
    """message id -> pid of the worker that runs (or ran) its generation."""
    conn = await asyncpg.connect(db_url)
    try:
        rows = await conn.fetch("SELECT message_id, worker_id FROM generations")
    finally:
        await conn.close()
    # Worker ids are `host:pid:random`.
    return {r["message_id"]: int(r["worker_id"].rsplit(":", 2)[1]) for r in rows}


def db_of(server: PostgresServer) -> str:
    return server.create_database("sk_faults")


class Timings:
    """Named moments of a fault test, printed as seconds after the fault's end."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.marks: dict[str, float] = {}

    def mark(self, name: str, at: float | None = None) -> None:
        self.marks[name] = time.monotonic() if at is None else at

    def since(self, start: str, end: str) -> float:
        return self.marks[end] - self.marks[start]

    def report(self, *pairs: tuple[str, str]) -> str:
        lines = [f"{end} {self.since(start, end):.2f} s after {start}" for start, end in pairs]
        text = f"{self.title}: " + "; ".join(lines)
        print(f"\nTIMINGS {text}")
        return text
