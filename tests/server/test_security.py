"""Whom the server answers (`Host`, `Origin`) and the security headers it sends.

A real server on loopback; the `Host` and `Origin` headers are set the way a browser
on another site (or a DNS-rebinding page) would send them.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from streamkeep.config import load_settings
from streamkeep.server.security import CSP, same_origin, split_authority
from tests.server.conftest import Server, ServerFactory
from tests.server.sse import read_all


@pytest.fixture
async def database_url(data_dir: Path) -> str:
    """SQLite only: nothing here depends on the database."""
    return f"sqlite:///{data_dir / 'streamkeep.db'}"


def port_of(server: Server) -> int:
    port = urlsplit(server.url).port
    assert port is not None
    return port


async def chat_count(server: Server) -> int:
    return len((await server.client.get("/api/chats")).json()["items"])


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/"),
        ("GET", "/app.js"),
        ("GET", "/api/chats"),
        ("POST", "/api/chats"),
        ("GET", "/v1/models"),
        ("GET", "/openapi.json"),
        ("GET", "/healthz"),
    ],
)
async def test_a_foreign_host_is_refused_everywhere(server: Server, method: str, path: str) -> None:
    for host in ("evil.example", f"evil.example:{port_of(server)}", "localhost.evil.example"):
        kwargs = {"json": {}} if method == "POST" else {}
        r = await server.client.request(method, path, headers={"Host": host}, **kwargs)
        assert r.status_code == 400, (host, r.text)
        assert r.json()["error"]["type"] == "invalid_host"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert await chat_count(server) == 0  # the refused POST created nothing


async def test_a_rebinding_page_cannot_read_the_chats(server: Server) -> None:
    chat = await server.new_chat(title="private")
    r = await server.client.get(f"/api/chats/{chat['id']}", headers={"Host": "rebind.example"})
    assert r.status_code == 400
    assert "private" not in r.text


async def test_loopback_names_and_addresses_pass(server: Server) -> None:
    port = port_of(server)
    for host in (
        "localhost",
        f"localhost:{port}",
        f"LocalHost.:{port}",
        f"127.0.0.1:{port}",
        f"[::1]:{port}",
        "[::1]",
        "127.0.0.2",  # any address: a rebinding needs a name
    ):
        r = await server.client.get("/api/chats", headers={"Host": host})
        assert r.status_code == 200, (host, r.text)


async def test_http10_without_a_host_is_answered(server: Server) -> None:
    # Not a browser (a browser always names the host), so it cannot be a rebinding.
    url = urlsplit(server.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


async def test_malformed_hosts_are_refused(server: Server) -> None:
    for host in ("::1", "[::1", "localhost:port", "", "[::1]x"):
        r = await server.client.get("/healthz", headers={"Host": host})
        assert r.status_code == 400, (host, r.text)


async def test_the_configured_host_and_the_allowed_hosts_pass(
    server_factory: ServerFactory,
) -> None:
    server = await server_factory(
        host="chat.internal", allowed_hosts=["chat.example.com", "*.corp.example"]
    )
    port = port_of(server)
    for host in (f"chat.internal:{port}", "chat.example.com", "a.b.corp.example:443"):
        assert (await server.client.get("/api/chats", headers={"Host": host})).status_code == 200
    for host in ("corp.example", "example.com", "evil.example"):
        assert (await server.client.get("/api/chats", headers={"Host": host})).status_code == 400


async def test_a_star_answers_every_host(server_factory: ServerFactory) -> None:
    server = await server_factory(allowed_hosts=["*"])
    assert (await server.client.get("/", headers={"Host": "anything.example"})).status_code == 200


async def test_listening_on_every_interface_names_no_host(server_factory: ServerFactory) -> None:
    server = await server_factory(host="0.0.0.0")
    for address in ("0.0.0.0", "192.0.2.7:8000", "[2001:db8::7]:8000"):
        r = await server.client.get("/healthz", headers={"Host": address})
        assert r.status_code == 200, address
    r = await server.client.get("/healthz", headers={"Host": "myhost.lan:8000"})
    assert r.status_code == 400


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMKEEP_ALLOWED_HOSTS", " chat.example.com, *.corp.example ,")
    assert load_settings().allowed_hosts == ["chat.example.com", "*.corp.example"]
    assert load_settings(allowed_hosts="a.example").allowed_hosts == ["a.example"]


async def test_a_post_from_another_site_is_refused(server: Server) -> None:
    own = server.url  # http://127.0.0.1:PORT
    for origin in ("http://evil.example", "null", own.replace("127.0.0.1", "localhost")):
        r = await server.client.post("/api/chats", json={}, headers={"Origin": origin})
        assert r.status_code == 403, (origin, r.text)
        assert r.json()["error"]["type"] == "cross_origin"
        # text/plain needs no CORS preflight: the gateway parses such a body as JSON.
        body = b'{"model": "fake/fake-model", "messages": [{"role": "user", "content": "hi"}]}'
        r = await server.client.post(
            "/v1/chat/completions",
            content=body,
            headers={"Origin": origin, "Content-Type": "text/plain"},
        )
        assert r.status_code == 403
    assert await chat_count(server) == 0
    assert server.upstream.requests == []


async def test_the_page_own_requests_and_reads_pass(server: Server) -> None:
    r = await server.client.post("/api/chats", json={}, headers={"Origin": server.url})
    assert r.status_code == 201
    # A read from another site's page: allowed (without CORS headers it cannot read it).
    r = await server.client.get("/api/chats", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers


async def test_security_headers_on_the_page_the_api_and_streams(server: Server) -> None:
    page = await server.client.get("/")
    for r in (page, await server.client.get("/style.css"), await server.client.get("/app.js")):
        assert r.status_code == 200
        assert r.headers["content-security-policy"] == CSP
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert (
        (await server.client.get("/app.js")).headers["content-type"].startswith("text/javascript")
    )
    api = await server.client.get("/api/chats")
    assert api.headers["x-content-type-options"] == "nosniff"
    chat = await server.new_chat()
    async with server.client.stream(
        "POST", f"/api/chats/{chat['id']}/messages", json={"content": "hi"}
    ) as r:
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-type"].startswith("text/event-stream")
        events = await read_all(r)
    assert events[-1].type == "[DONE]"
    docs = await server.client.get("/docs")
    assert docs.headers["content-security-policy"] == CSP
    missing = await server.client.get("/api/chats/nope")
    assert missing.status_code == 404
    assert missing.headers["x-content-type-options"] == "nosniff"


def test_page_csp_allows_only_the_page_own_resources() -> None:
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CSP


@pytest.mark.parametrize(
    ("authority", "parsed"),
    [
        ("localhost", ("localhost", "")),
        ("LOCALHOST.:8000", ("localhost", "8000")),
        ("[::1]:8000", ("::1", "8000")),
        ("[::1]", ("::1", "")),
        ("::1", None),
        ("[::1", None),
        ("a:b", None),
        (":80", None),
    ],
)
def test_split_authority(authority: str, parsed: tuple[str, str] | None) -> None:
    assert split_authority(authority) == parsed


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("https://chat.example.com", "chat.example.com", True),
        ("https://chat.example.com", "chat.example.com:443", True),
        ("http://localhost:3000", "localhost:8000", False),
        ("http://localhost", "localhost:8000", False),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),
        ("file://", "127.0.0.1:8000", False),
    ],
)
def test_same_origin(origin: str, host: str, same: bool) -> None:
    assert same_origin(origin, host) is same
