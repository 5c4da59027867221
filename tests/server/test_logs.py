"""`streamkeep serve --log-format json` as a real process: every line a JSON object with
the ids it is about, and no message content; with OTLP export on (into a real receiver),
the trace ids of the lines are the exported trace's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.conftest import free_port
from tests.fakes.upstream import FakeUpstream
from tests.fakes.upstream_wire import calls_directive
from tests.otlp import OtlpReceiver
from tests.server.sse import read_all
from tests.server.test_serve import wait_ready

pytestmark = pytest.mark.slow

SECRET = "PAPAYA-42-SECRET"
TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@contextmanager
def serve_json(data_dir: Path, upstream: FakeUpstream, *args: str, **env: str) -> Iterator[Any]:
    port = free_port()
    environ = os.environ | {
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_API_KEY": "x",
        "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
        "STREAMKEEP_MODEL": "openai/fake-model",
        **env,
    }
    cmd = [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)]
    cmd += ["--data-dir", str(data_dir), "--log-level", "info", *args]
    proc = subprocess.Popen(cmd, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    proc.port = port  # type: ignore[attr-defined]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


def stop(proc: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """SIGTERM, then every line it wrote to stderr, each parsed (or the test fails)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.wait(timeout=30) == -signal.SIGTERM  # uvicorn re-raises it at exit
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert lines
    parsed = []
    for line in lines:
        record = orjson.loads(line)  # raises on a line that is not JSON
        assert isinstance(record, dict), line
        assert {"time", "level", "logger", "message"} <= record.keys(), line
        parsed.append(record)
    return parsed


async def test_json_lines_carry_the_ids_and_no_content(
    data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    with (
        OtlpReceiver() as receiver,
        serve_json(
            data_dir,
            fake_upstream,
            "--log-format",
            "json",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
        ) as proc,
    ):
        client = await wait_ready(proc)
        r = await client.post(
            "/api/chats", json={"tools": ["calculator"]}, headers={"x-request-id": "req-make-chat"}
        )
        chat_id = r.json()["id"]
        path = f"/api/chats/{chat_id}/messages"
        directive = calls_directive([("calculator", {"expression": "6*7"})])
        body = {"content": f"{directive} {SECRET}"}
        # The caller's W3C trace context is continued.
        headers = {"x-request-id": "req-reply-1", "traceparent": f"00-{TRACE}-{PARENT}-01"}
        async with client.stream("POST", path, json=body, headers=headers) as r:
            assert r.headers["x-request-id"] == "req-reply-1"
            await read_all(r)
        await client.aclose()
        records = stop(proc)
        spans = receiver.received.spans()

    text = orjson.dumps(records).decode()
    assert SECRET not in text
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert {"req-make-chat", "req-reply-1"} <= {r.get("request_id") for r in access}
    ended = [r for r in records if r["message"].startswith("generation ended")]
    assert len(ended) == 1
    line = ended[0]
    assert line["level"] == "info"
    assert line["logger"] == "streamkeep.generation.generation"
    assert line["chat_id"] == chat_id
    assert line["request_id"] == "req-reply-1"
    generation = [s for s in spans if s.name == "generation"]
    assert [s.attributes["streamkeep.generation.id"] for s in generation] == [line["generation_id"]]
    assert line["trace_id"] == generation[0].trace_id == TRACE
    [request] = [s for s in spans if s.span_id == generation[0].parent_span_id]
    assert request.parent_span_id == PARENT
    # The tool call ran under the generation, its arguments and result left out.
    [tool] = [s for s in spans if s.name == "execute_tool calculator"]
    assert tool.parent_span_id == generation[0].span_id
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    assert "6*7" not in str(tool.attributes)
    children = [s.name for s in spans if s.parent_span_id == generation[0].span_id]
    assert children.count("chat fake-model") == 2  # two steps: the call, then the answer
    assert generation[0].attributes["streamkeep.generation.steps"] == 2
    assert line["span_id"] == generation[0].span_id


async def test_the_setting_turns_json_on_too(data_dir: Path, fake_upstream: FakeUpstream) -> None:
    with serve_json(data_dir, fake_upstream, STREAMKEEP_LOG_FORMAT="json") as proc:
        client = await wait_ready(proc)
        assert (await client.get("/healthz")).status_code == 200
        await client.aclose()
        records = stop(proc)
    assert any(r["logger"] == "uvicorn.access" and "request_id" in r for r in records)
    # No SDK without an OTLP endpoint: no trace ids.
    assert not any("trace_id" in r for r in records)


def test_a_bad_log_format_is_refused(data_dir: Path, fake_upstream: FakeUpstream) -> None:
    with serve_json(data_dir, fake_upstream, STREAMKEEP_LOG_FORMAT="yaml") as proc:
        assert proc.wait(timeout=30) == 2
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    assert "log_format" in err
