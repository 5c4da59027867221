"""Operations endpoints, the OpenAPI document, and refusing work while shutting down."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import httpx
from sqlalchemy.engine import make_url

from streamkeep.server import begin_shutdown
from tests.conftest import free_port
from tests.fakes.upstream import FakeUpstream
from tests.pg import execute
from tests.server.conftest import (
    Server,
    ServerFactory,
    make_settings,
    start_server,
    stop_server,
)
from tests.server.proxy import Proxy
from tests.server.sse import read_all
from tests.services import PostgresServer


async def test_health_ready_and_docs(server: Server) -> None:
    c = server.client
    assert (await c.get("/healthz")).json() == {"status": "ok"}
    r = await c.get("/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {"database": "ok"}
    spec = (await c.get("/openapi.json")).json()
    for path in ("/api/chats", "/api/chats/{chat_id}/stream", "/api/chat", "/metrics"):
        assert path in spec["paths"]
    assert "active_leaf_id" in str(spec["paths"]["/api/chats/{chat_id}"]["patch"])
    assert (await c.get("/docs")).status_code == 200
    page = await c.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")


async def test_readyz_names_an_unreachable_redis(server_factory: ServerFactory) -> None:
    server = await server_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    r = await server.client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"
    assert body["error"]["type"] == "not_ready"
    assert "redis" in body["error"]["message"]


async def test_an_unreachable_redis_is_503_only_for_what_needs_it(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    chat = await server.new_chat()
    # Whether another worker runs this chat: only Redis knows.
    r = await server.client.get(f"/api/chats/{chat['id']}/stream")
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "redis_unavailable"
    assert r.headers["retry-after"] == "1"
    # This worker's own replies run on; their frames wait for Redis.
    async with server.client.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "hi"}
    ) as r:
        evts = await read_all(r)
    assert [e.type for e in evts][-2:] == ["finish", "[DONE]"]
    message = await server.client.get(f"/api/messages/{r.headers['x-streamkeep-message-id']}")
    assert message.json()["status"] == "complete"


async def test_metrics_count_generations_and_writes(server: Server) -> None:
    chat = await server.new_chat()
    async with server.client.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "hi"}
    ) as r:
        evts = await read_all(r)
    await server.app.state.manager.live(chat["id"]).wait()
    text = (await server.client.get("/metrics")).text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    assert float(samples["streamkeep_generations_started_total"]) == 1
    finished = samples[
        'streamkeep_generations_finished_total{model="fake/fake-model",status="complete"}'
    ]
    assert float(finished) == 1
    assert float(samples["streamkeep_relayed_chunks_total"]) == len(evts)
    assert float(samples["streamkeep_time_to_first_token_seconds_count"]) == 1
    assert float(samples['streamkeep_db_statements_total{kind="write"}']) > 0


async def test_shutting_down_refuses_new_generations(server: Server) -> None:
    chat = await server.new_chat()
    await begin_shutdown(server.app)
    r = await server.client.post(f"/api/chats/{chat['id']}/messages", json={"content": "x"})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "shutting_down"
    assert (await server.client.get("/readyz")).status_code == 503
    assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []


async def test_an_unreachable_database_is_503(
    postgres_url: str, data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    url = make_url(postgres_url)
    await execute(postgres_url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    via_proxy = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    running = await start_server(
        make_settings(data_dir, fake_upstream.base_url, database_url=via_proxy)
    )
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            chat = (await client.post("/api/chats", json={})).json()
            await proxy.cut()
            r = await client.get("/api/chats")
            assert r.status_code == 503
            assert r.json()["error"]["type"] == "database_unavailable"
            r = await client.post(f"/api/chats/{chat['id']}/messages", json={"content": "x"})
            assert r.status_code == 503
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["checks"]["database"] != "ok"
            assert (await client.get("/healthz")).status_code == 200
            assert fake_upstream.requests == []
    finally:
        await proxy.cut()
        await stop_server(running)


async def test_a_database_connection_ended_mid_request_is_503(
    private_postgres: PostgresServer, data_dir: Path, fake_upstream: FakeUpstream
) -> None:
    """What a request in flight gets when PostgreSQL restarts (or ends its session)."""
    db_url = private_postgres.create_database("sk_midrequest")
    running = await start_server(
        make_settings(data_dir, fake_upstream.base_url, database_url=db_url)
    )
    locker = await asyncpg.connect(db_url)
    waiting = "SELECT pid FROM pg_locks WHERE NOT granted"  # not a per-transaction snapshot
    try:
        async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
            chat = (await client.post("/api/chats", json={})).json()
            for method, path, body in [
                ("GET", "/api/chats", None),
                ("POST", f"/api/chats/{chat['id']}/messages", {"content": "hi"}),
            ]:
                async with locker.transaction():
                    await locker.execute("LOCK TABLE chats IN ACCESS EXCLUSIVE MODE")
                    request = asyncio.create_task(client.request(method, path, json=body))
                    # Its statement waits for the lock: end its session under it.
                    while not await locker.fetch(waiting):
                        assert not request.done(), request.result().text
                        await asyncio.sleep(0.01)
                    await locker.execute(f"SELECT pg_terminate_backend(pid) FROM ({waiting}) w")
                    r = await request
                assert r.status_code == 503, r.text
                assert r.json()["error"]["type"] == "database_unavailable"
            assert (await client.get(f"/api/chats/{chat['id']}")).status_code == 200
            assert fake_upstream.requests == []
    finally:
        await locker.close()
        await stop_server(running)
