"""A database fault under a message's write: the log lines say what failed, never the
message's content (SQLAlchemy's errors carry the statement's bound parameters)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from tests.fakes.upstream import FakeUpstream
from tests.server.test_logs import serve_json, stop
from tests.server.test_serve import wait_ready

pytestmark = pytest.mark.slow

SECRET = "GUAVA-77-SECRET"


async def test_a_failed_write_of_a_message_logs_no_content(
    data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    with serve_json(data_dir, fake_upstream, "--log-format", "json") as proc:
        client = await wait_ready(proc)
        chat_id = (await client.post("/api/chats", json={})).json()["id"]
        # A real fault of the real file: every change of a message is refused by SQLite itself.
        with sqlite3.connect(data_dir / "streamkeep.db") as db:
            db.execute(
                "CREATE TRIGGER refuse BEFORE UPDATE ON messages "
                "BEGIN SELECT RAISE(ABORT, 'disk refused'); END"
            )
        r = await client.post(f"/api/chats/{chat_id}/messages", json={"content": SECRET})
        assert r.status_code == 200  # the stream answers; its rows are what fails
        await client.aclose()
        records = stop(proc)
    assert any("disk refused" in orjson.dumps(r).decode() for r in records)
    assert SECRET not in orjson.dumps(records).decode()
