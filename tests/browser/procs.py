"""The processes behind the browser tests: the fake provider and `streamkeep serve`,
each started as a real subprocess on loopback with a clean environment."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "fake/fake-model"


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("STREAMKEEP_", "OPENAI_", "ANTHROPIC_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    # The tests package importable from anywhere: a server's config names a tool of it.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)]))
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_config(home: Path, provider_url: str) -> Path:
    config = home / "streamkeep.toml"
    config.write_text(
        f'model = "{MODEL}"\n'
        "enable_local_model = false\n"
        # A server killed by a test is found silent (its replies `interrupted`) at once.
        "worker_stale_after = 0.5\n"
        "[providers.fake]\n"
        'kind = "openai"\n'
        f'base_url = "{provider_url}"\n'
        'api_key = "x"\n'
        'models = ["fake-model"]\n'
        "max_retries = 0\n"
        # A tool that runs until stopped, so a page can be seen while a call runs.
        "[tools]\n"
        'python = ["tests.server.loop_tools:slow"]\n'
    )
    return config


def launch_server(home: Path, provider_url: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    """Start `streamkeep serve` on `port` with its data in `home` (and `env`, e.g.
    `STREAMKEEP_OIDC_ISSUER`); return once healthy."""
    config = write_config(home, provider_url)
    with (home / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)],
            cwd=home,
            env=clean_env(
                STREAMKEEP_CONFIG=str(config), STREAMKEEP_DATA_DIR=str(home / "data"), **env
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", home / "server.log")
    except BaseException:
        stop_process(proc)
        raise
    return proc


def wait_ready(proc: subprocess.Popen[Any], url: str, log: Path) -> None:
    # Start-up is setup, not an assertion: poll until it answers or clearly failed.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"streamkeep serve exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"streamkeep serve did not become healthy:\n{log.read_text()[-3000:]}")
