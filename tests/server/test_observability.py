"""`x-request-id` on every response, the Prometheus metrics an operator acts on (read by
prometheus_client's own parser), and nothing of the OpenTelemetry SDK loaded unless an
OTLP endpoint is set."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from streamkeep.telemetry import wanted
from tests.fakes.upstream import Script
from tests.otlp import OtlpReceiver
from tests.server.conftest import Server
from tests.server.sse import read_all

GENERATED = re.compile(r"[0-9a-f]{32}")

# Every metric of issue 19's list, by family name (the parser drops `_total`), and its
# labels. Types: what `# TYPE` says.
EXPECTED: dict[str, tuple[str, set[str]]] = {
    "streamkeep_active_generations": ("gauge", set()),
    "streamkeep_active_streams": ("gauge", set()),
    "streamkeep_generations_started": ("counter", set()),
    "streamkeep_generations_finished": ("counter", {"status", "model"}),
    "streamkeep_time_to_first_token_seconds": ("histogram", set()),
    "streamkeep_model_time_to_first_token_seconds": ("histogram", {"model"}),
    "streamkeep_model_output_tokens_per_second": ("histogram", {"model"}),
    "streamkeep_provider_calls": ("counter", {"provider", "outcome"}),
    "streamkeep_provider_errors": ("counter", {"provider", "kind"}),
    "streamkeep_provider_retries": ("counter", {"provider", "kind"}),
    "streamkeep_checkpoint_lag_seconds": ("gauge", set()),
    "streamkeep_db_transaction_duration_seconds": ("histogram", {"kind"}),
    "streamkeep_redis_flush_duration_seconds": ("histogram", set()),
    "streamkeep_relay_queue_depth": ("gauge", set()),
    "streamkeep_stream_backlog_frames": ("gauge", set()),
    "streamkeep_stream_backlog_frames_max": ("gauge", set()),
    "streamkeep_http_requests": ("counter", {"method", "route", "status"}),
    "streamkeep_http_request_duration_seconds": ("histogram", {"method", "route"}),
    "streamkeep_relayed_chunks": ("counter", set()),
    "streamkeep_db_statements": ("counter", {"kind"}),
    "streamkeep_db_commits": ("counter", set()),
}


async def test_request_ids_are_kept_or_made_and_always_returned(server: Server) -> None:
    c = server.client
    r = await c.get("/healthz", headers={"x-request-id": "lb-7f3a:21/x=1"})
    assert r.headers["x-request-id"] == "lb-7f3a:21/x=1"
    for bad in ("a b", "x" * 129, "café", 'q"uote', ""):
        r = await c.get("/healthz", headers={"x-request-id": bad.encode()})
        assert GENERATED.fullmatch(r.headers["x-request-id"]), bad
    made = {(await c.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3 and all(GENERATED.fullmatch(m) for m in made)
    # Errors: a route's own, routing's, validation's, one refused before routing.
    r = await c.get("/api/chats/nope", headers={"x-request-id": "e1"})
    assert (r.status_code, r.headers["x-request-id"]) == (404, "e1")
    r = await c.post("/api/chats", content=b"{", headers={"x-request-id": "e2"})
    assert (r.status_code, r.headers["x-request-id"]) == (422, "e2")
    big = b"x" * (server.app.state.settings.max_body_bytes + 1)
    r = await c.post("/api/chats", content=big, headers={"x-request-id": "e3"})
    assert (r.status_code, r.headers["x-request-id"]) == (413, "e3")
    # A stream, and its resume.
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    async with c.stream("POST", path, json={"content": "hi"}, headers={"x-request-id": "s1"}) as r:
        assert r.headers["x-request-id"] == "s1"
        await read_all(r)


def families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    return {f.name: (f.type, f.samples) for f in text_string_to_metric_families(text)}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


async def test_metrics_parse_and_answer_operators(server: Server) -> None:
    c = server.client
    chat = await server.new_chat()
    path = f"/api/chats/{chat['id']}/messages"
    server.upstream.enqueue(Script(status=503, retry_after=0.0))  # retried, then answered
    async with c.stream("POST", path, json={"content": "[[tokens=20]] hi"}) as r:
        await read_all(r)
    async with c.stream("POST", path, json={"content": "[[status=400]] no"}) as r:
        await read_all(r)
    await server.app.state.manager.live(chat["id"]).wait()
    found = families((await c.get("/metrics")).text)
    for name, (kind, labels) in EXPECTED.items():
        assert name in found, name
        assert found[name][0] == kind, name
        for sample in found[name][1]:
            assert set(sample.labels) - {"le"} == labels, (name, sample)

    model = "fake/fake-model"
    _, finished = found["streamkeep_generations_finished"]
    assert value(finished, "streamkeep_generations_finished_total", status="complete", model=model)
    assert value(finished, "streamkeep_generations_finished_total", status="error", model=model)
    _, errors = found["streamkeep_provider_errors"]
    assert value(errors, "streamkeep_provider_errors_total", provider="fake", kind="400") == 1
    _, calls = found["streamkeep_provider_calls"]
    assert value(calls, "streamkeep_provider_calls_total", provider="fake", outcome="ok") == 1
    _, retries = found["streamkeep_provider_retries"]
    assert value(retries, "streamkeep_provider_retries_total", provider="fake", kind="503") == 1
    _, ttft = found["streamkeep_model_time_to_first_token_seconds"]
    assert value(ttft, "streamkeep_model_time_to_first_token_seconds_count", model=model) == 1
    _, rate = found["streamkeep_model_output_tokens_per_second"]
    assert value(rate, "streamkeep_model_output_tokens_per_second_count", model=model) == 1
    _, requests = found["streamkeep_http_requests"]
    posted = value(
        requests,
        "streamkeep_http_requests_total",
        method="POST",
        route="/api/chats/{chat_id}/messages",
        status="200",
    )
    assert posted == 2
    _, db = found["streamkeep_db_transaction_duration_seconds"]
    assert value(db, "streamkeep_db_transaction_duration_seconds_count", kind="write") > 0
    _, lag = found["streamkeep_checkpoint_lag_seconds"]
    assert value(lag, "streamkeep_checkpoint_lag_seconds") >= 0
    # No id is ever a label.
    for _, samples in found.values():
        for sample in samples:
            assert chat["id"] not in str(sample.labels)


async def backlogs(server: Server) -> tuple[float, float]:
    """(all streams' unwritten frames, the deepest stream's), as /metrics says."""
    found = families((await server.client.get("/metrics")).text)
    (total,) = [s.value for s in found["streamkeep_stream_backlog_frames"][1]]
    (deepest,) = [s.value for s in found["streamkeep_stream_backlog_frames_max"][1]]
    return total, deepest


@pytest.mark.slow  # 100,000 tokens to a client that stops reading (~10 s)
async def test_a_client_that_stops_reading_shows_in_the_stream_backlog(server: Server) -> None:
    chat = await server.new_chat()
    url = urlsplit(server.url)
    assert url.hostname is not None and url.port is not None
    # A small receive window, and no reads: the kernel's buffers fill (a few MB) and the
    # rest of the answer waits in the generation's log for this client.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (url.hostname, url.port))
    reader, writer = await asyncio.open_connection(sock=sock)
    body = orjson.dumps({"content": "[[tokens=100000]] hi"})
    head = (
        f"POST /api/chats/{chat['id']}/messages HTTP/1.1\r\nhost: {url.netloc}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    try:
        async with asyncio.timeout(120):
            while True:
                generation = server.app.state.manager.live(chat["id"])
                if generation is not None:
                    break
                await asyncio.sleep(0.01)
            await generation.wait()  # every frame is in its log; the client read none
        total, deepest = await backlogs(server)
        assert deepest > 10_000  # most of the 100,000 deltas wait for this client
        assert total >= deepest
        # The client reads it all: nothing is left behind, and the stream's end takes
        # it out of the gauges.
        async with asyncio.timeout(120):
            seen = b""
            while b"data: [DONE]" not in seen[-64:]:
                seen = seen[-64:] + await reader.read(1 << 16)
            while True:
                if await backlogs(server) == (0.0, 0.0):
                    break
                await asyncio.sleep(0.05)
    finally:
        writer.close()


def _imports(tmp_path: Path, **env: str) -> set[str]:
    """The OpenTelemetry modules loaded by building an app and serving one request."""
    code = (
        "import sys, asyncio, httpx\n"
        "from streamkeep.server import create_app\n"
        "async def main():\n"
        "    app = create_app()\n"
        "    async with app.router.lifespan_context(app):\n"
        "        t = httpx.ASGITransport(app=app)\n"
        "        async with httpx.AsyncClient(transport=t, base_url='http://localhost') as c:\n"
        "            assert (await c.get('/healthz')).status_code == 200\n"
        "asyncio.run(main())\n"
        "print(' '.join(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    environ = os.environ | {
        "STREAMKEEP_DATA_DIR": str(tmp_path),
        "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
        **env,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, check=True, timeout=60
    )
    return set(out.stdout.decode().split())


def test_without_an_endpoint_nothing_of_the_sdk_is_imported(tmp_path: Path) -> None:
    loaded = _imports(tmp_path)
    assert "opentelemetry.trace" in loaded  # the API is always there
    # Not `opentelemetry.sdk` as a whole: redis-py (5.3+) imports the SDK's metrics
    # package itself when it is installed, for an observability feature of its own.
    ours = ("opentelemetry.sdk.trace", "opentelemetry.exporter", "opentelemetry.instrumentation")
    assert not {m for m in loaded if m.startswith(ours)}
    # The same program with an endpoint does load them: the check above can fail.
    with OtlpReceiver() as receiver:
        loaded = _imports(tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    assert "opentelemetry.sdk.trace" in loaded
    assert "opentelemetry.exporter.otlp.proto.http.trace_exporter" in loaded
    assert "opentelemetry.instrumentation.fastapi" in loaded


def test_the_dashboard_queries_metrics_that_exist_and_the_readme_shows_them() -> None:
    root = Path(__file__).resolve().parents[2]
    dashboard = orjson.loads((root / "docs" / "grafana-dashboard.json").read_bytes())
    readme = (root / "README.md").read_text(encoding="utf-8")
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 12
    shown = set()
    for expr in exprs:
        assert f"`{expr}`" in readme, expr
        for name in re.findall(r"streamkeep_\w+", expr):
            family = re.sub(r"_(bucket|total)$", "", name)
            assert family in EXPECTED, name
            shown.add(family)
    # Every metric of issue 19's list is on a panel (the older counters need not be).
    assert set(EXPECTED) - shown <= {
        "streamkeep_generations_started",
        "streamkeep_time_to_first_token_seconds",
        "streamkeep_relayed_chunks",
        "streamkeep_db_statements",
        "streamkeep_db_commits",
        "streamkeep_provider_calls",
        "streamkeep_http_request_duration_seconds",
        "streamkeep_stream_backlog_frames",  # the panel shows the deepest stream's
    }


def test_an_endpoint_without_the_otel_extra_is_a_clear_error(tmp_path: Path) -> None:
    # The exporter made unimportable in this process only, as if the extra were absent.
    code = (
        "import sys\n"
        "sys.modules['opentelemetry.exporter.otlp.proto.http.trace_exporter'] = None\n"
        "from streamkeep.cli import main\n"
        f"sys.exit(main(['serve', '--port', '0', '--data-dir', {str(tmp_path)!r}]))\n"
    )
    environ = os.environ | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
        "STREAMKEEP_ENABLE_LOCAL_MODEL": "false",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, timeout=60, check=False
    )
    assert out.returncode == 2
    assert "pip install 'streamkeep[otel]'" in out.stderr.decode()


def test_which_environments_ask_for_export() -> None:
    endpoint = "http://collector:4318"
    assert not wanted({})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint})
    assert wanted({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": endpoint})
    assert not wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "TRUE"})
    assert wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "false"})
