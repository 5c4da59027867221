"""`streamkeep serve`: run the HTTP server (uvicorn; `--workers N` for N supervised
processes on one socket, see `scaleout.workers`). The API is described in docs/api.md.

The flags below set the STREAMKEEP_* variables of the same names; flags win over the
environment, which wins over `streamkeep.toml` (path from STREAMKEEP_CONFIG). Provider
keys (OPENAI_API_KEY, OPENAI_BASE_URL, ANTHROPIC_API_KEY) and the other settings have no
flag: set them in the environment or `streamkeep.toml`. On SIGTERM / Ctrl-C the server
stops taking new generations at once, lets live ones finish for up to `shutdown_grace`
seconds, stores the rest `interrupted`, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from streamkeep.config import Settings, load_settings
from streamkeep.logs import LogFormat, uvicorn_log_config
from streamkeep.scaleout.workers import check_workers, run_workers
from streamkeep.server import begin_shutdown, create_app
from streamkeep.store import ChatStore, Database

_WHERE_DATA_GOES = """\
Where data goes: chats, messages, users and keys are in the database: by default the
SQLite file streamkeep.db in the data directory (--data-dir, STREAMKEEP_DATA_DIR;
default ./.streamkeep, relative to the directory you start the server in), or
--database-url. The data directory also holds logs/embedded-runtime.log, the log of
preparing the embedded model's runtime (llama-cpp-python, built once per machine into
~/.cache/streamkeep/wheels). `streamkeep doctor` shows every one of these places."""

# Past the grace period, the interrupted generations still need a moment to be stored.
_SHUTDOWN_MARGIN = 5.0


def add_parser(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the HTTP server", description=__doc__, epilog=_WHERE_DATA_GOES
    )
    p.add_argument("--host", help="address to listen on (STREAMKEEP_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port to listen on (STREAMKEEP_PORT, 8000)")
    p.add_argument(
        "--allowed-hosts",
        help="Host names answered besides loopback and --host, comma-separated; "
        "'*.example.com' for subdomains, '*' for any (STREAMKEEP_ALLOWED_HOSTS)",
    )
    p.add_argument("--database-url", help="SQLAlchemy URL (STREAMKEEP_DATABASE_URL)")
    p.add_argument("--redis-url", help="Redis URL for multi-worker (STREAMKEEP_REDIS_URL)")
    p.add_argument("--data-dir", help="local state directory (STREAMKEEP_DATA_DIR)")
    p.add_argument("--model", help="default model for new chats (STREAMKEEP_MODEL)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="log lines as text, or one JSON object per line with the request, "
        "generation, chat and trace ids (STREAMKEEP_LOG_FORMAT, text)",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="server processes (more than 1 needs Redis)"
    )
    p.add_argument(
        "--no-auth",
        action="store_true",
        default=None,
        help="serve without accounts, whatever users exist: anyone who reaches the server "
        "reads every chat (STREAMKEEP_NO_AUTH); needed to listen beyond loopback with no "
        "user, e.g. behind an auth proxy",
    )
    p.set_defaults(func=run)


class _Server(uvicorn.Server):
    """Begins the app's shutdown as soon as uvicorn starts its own, not after the open
    streams have closed (they close because their generations end)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler runs between two steps of the loop; the task starts at once.
        with contextlib.suppress(RuntimeError):  # no loop yet: nothing to shut down
            asyncio.get_running_loop().call_soon_threadsafe(self._begin_shutdown)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._begin_shutdown()  # also when uvicorn stops for another reason
        await super().shutdown(sockets)

    def _begin_shutdown(self) -> None:
        if getattr(self._app.state, "manager", None) is not None:
            begin_shutdown(self._app)


def build_server(
    settings: Settings, *, app: FastAPI | None = None, log_level: str = "info"
) -> uvicorn.Server:
    """A uvicorn server for `app` (default: a new app for `settings`)."""
    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        **_log_config(settings.log_format, log_level),
        timeout_graceful_shutdown=int(settings.shutdown_grace + _SHUTDOWN_MARGIN) + 1,
        # SSE bodies are relayed as they come; no proxy headers trust by default.
        proxy_headers=False,
        lifespan="on",
    )
    return _Server(config, app)


def _log_config(log_format: LogFormat, log_level: str) -> dict[str, Any]:
    """uvicorn's `log_config` argument: given only for JSON lines (`streamkeep.logs`)."""
    config = uvicorn_log_config(log_format, log_level)
    return {} if config is None else {"log_config": config}


def run(args: argparse.Namespace) -> int:
    settings = load_settings(
        host=args.host,
        port=args.port,
        allowed_hosts=args.allowed_hosts,
        database_url=args.database_url,
        redis_url=args.redis_url,
        data_dir=args.data_dir,
        model=args.model,
        no_auth=args.no_auth,
        log_format=args.log_format,
    )
    problem = check_workers(settings, args.workers) or asyncio.run(_check_auth(settings))
    if problem is not None:
        print(f"streamkeep serve: {problem}", file=sys.stderr)
        return 2
    if settings.no_auth:
        print(
            "streamkeep serve: WARNING: auth is off (--no-auth): anyone who reaches "
            f"{settings.host}:{settings.port} reads every chat and uses every provider key",
            file=sys.stderr,
        )
    server = build_server(settings, log_level=args.log_level) if args.workers == 1 else None
    sock = listen(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"streamkeep serving on http://{shown}:{port}", flush=True)
    if server is None:
        return run_workers(settings, args.workers, build_server, sock, log_level=args.log_level)
    server.run(sockets=[sock])
    return 0


async def _check_auth(settings: Settings) -> str | None:
    """Why the server must not start as configured: beyond loopback, with no user and
    no `--no-auth`, it would serve every chat to anyone who reaches it."""
    if settings.no_auth or is_loopback(settings.host) or settings.external_identity:
        return None  # an external identity turns auth on by itself
    database = Database.from_url(settings.resolved_database_url)
    try:
        await database.upgrade()
        if await ChatStore(database).count_users() > 0:
            return None
    finally:
        await database.dispose()
    return (
        f"refusing to listen on {settings.host} with no user: anyone who reaches it would "
        "read every chat and use the provider keys. Create a user first "
        "(`streamkeep users create NAME --admin`; creating the first user turns auth on), "
        "or pass --no-auth to serve without accounts (e.g. behind an auth proxy)."
    )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that it says IPPROTO_TCP: asyncio's transports
    then set TCP_NODELAY on each connection (uvloop does anyway), and Nagle's algorithm
    never holds back a token written right after another."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock
