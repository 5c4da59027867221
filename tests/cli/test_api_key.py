"""`streamkeep chats` and `streamkeep chat` against a server with users: an API key from
STREAMKEEP_API_KEY (or --api-key) is sent; without one, the error says what to do."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

from streamkeep.store import ChatStore, Database
from tests.cli.conftest import STREAMKEEP, LiveServer


async def _make_user_and_key(data_dir: Path) -> str:
    database = Database.from_url(f"sqlite:///{data_dir / 'streamkeep.db'}")
    try:
        store = ChatStore(database)
        user = await store.create_user("alice", "pw")
        return (await store.create_api_key(user.id))[1]
    finally:
        await database.dispose()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STREAMKEEP, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_commands_send_the_api_key_and_say_when_one_is_needed(
    live_server: LiveServer,
) -> None:
    data_dir = live_server.config.parent / "data"
    key = asyncio.run(_make_user_and_key(data_dir))

    refused = _run(live_server.env, "chats", "list")
    assert refused.returncode == 1
    assert "STREAMKEEP_API_KEY" in refused.stderr and "streamkeep keys create" in refused.stderr

    env = {**live_server.env, "STREAMKEEP_API_KEY": key}
    said = _run(env, "chat", "[[tokens=2]] hello")
    assert said.returncode == 0, said.stderr
    listed = _run(env, "chats", "list")
    assert listed.returncode == 0, listed.stderr
    assert "hello" in listed.stdout  # the chat's title
    flagged = _run(live_server.env, "chats", "list", "--api-key", key)
    assert flagged.returncode == 0 and "hello" in flagged.stdout
