"""`streamkeep serve --workers N`: N server processes sharing one listening socket.

The parent binds the socket (`cli.serve.listen`) and starts N spawned children, each
running the server `streamkeep serve` runs alone (so each keeps its graceful shutdown);
the kernel spreads connections between them. A signal to the parent is passed on to every child.

Several workers only make sense when a generation can be resumed and stopped from any
of them, which takes Redis; `check_workers` refuses the rest with a clear message.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType
from typing import Protocol

from streamkeep.config import Settings

logger = logging.getLogger(__name__)


class _Runnable(Protocol):
    def run(self, sockets: list[socket.socket] | None = None) -> None: ...


ServerFactory = Callable[..., _Runnable]  # build_server(settings, log_level=...)


def check_workers(settings: Settings, workers: int) -> str | None:
    """Why `workers` processes cannot serve with these settings, or None if they can."""
    if workers < 1:
        return "--workers must be at least 1"
    if workers == 1 or settings.redis_url:
        return None
    database = settings.resolved_database_url
    where = "SQLite" if database.startswith("sqlite") else "a shared database"
    return (
        f"--workers {workers} needs Redis: set STREAMKEEP_REDIS_URL (or --redis-url). On "
        f"{where} without Redis, a reply could only be resumed or stopped through the "
        "worker that runs it, and each worker would take the others' live replies for "
        "orphans. Run one worker, or add Redis (and PostgreSQL for several hosts)."
    )


def run_workers(
    settings: Settings,
    workers: int,
    build: ServerFactory,
    sock: socket.socket,
    *,
    log_level: str = "info",
) -> int:
    """Serve `sock` (bound, inheritable) with `workers` child processes until they all
    exit; returns the worst exit code."""
    context = multiprocessing.get_context("spawn")
    children = [
        context.Process(
            target=_serve_child,
            args=(settings, sock, build, log_level),
            name=f"streamkeep-worker-{n}",
        )
        for n in range(workers)
    ]

    def forward(signum: int, frame: FrameType | None) -> None:
        # Always SIGTERM: a second SIGINT would make uvicorn skip the graceful part.
        for child in children:
            if child.pid is not None and child.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for child in children:
            child.start()
        for child in children:
            child.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        sock.close()
    # uvicorn re-raises the signal it stopped for: a child ended by it stopped cleanly.
    stopped = (-signal.SIGTERM, -signal.SIGINT)
    codes = [0 if child.exitcode in stopped else child.exitcode or 0 for child in children]
    return max(codes, key=abs)


def _serve_child(
    settings: Settings, sock: socket.socket, build: ServerFactory, log_level: str
) -> None:
    build(settings, log_level=log_level).run(sockets=[sock])
