"""A real `streamkeep serve` process backed by the fake provider (also a process), for
driving the real `streamkeep` command the way a person does."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
STREAMKEEP = str(Path(sys.executable).with_name("streamkeep"))


@dataclass
class LiveServer:
    url: str
    config: Path
    env: dict[str, str]

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10)


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer at {url}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("cli")
    up_port, port = free_port(), free_port()
    config = tmp / "streamkeep.toml"
    config.write_text(
        f'enable_local_model = false\nmodel = "fake/fake-model"\ndata_dir = "{tmp / "data"}"\n'
        f'checkpoint_interval = 0.2\n[providers.fake]\nkind = "openai"\n'
        f'base_url = "http://127.0.0.1:{up_port}/v1"\napi_key = "x"\nmodels = ["fake-model"]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMKEEP_", "OPENAI_"))}
    # The tree under test's own code, not whichever one the venv has installed.
    pythonpath = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env.update(STREAMKEEP_CONFIG=str(config), PYTHONPATH=pythonpath)
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", str(up_port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    server = subprocess.Popen(
        [STREAMKEEP, "serve", "--port", str(port)],
        cwd=tmp,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_http(f"http://127.0.0.1:{up_port}/v1/models", upstream, "the fake provider")
        _wait_http(f"http://127.0.0.1:{port}/healthz", server, "streamkeep serve")
        url = f"http://127.0.0.1:{port}"
        yield LiveServer(url, config, {**env, "STREAMKEEP_URL": url})
    finally:
        _stop(server)
        _stop(upstream)
