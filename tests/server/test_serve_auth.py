"""`streamkeep serve` beyond loopback: refused with no user unless `--no-auth`.

Real processes; 0.0.0.0 is every interface of this machine, so each run takes a free
port and is stopped at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from streamkeep.store import ChatStore, Database
from tests.conftest import free_port

pytestmark = pytest.mark.slow


def _serve(data_dir: Path, *flags: str, **extra_env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "streamkeep", "serve", "--host", "0.0.0.0"]
    cmd += ["--port", str(free_port()), "--data-dir", str(data_dir), "--log-level", "warning"]
    env = os.environ | {"STREAMKEEP_ENABLE_LOCAL_MODEL": "false"} | extra_env
    return subprocess.Popen(
        [*cmd, *flags], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_listening_everywhere_with_no_user_is_refused_with_what_to_do(tmp_path: Path) -> None:
    proc = _serve(tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "refusing to listen on 0.0.0.0 with no user" in err
    assert "streamkeep users create NAME --admin" in err and "--no-auth" in err
    assert "serving" not in out


async def test_no_auth_serves_everywhere_with_a_warning(tmp_path: Path) -> None:
    proc = _serve(tmp_path, "--no-auth")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert "streamkeep serving on http://0.0.0.0:" in line
        port = line.strip().rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            async with asyncio.timeout(60):
                while True:
                    try:
                        if (await c.get("/api/me")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            assert (await c.get("/api/me")).json()["auth"] is False
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "WARNING: auth is off" in err


async def test_listening_everywhere_with_a_user_starts_with_auth_on(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite:///{tmp_path / 'streamkeep.db'}")
    await database.upgrade()
    await ChatStore(database).create_user("admin", "pw", is_admin=True)
    await database.dispose()
    proc = _serve(tmp_path)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        port = line.strip().rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            async with asyncio.timeout(60):
                while True:
                    try:
                        r = await c.get("/api/chats")
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            assert r.status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=60)


async def test_an_external_identity_serves_everywhere_with_auth_on_and_no_user(
    tmp_path: Path,
) -> None:
    # Its users arrive through the proxy (or a JWT, or OIDC): none needs creating first.
    proc = _serve(tmp_path, STREAMKEEP_TRUSTED_PROXIES="10.9.9.9/32")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert "streamkeep serving on http://0.0.0.0:" in line, line
        port = line.strip().rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            async with asyncio.timeout(60):
                while True:
                    try:
                        r = await c.get("/api/chats", headers={"x-forwarded-user": "mallory"})
                        break
                    except httpx.TransportError:
                        await asyncio.sleep(0.1)
            assert r.status_code == 401  # auth is on, and 127.0.0.1 is no trusted proxy
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "ignored X-Forwarded-User from 127.0.0.1" in err
