"""Private PostgreSQL and Redis servers that a test may stop and start.

The shared servers (tests/conftest.py) must never be restarted: other suites run against
them. A fault test gets its own `redis-server` and its own PostgreSQL cluster (initdb in
a temporary directory), each on a free loopback port, started once per session
(`private_redis`, `private_postgres`) and left running between tests. A test that
stops one starts it again before it ends (`RedisServer.down()`, `PostgresServer.down()`).

Their binaries are Debian's (`redis-server`, /usr/lib/postgresql/*/bin). Where one is
missing the test is skipped, except in CI where it fails (as `require_service` does).
PostgreSQL refuses to run as root: as root, its commands run as the `postgres` user.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI, free_port
from tests.pg import _run, execute

# Bounds a start or stop (never a timed assertion: a server that takes longer fails).
START_TIMEOUT = 60.0


def require_binary(name: str, path: str | None) -> str:
    """`path` when it exists; else skip the test (fail it in CI)."""
    if path is not None and Path(path).is_file():
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed; the CI machine should have it")
    pytest.skip(f"{name} is not installed (install it to run this test)")


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


class RedisServer:
    """A `redis-server` of the test session's own, keeping nothing on disk: a restart
    starts empty, as a Redis without persistence does."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
        cmd += ["--dir", tempfile.gettempdir()]
        proc = self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)

        def up() -> bool:
            if proc.poll() is not None:  # e.g. something else took the port meanwhile
                raise RuntimeError(f"redis-server exited with {proc.returncode}")
            return self._ping()

        _wait(up, f"redis-server on port {self.port} did not start")

    def stop(self) -> None:
        """SIGTERM: Redis closes its clients' connections and exits (saving nothing)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=START_TIMEOUT)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stopped inside the block; started again (empty) at its end, however it ends."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class PostgresServer:
    """A PostgreSQL cluster of the test session's own, in a temporary directory."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = port

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, *cmd: str) -> None:
        """Run a server command as the cluster's owner (`postgres` when we are root)."""
        argv = [str(self.bindir / cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=START_TIMEOUT)

    def init(self) -> None:
        self._as_owner("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-N")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.root} -c fsync=off"
        )
        log = str(self.root / "server.log")
        self._as_owner("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        _wait(lambda: _answers(self.port), f"PostgreSQL on port {self.port} did not start")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: the server ends every session and exits (`immediate`: as a crash)."""
        self._as_owner("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    @contextlib.contextmanager
    def down(self, mode: str = "fast") -> Iterator[None]:
        """Stopped inside the block; started again at its end, however it ends."""
        self.stop(mode)
        try:
            yield
        finally:
            self.start()

    def create_database(self, prefix: str) -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        _run(execute(self.url(), f'CREATE DATABASE "{name}"'))
        return self.url(name)


@contextlib.asynccontextmanager
async def outage(server: RedisServer | PostgresServer) -> AsyncIterator[None]:
    """`server.down()` for a test's event loop: stopping and starting run on a thread,
    so the fake provider (on this loop) keeps streaming meanwhile."""
    await asyncio.to_thread(server.stop)
    try:
        yield
    finally:
        await asyncio.to_thread(server.start)


def _postgres_bindir() -> Path | None:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


@pytest.fixture(scope="session")
def private_redis() -> Iterator[RedisServer]:
    binary = require_binary("redis-server", shutil.which("redis-server") or "/usr/bin/redis-server")
    server = RedisServer(binary, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PostgresServer]:
    bindir = _postgres_bindir()
    require_binary("PostgreSQL (pg_ctl)", str(bindir / "pg_ctl") if bindir else None)
    assert bindir is not None
    root = Path(tempfile.mkdtemp(prefix="streamkeep-pg-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = PostgresServer(bindir, root, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
