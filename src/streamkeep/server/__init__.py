"""The HTTP server: `create_app(settings)` builds the FastAPI app (see `server.app`)."""

from streamkeep.server.app import begin_shutdown, create_app

__all__ = ["begin_shutdown", "create_app"]
