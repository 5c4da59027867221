"""The chat page's mount: the files of `streamkeep.web` at "/", for every path no route
claims.

Mounted at "/", Starlette's `Mount` matches every path with every method, so a route's
path asked with a method the route does not take (`GET` on a POST-only path, `OPTIONS`)
went to the static files too: a 404 "file not found", or a 405 that said only GET and
HEAD were allowed. Here a path that any route matches is left to the router, which
answers 405 with the route's methods (`server.errors` lists them all in `Allow`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Match, Mount
from starlette.types import Scope


class PageMount(Mount):
    def __init__(self, directory: Path, routes: list[BaseRoute]) -> None:
        super().__init__("/", app=StaticFiles(directory=directory, html=True), name="web")
        self._routes = routes  # the router's own list: routes added later count too

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        # Reached only when no route matched fully (the page's assets, or a method no
        # route of the path takes): a few regex matches, never on an API call's path.
        if scope["type"] == "http":
            for route in self._routes:
                if route is not self and route.matches(scope)[0] is not Match.NONE:
                    return Match.NONE, {}
        return super().matches(scope)
