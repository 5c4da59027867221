"""`/docs` is served whole by the server: its page, Swagger UI's files and their licence
(the page itself is driven in a browser with no network in tests/browser/test_docs.py)."""

from __future__ import annotations

import re

from tests.server.conftest import Server

TYPES = {"script": "text/javascript", "link": "text/css"}


async def test_docs_page_and_every_file_it_loads_come_from_the_server(server: Server) -> None:
    c = server.client
    page = await c.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    loads = re.findall(r'<(script|link) [^>]*(?:src|href)="([^"]*)"', page.text)
    assert [url for _, url in loads] == [
        "data:,",  # no favicon fetched
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/init.js",
    ]
    assert "<script>" not in page.text and "<style" not in page.text  # nothing inline
    assert 'data-openapi-url="/openapi.json"' in page.text
    for tag, url in loads[1:]:
        r = await c.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"].startswith(TYPES[tag]), url
    licence = await c.get("/docs/LICENSE")
    assert licence.status_code == 200 and "Apache License" in licence.text


async def test_redoc_is_off(server: Server) -> None:
    # ReDoc would need inline styles and a blob: worker; /docs shows the same API.
    assert (await server.client.get("/redoc")).status_code == 404
