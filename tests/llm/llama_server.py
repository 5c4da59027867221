"""llama-cpp-python's own OpenAI-compatible server, started for real on a free port."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

STARTUP_LIMIT = 120.0  # seconds for the server to load the model and listen


@contextlib.contextmanager
def llama_server(model: Path, log_dir: Path, *options: str) -> Iterator[str]:
    """`python -m llama_cpp.server` on `model` with `options` (e.g. a `--chat_format`);
    yields its base URL (…/v1), stops it at the end. Its output goes to a log file,
    shown when it fails to start."""
    port = free_port()
    log_path = log_dir / "server.log"
    command = [
        *(sys.executable, "-m", "llama_cpp.server", "--model", str(model)),
        *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048"),
        *("--verbose", "False", *options),
    ]
    with log_path.open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_until_up(server, base_url, log_path)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _wait_until_up(server: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"llama_cpp.server exited:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"llama_cpp.server did not answer in {STARTUP_LIMIT}s")
