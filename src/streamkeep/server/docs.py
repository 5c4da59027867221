"""The API docs at `/docs` (Swagger UI), served by this server alone.

FastAPI's own page loads Swagger UI from a CDN, so offline it is blank. Here Swagger
UI's distribution files come from the `fastapi-standalone-docs` package, which ships
them with their licence (served as `/docs/LICENSE`); nothing on the page points off
the host.

The page has no inline script or style: Swagger UI starts from `/docs/init.js`, which
reads the OpenAPI URL from the page. So it runs under a strict Content-Security-Policy
(`default-src 'self'`) that allows `data:` images (`img-src 'self' data:`): its
stylesheet draws its icons as `data:` SVGs.

There is no `/redoc`: ReDoc injects its styles inline (`style-src 'unsafe-inline'`)
and searches in a `blob:` worker, which such a policy refuses; Swagger UI shows the
same description.
"""

from __future__ import annotations

import html
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

ASSETS = Path(str(files("fastapi_standalone_docs") / "static"))  # swagger/, redoc/, fastapi/

_INIT_JS = """\
// Starts Swagger UI on /docs: a file of its own, so the page needs no inline script.
"use strict";
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null, // no badge fetched from validator.swagger.io
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""


def install(app: FastAPI) -> None:
    """Add `/docs` and its files (create the app with `docs_url=None, redoc_url=None`;
    call this before any catch-all mount)."""
    title = html.escape(f"{app.title} API")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        # The prefix the app is served under, behind a proxy ("" without one).
        root = html.escape(request.scope.get("root_path", "").rstrip("/"))
        spec = root + html.escape(app.openapi_url or "/openapi.json")
        return HTMLResponse(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{title}</title><link rel="icon" href="data:,">'
            f'<link rel="stylesheet" href="{root}/docs/swagger-ui.css"></head><body>'
            f'<div id="swagger-ui" data-openapi-url="{spec}"></div>'
            f'<script src="{root}/docs/swagger-ui-bundle.js"></script>'
            f'<script src="{root}/docs/init.js"></script></body></html>'
        )

    @app.get("/docs/init.js", include_in_schema=False)
    async def swagger_ui_init() -> Response:
        return Response(_INIT_JS, media_type="text/javascript")

    app.mount("/docs", StaticFiles(directory=ASSETS / "swagger"), name="docs-files")
