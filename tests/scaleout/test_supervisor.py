"""`streamkeep serve --workers N` supervises its children: a real parent process, its real
spawned workers (found through /proc), PostgreSQL and Redis, HTTP over loopback."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis

from streamkeep.scaleout import Keys
from streamkeep.scaleout.workers import (
    FIRST_DELAY,
    HEALTHY_AFTER,
    MAX_DELAY,
    describe_exit,
    restart_delay,
)
from tests.conftest import free_port
from tests.fakes.upstream import FakeUpstream
from tests.scaleout.test_processes import new_chat, serve, start_reply
from tests.scaleout.waits import eventually
from tests.server.sse import until
from tests.server.test_serve import rest_of, wait_ready


def workers_of(parent: int) -> set[int]:
    """The live (not zombie) worker processes `parent` spawned; not multiprocessing's
    resource tracker, which is a child too."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


def exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


class Lines:
    """A process's stderr, read line by line on a thread as it comes."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._pipe = proc.stderr
        self.lines: list[tuple[float, str]] = []  # (time.monotonic(), line)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for raw in self._pipe:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip()))

    def matching(self, pattern: str) -> list[tuple[float, re.Match[str]]]:
        return [(t, m) for t, line in list(self.lines) if (m := re.search(pattern, line))]

    def close(self) -> None:
        self._thread.join(timeout=30)
        self._pipe.close()


@contextmanager
def supervised(
    home: Path, upstream: FakeUpstream, pg_url: str, keys: Keys, *args: str, **env: str
) -> Iterator[tuple[subprocess.Popen[bytes], Lines]]:
    with serve(
        home, upstream, pg_url, keys, "--workers", "2", *args, stderr=subprocess.PIPE, **env
    ) as proc:
        lines = Lines(proc)
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
            lines.close()


async def registered(redis: aioredis.Redis, keys: Keys) -> set[bytes]:
    return {k async for k in redis.scan_iter(keys.worker("*"))}


def test_restart_delay_doubles_while_children_crash_soon_and_starts_over_after_a_good_run() -> None:
    assert restart_delay(None, lived=1.0) == FIRST_DELAY == 0.5
    delays = [FIRST_DELAY]
    for _ in range(8):
        delays.append(restart_delay(delays[-1], lived=1.0))
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert MAX_DELAY == 10.0
    assert restart_delay(10.0, lived=HEALTHY_AFTER - 0.1) == 10.0
    assert restart_delay(10.0, lived=HEALTHY_AFTER) == FIRST_DELAY


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exited with code 3"
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
    assert describe_exit(-signal.SIGSEGV) == "killed by SIGSEGV"


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_a_killed_worker_is_replaced_on_the_same_port(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    with supervised(tmp_path / "w", fake_upstream, pg_url, keys) as (proc, lines):
        client = await wait_ready(proc)
        await eventually(lambda: len(workers_of(proc.pid)) == 2, within=60, poll=0.1)

        async def both_registered() -> bool:
            return len(await registered(redis, keys)) == 2

        await eventually(both_registered, within=60, poll=0.2)
        before, ids_before = workers_of(proc.pid), await registered(redis, keys)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            now = workers_of(proc.pid)
            return len(now) == 2 and victim not in now

        await eventually(replaced, within=30, poll=0.05)
        (newcomer,) = workers_of(proc.pid) - before

        async def newcomer_registered() -> bool:  # the dead one's key lingers until its TTL
            return bool((await registered(redis, keys)) - ids_before)

        await eventually(newcomer_registered, within=60, poll=0.2)
        assert proc.poll() is None  # the same parent throughout
        assert workers_of(proc.pid) == (before - {victim}) | {newcomer}
        crash = lines.matching(rf"worker \d \(pid {victim}\) killed by SIGKILL .* in 0\.5 s")
        assert len(crash) == 1

        # The port keeps answering, on fresh connections (spread over both workers).
        for _ in range(10):
            async with httpx.AsyncClient(base_url=client.base_url, timeout=30) as fresh:
                assert (await fresh.get("/healthz")).status_code == 200
        chat_id = await new_chat(client)
        for n in range(3):
            async with start_reply(client, chat_id, f"[[tokens=3]] hi {n}") as (_, stream):
                assert [e.type async for e in stream][-2:] == ["finish", "[DONE]"]
        await client.aclose()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert not any(map(exists, before | {newcomer}))


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.postgres
async def test_sigterm_stops_every_worker_and_restarts_none(
    tmp_path: Path, fake_upstream: FakeUpstream, pg_url: str, keys: Keys, redis: aioredis.Redis
) -> None:
    grace = {"STREAMKEEP_SHUTDOWN_GRACE": "3"}
    with supervised(tmp_path / "w", fake_upstream, pg_url, keys, **grace) as (proc, lines):
        client = await wait_ready(proc)
        await eventually(lambda: len(workers_of(proc.pid)) == 2, within=60, poll=0.1)
        before = workers_of(proc.pid)
        chat_id = await new_chat(client)
        # A live reply keeps its worker in its graceful shutdown for the whole grace
        # period, while the idle one exits at once: a supervisor that restarted it
        # would do so meanwhile.
        async with start_reply(client, chat_id, "[[tokens=5000 delay=0.02]] long") as (
            _,
            stream,
        ):
            await until(stream, "text-delta")
            proc.send_signal(signal.SIGTERM)
            rest = asyncio.create_task(rest_of(stream))
            seen: set[int] = set()
            while proc.poll() is None:
                seen |= workers_of(proc.pid)
                await asyncio.sleep(0.05)
            await rest
        assert seen <= before
        assert proc.returncode == 0
        assert lines.matching("restart") == []
        assert not any(map(exists, before))
        await client.aclose()
    async with httpx.AsyncClient(base_url=client.base_url) as after:
        with pytest.raises(httpx.ConnectError):
            await after.get("/healthz")
    assert await registered(redis, keys) == set()


@pytest.mark.slow
@pytest.mark.redis
async def test_workers_that_die_at_start_are_restarted_ever_more_slowly(
    tmp_path: Path, fake_upstream: FakeUpstream, keys: Keys, redis: aioredis.Redis
) -> None:
    # Nothing listens on that port: every worker's start-up fails (uvicorn exits with 3).
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
    with supervised(tmp_path / "w", fake_upstream, unreachable, keys, "--log-level", "info") as (
        proc,
        lines,
    ):
        pattern = r"worker {} \(pid \d+\) exited with code 3 after .* restarting it in ([\d.]+) s"
        restarted = r"worker \d restarted \(pid \d+\)"

        def three_crashes_each() -> bool:
            return all(len(lines.matching(pattern.format(n))) >= 3 for n in (0, 1))

        await eventually(three_crashes_each, within=90, poll=0.02)
        assert proc.poll() is None  # the same parent throughout
        crashes = lines.matching(pattern.format(0))[:3]
        assert [float(m[1]) for _, m in crashes] == [0.5, 1.0, 2.0]
        assert [float(m[1]) for _, m in lines.matching(pattern.format(1))[:3]] == [0.5, 1.0, 2.0]
        # Each replacement waited its delay (then took its own time to start and fail).
        (t1, _), (t2, _), (t3, _) = crashes
        assert t2 - t1 >= 0.5 and t3 - t2 >= 1.0

        # SIGTERM while both wait 2 s to restart (two restarts each so far): the parent
        # exits at once, restarting nothing.
        assert len(lines.matching(restarted)) == 4
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        lines.close()  # all of it, up to the end
        assert len(lines.matching(restarted)) == 4
