"""The OpenAPI document says what the server answers: statuses, bodies, stream headers,
and `Allow` on a 405 (what the fuzzing in `test_fuzz` found missing, one test each)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.core.failures import Failure

from tests.server.conftest import Server
from tests.server.sse import parse_block


@pytest.fixture
async def database_url(data_dir: Path) -> str:
    """SQLite only: nothing here depends on the database."""
    return f"sqlite:///{data_dir / 'streamkeep.db'}"


async def documents(server: Server) -> tuple[dict[str, Any], Any]:
    """The served OpenAPI document, and Schemathesis's view of it (to validate bodies)."""
    doc = (await server.client.get("/openapi.json")).json()
    return doc, schemathesis.openapi.from_dict(copy.deepcopy(doc))


def declared(doc: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    responses: dict[str, Any] = doc["paths"][path][method.lower()]["responses"]
    return responses


def answer(real: httpx.Response, status: int, **content: Any) -> httpx.Response:
    """A response the server did not give, to the request of one it gave."""
    made = httpx.Response(status, request=real.request, **content)
    made.elapsed = real.elapsed
    return made


async def test_405_allows_every_method_of_the_path(server: Server) -> None:
    for method in ("OPTIONS", "PUT", "DELETE"):
        r = await server.client.request(method, "/api/chats")
        assert r.status_code == 405, method
        assert r.headers["allow"] == "GET, POST"
        assert r.json()["error"]["type"] == "http_error"


async def test_a_route_path_with_another_method_is_not_a_missing_page_file(
    server: Server,
) -> None:
    for method, path, allow in (
        ("GET", "/api/chats/x/messages", "POST"),
        ("GET", "/api/chats/x/stop", "POST"),
        ("POST", "/api/chats/x/stream", "GET"),
        ("POST", "/openapi.json", "GET, HEAD"),
        ("DELETE", "/v1/chat/completions", "POST"),
    ):
        r = await server.client.request(method, path)
        assert (r.status_code, r.headers.get("allow")) == (405, allow), (method, path)
    # The page itself is still there, and a file it does not have is a 404.
    assert (await server.client.get("/")).status_code == 200
    assert (await server.client.get("/style.css")).status_code == 200
    missing = await server.client.get("/no-such-file.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["type"] == "not_found"
    post = await server.client.post("/")
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")


async def test_a_body_that_is_not_utf8_is_a_declared_422(server: Server) -> None:
    r = await server.client.post(
        "/api/chats", content=b"\xe5h", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_request"
    assert "not UTF-8" in r.json()["error"]["message"]
    doc, spec = await documents(server)
    for path, method in (("/api/chats", "POST"), ("/api/chats/{chat_id}/messages", "POST")):
        assert {"400", "422"} <= set(declared(doc, path, method))  # 400: a Host refused
    spec["/api/chats"]["POST"].validate_response(r)


async def test_gateway_errors_are_declared_in_openai_shape(server: Server) -> None:
    doc, spec = await documents(server)
    assert {"400", "404", "409", "502", "503", "504"} <= set(
        declared(doc, "/v1/chat/completions", "POST")
    )
    operation = spec["/v1/chat/completions"]["POST"]
    bad = await server.client.post("/v1/chat/completions", content=b"")
    assert bad.status_code == 400
    operation.validate_response(bad)
    broken = answer(bad, 400, json={"message": "not in an error object"})
    with pytest.raises(Failure):
        operation.validate_response(broken)  # the declared shape is checked
    unknown = await server.client.post(
        "/v1/chat/completions",
        json={"model": "fake/none", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert unknown.status_code == 404
    operation.validate_response(unknown)
    assert unknown.json()["error"]["code"] == "model_not_found"


async def test_a_stream_has_the_declared_headers_and_an_id_on_every_event(
    server: Server,
) -> None:
    doc, spec = await documents(server)
    chat = await server.new_chat()
    r = await server.client.post(f"/api/chats/{chat['id']}/messages", json={"content": "hi"})
    assert r.status_code == 200
    ok = declared(doc, "/api/chats/{chat_id}/messages", "POST")["200"]
    assert {h for h, d in ok["headers"].items() if d["required"]} <= set(r.headers)
    operation = spec["/api/chats/{chat_id}/messages"]["POST"]
    operation.validate_response(r)  # every event against the declared event schema
    events = [parse_block(block) for block in r.text.split("\n\n") if block.strip()]
    assert events[-1].type == "[DONE]"
    no_id = answer(r, 200, headers=r.headers, text='data: {"type":"start"}\n\n')
    with pytest.raises(Failure):
        operation.validate_response(no_id)
    # Where the stream's headers lead: the stored reply, and the chat.
    links = ok["links"]
    assert links["message"]["operationRef"] == "#/paths/~1api~1messages~1{message_id}/get"
    assert links["message"]["parameters"] == {
        "message_id": "$response.header.x-streamkeep-message-id"
    }
    message = await server.client.get(f"/api/messages/{r.headers['x-streamkeep-message-id']}")
    assert message.json()["role"] == "assistant"
    assert r.headers["x-streamkeep-chat-id"] == chat["id"]
