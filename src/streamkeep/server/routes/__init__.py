"""The HTTP routes, one module per resource; `server.app` includes their routers."""
