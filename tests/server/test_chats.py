"""Chats over HTTP: create, list (paged), read, update, delete, and bad input."""

from __future__ import annotations

from tests.server.conftest import MODEL, Server


async def test_create_read_update_delete(server: Server) -> None:
    c = server.client
    r = await c.post("/api/chats", json={"title": "first", "system": "be brief"})
    assert r.status_code == 201
    chat = r.json()
    assert chat["title"] == "first"
    assert chat["model"] == MODEL
    assert chat["system"] == "be brief"

    r = await c.get(f"/api/chats/{chat['id']}")
    assert r.status_code == 200
    detail = r.json()
    assert detail["messages"] == []
    assert detail["active_generation"] is None

    r = await c.patch(f"/api/chats/{chat['id']}", json={"title": "renamed"})
    assert r.status_code == 200
    assert r.json()["title"] == "renamed"
    assert (await c.get(f"/api/chats/{chat['id']}")).json()["title"] == "renamed"

    r = await c.delete(f"/api/chats/{chat['id']}")
    assert r.status_code == 204
    r = await c.get(f"/api/chats/{chat['id']}")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found"


async def test_list_pages_with_a_cursor(server: Server) -> None:
    ids = [(await server.new_chat(title=f"c{i}"))["id"] for i in range(3)]
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        params = {"limit": 1} | ({"cursor": cursor} if cursor else {})
        r = await server.client.get("/api/chats", params=params)
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) == 1
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert cursor is None
    assert seen == list(reversed(ids))  # newest first


async def test_unknown_chat_is_404_everywhere(server: Server) -> None:
    c = server.client
    for method, path, body in (
        ("GET", "/api/chats/nope", None),
        ("PATCH", "/api/chats/nope", {"title": "x"}),
        ("DELETE", "/api/chats/nope", None),
        ("GET", "/api/messages/nope", None),
        ("GET", "/api/chats/nope/stream", None),
        ("POST", "/api/chats/nope/stop", None),
    ):
        r = await c.request(method, path, json=body)
        assert r.status_code == 404, (method, path, r.text)
        assert set(r.json()["error"]) >= {"type", "message"}


async def test_unknown_model_is_404_and_creates_nothing(server: Server) -> None:
    r = await server.client.post("/api/chats", json={"model": "fake/no-such-model"})
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "unknown_model"
    chat = await server.new_chat(title="keep")
    r = await server.client.patch(f"/api/chats/{chat['id']}", json={"model": "nobody/x"})
    assert r.status_code == 404
    # Bad input changed nothing: no chat from the failed create, the model is unchanged.
    assert (await server.client.get("/api/chats")).json()["items"] == [chat]


async def test_malformed_bodies_are_422_naming_the_field(server: Server) -> None:
    c = server.client
    r = await c.post("/api/chats", json={"title": 5})
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["type"] == "invalid_request"
    assert err["field"] == "title"
    assert "title" in err["message"]

    r = await c.post("/api/chats", json={"titel": "typo"})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "titel"

    r = await c.post(
        "/api/chats", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["type"] == "invalid_request"

    r = await c.get("/api/chats", params={"limit": 0})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == "limit"

    r = await c.get("/api/chats", params={"cursor": "garbage"})
    assert r.status_code == 422
    assert (await c.get("/api/chats")).json() == {"items": [], "next_cursor": None}


async def test_invalid_json_says_where_it_breaks_as_the_gateway_does(server: Server) -> None:
    chat = await server.new_chat()
    broken = '{\n  "content": "x"\n  "model": "y"\n}'
    expected = (
        "The request body is not valid JSON: unexpected character, expected ',' or '}': "
        "line 3 column 3 (char 21)"
    )
    json_headers = {"content-type": "application/json"}
    for path in ("/api/chats", f"/api/chats/{chat['id']}/messages", "/api/chat"):
        r = await server.client.post(path, content=broken, headers=json_headers)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert (error["type"], error["field"], error["message"]) == (
            "invalid_request",
            "body",
            expected,
        )
    r = await server.client.post("/v1/chat/completions", content=broken, headers=json_headers)
    assert r.json()["error"]["message"] == expected
    r = await server.client.post(
        "/api/chats", content=b'{"title": "caf\xe9"}', headers=json_headers
    )
    assert r.status_code == 422
    assert r.json()["error"]["message"] == (
        "The request body is not valid JSON: it is not UTF-8 (byte 0xe9 at position 14)"
    )
    assert (await server.client.get("/api/chats")).json()["items"] == [chat]
    assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []


async def test_a_nul_character_in_input_is_refused_and_changes_nothing(server: Server) -> None:
    r = await server.client.post("/api/chats", json={"title": "a\x00b"})
    assert r.status_code == 422 and "NUL" in r.json()["error"]["message"]
    chat = await server.new_chat()
    r = await server.client.post(f"/api/chats/{chat['id']}/messages", json={"content": "x\x00"})
    assert r.status_code == 422
    assert (await server.client.get(f"/api/chats/{chat['id']}")).json()["messages"] == []
