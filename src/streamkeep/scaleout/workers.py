"""`streamkeep serve --workers N`: N server processes sharing one listening socket.

The parent binds the socket (`cli.serve.listen`) and starts N spawned children, each
running the server `streamkeep serve` runs alone (so each keeps its graceful shutdown);
the kernel spreads connections between them. The parent supervises them: a child that
exits while the parent is not shutting down (a crash, SIGKILL, the OOM killer) is logged
and replaced on the same socket, after a delay that grows while children keep crashing
soon after they start (`restart_delay`). SIGTERM or SIGINT to the parent is passed on to
every child; the parent waits for their graceful shutdown and restarts none meanwhile.

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
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from types import FrameType
from typing import Protocol

from streamkeep.config import Settings
from streamkeep.logs import JsonFormatter

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


# A crashed child is replaced after a delay that doubles while children keep crashing
# soon after they start, and starts over once one has lived `HEALTHY_AFTER` seconds.
FIRST_DELAY = 0.5
MAX_DELAY = 10.0
HEALTHY_AFTER = 30.0


def restart_delay(previous: float | None, lived: float) -> float:
    """Seconds to wait before replacing a child that exited after `lived` seconds, when
    the previous replacement in its slot waited `previous` seconds (None: none yet)."""
    if previous is None or lived >= HEALTHY_AFTER:
        return FIRST_DELAY
    return min(previous * 2, MAX_DELAY)


def describe_exit(exitcode: int) -> str:
    """`exited with code 3`, `killed by SIGKILL`."""
    if exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"killed by signal {-exitcode}"


@dataclass
class _Slot:
    """One of the N workers: its current process, if any, and its restart state."""

    number: int
    process: SpawnProcess | None = None
    started: float = 0.0
    delay: float | None = None  # the wait before this slot's last restart
    due: float | None = None  # when to start its next process (after a crash)


def run_workers(
    settings: Settings,
    workers: int,
    build: ServerFactory,
    sock: socket.socket,
    *,
    log_level: str = "info",
) -> int:
    """Serve `sock` (bound, inheritable) with `workers` child processes, replacing any
    that exits on its own, until SIGTERM or SIGINT; then passes it on, waits for the
    children to finish their graceful shutdown and returns the worst of their exit codes."""
    _log_to_stderr(log_level, json_lines=settings.log_format == "json")
    context = multiprocessing.get_context("spawn")
    slots = [_Slot(n, due=time.monotonic()) for n in range(workers)]
    stopping = False
    wake_read, wake_write = os.pipe()  # lets a signal end the wait for a child at once
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    codes: list[int] = []  # of the children that ended during the shutdown

    def stop_children() -> None:
        # Always SIGTERM: a second SIGINT would make uvicorn skip the graceful part.
        for slot in slots:
            if slot.process is not None and slot.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.process.pid, signal.SIGTERM)

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_children()
        with contextlib.suppress(BlockingIOError):
            os.write(wake_write, b"\0")

    def start(slot: _Slot) -> None:
        process = context.Process(
            target=_serve_child,
            args=(settings, sock, build, log_level),
            name=f"streamkeep-worker-{slot.number}",
        )
        try:
            process.start()
        except OSError as exc:  # no memory or processes left for it: try again later
            slot.delay = restart_delay(slot.delay, 0.0)
            slot.due = time.monotonic() + slot.delay
            logger.error(
                "worker %d could not start (%s); trying again in %.1f s",
                slot.number,
                exc,
                slot.delay,
            )
            return
        slot.process, slot.started, slot.due = process, time.monotonic(), None
        if stopping:  # the signal came while it was starting: it missed the forwarding
            stop_children()
        elif slot.delay is not None:
            logger.info("worker %d restarted (pid %s)", slot.number, process.pid)

    def reap(slot: _Slot, process: SpawnProcess) -> None:
        exitcode, pid = process.exitcode, process.pid
        assert exitcode is not None
        lived = time.monotonic() - slot.started
        slot.process = None
        process.close()
        if stopping:
            # uvicorn re-raises the signal it stopped for: a child ended by it stopped cleanly.
            codes.append(0 if exitcode in (-signal.SIGTERM, -signal.SIGINT) else exitcode)
            return
        slot.delay = restart_delay(slot.delay, lived)
        slot.due = time.monotonic() + slot.delay
        logger.error(
            "worker %d (pid %s) %s after %.1f s; restarting it in %.1f s",
            slot.number,
            pid,
            describe_exit(exitcode),
            lived,
            slot.delay,
        )

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while True:
            now = time.monotonic()
            for slot in slots:
                if not stopping and slot.due is not None and slot.due <= now:
                    start(slot)
            running = [(slot, slot.process) for slot in slots if slot.process is not None]
            if stopping and not running:
                break
            due = [slot.due for slot in slots if slot.due is not None and not stopping]
            timeout = max(0.0, min(due) - time.monotonic()) if due else None
            waited: list[int] = [process.sentinel for _, process in running]
            wait([*waited, wake_read], timeout)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 64)
            for slot, process in running:
                if process.exitcode is not None:
                    reap(slot, process)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(wake_read)
        os.close(wake_write)
        sock.close()
    return max(codes, key=abs, default=0)


def _log_to_stderr(log_level: str, *, json_lines: bool = False) -> None:
    """The supervisor's own lines, in uvicorn's format or as the children's JSON lines
    (uvicorn configures only the children's logging)."""
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else _Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    level = logging.getLevelName(log_level.upper())
    logger.setLevel(level if isinstance(level, int) else logging.INFO)


def _serve_child(
    settings: Settings, sock: socket.socket, build: ServerFactory, log_level: str
) -> None:
    build(settings, log_level=log_level).run(sockets=[sock])


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname + ':':<9} {super().format(record)}"
