"""Real MCP servers for the tests (tests/tools/mcp_server.py), over stdio and HTTP."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from streamkeep.config import McpServerConfig
from streamkeep.tools.mcp import McpServers
from tests.conftest import free_port

SERVER = Path(__file__).with_name("mcp_server.py")
# Bounds a wait for something that must happen (never a timed assertion).
WITHIN = 30.0


def stdio_config(record: Path, timeout: float | None = None) -> McpServerConfig:
    return McpServerConfig(
        command=[sys.executable, str(SERVER), "--record", str(record)], timeout=timeout
    )


def recorded(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def pids(record: Path) -> list[int]:
    return [int(line.split()[1]) for line in recorded(record) if line.startswith("pid ")]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


async def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still not {what} after {WITHIN}s")
        await asyncio.sleep(0.02)


@asynccontextmanager
async def running(servers: dict[str, McpServerConfig], **options: Any) -> AsyncIterator[McpServers]:
    """Started with short backoffs and checks, closed at the end."""
    mcp = McpServers(
        servers, **{"backoff": 0.05, "max_backoff": 0.2, "check_interval": 0.1, **options}
    )
    await mcp.start()
    try:
        yield mcp
    finally:
        await mcp.aclose()


class HttpServer:
    """tests/tools/mcp_server.py over streamable HTTP on a loopback port, stoppable."""

    def __init__(self, record: Path) -> None:
        self.record = record
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> McpServerConfig:
        return McpServerConfig(url=self.url)

    def start(self) -> None:
        cmd = [sys.executable, str(SERVER), "--record", str(self.record), "--port", str(self.port)]
        self._proc = proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + WITHIN
        while not self._answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the MCP server on port {self.port} did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


@pytest.fixture
def record(tmp_path: Path) -> Path:
    return tmp_path / "record.txt"


@pytest.fixture
def http_server(record: Path) -> Iterator[HttpServer]:
    """Not started: a test starts it (and may stop and start it again)."""
    server = HttpServer(record)
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(params=["stdio", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def config(transport: str, record: Path, http_server: HttpServer) -> McpServerConfig:
    """The test server over `transport`, running."""
    if transport == "stdio":
        return stdio_config(record)
    http_server.start()
    return http_server.config()
