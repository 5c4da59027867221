"""The processes a benchmark run needs, and what /proc says about them.

Each server is its own process (its CPU is then its own): the fake upstream
(`tests.fakes.upstream`), `streamkeep serve`, nginx, LiteLLM's proxy, and private
PostgreSQL / Redis servers (as tests/services.py starts them: a run inside `unshare -n`
cannot reach the host's, and a benchmark should not load the shared ones anyway).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tree(pid: int) -> list[int]:
    """`pid` and its descendants (a `--workers` parent's workers, nginx's worker)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """CPU time these processes have used so far, threads that have ended included (gone
    processes count 0): each one's process CPU clock (clock_getcpuclockid's id, made by
    hand as Python lacks that call), in nanoseconds where /proc/<pid>/stat has 10 ms
    ticks, too coarse for a run of a thousand chunks, and per-thread schedstat misses
    threads that ended (LiteLLM's)."""
    total = 0.0
    for pid in pids:
        try:
            total += time.clock_gettime((~pid << 3) | 2)  # CPUCLOCK_SCHED, whole process
        except OSError:
            continue
    return total


def peak_rss_mb(pids: list[int]) -> float:
    """Sum of each process's peak resident set (VmHWM) in MB."""
    kb = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    kb += int(line.split()[1])
        except OSError:
            continue
    return kb / 1024


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class Proc:
    """A started server process; `pids()` is its tree, read afresh each time."""

    def __init__(
        self, name: str, cmd: list[str], env: dict[str, str] | None = None, pipe: bool = False
    ) -> None:
        """`pipe`: stdout is a pipe for the caller to read (else both go to the log:
        a pipe nobody drains fills, and a server logging to it stalls)."""
        self.name = name
        # The caller's own STREAMKEEP_* settings must not leak into the servers.
        clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMKEEP_")}
        logs = Path(os.environ.get("TMPDIR", "/tmp"))
        self.log = (logs / f"streamkeep-bench-{name}-{os.getpid()}.log").open("wb")
        self.popen: subprocess.Popen[bytes] = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**clean, **(env or {})},
            stdout=subprocess.PIPE if pipe else self.log,
            stderr=self.log,
            start_new_session=True,  # Ctrl-C reaches us only; we stop it in turn
        )
        self.pid = self.popen.pid

    def pids(self) -> list[int]:
        return tree(self.pid)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)

    def wait_listening(self, port: int) -> None:
        """Until something answers on `port`; else an error with the end of its log."""
        deadline = time.monotonic() + START_TIMEOUT
        while not answers(port):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                how = "did not start in time" if self.popen.poll() is None else "exited"
                self.log.flush()
                tail = Path(self.log.name).read_text(errors="replace")[-600:].strip()
                raise RuntimeError(f"{self.name} {how}: {tail}")
            time.sleep(0.05)


def start_upstream() -> tuple[Proc, str]:
    """The fake OpenAI-compatible provider; its base URL (ending in /v1)."""
    cmd = [sys.executable, "-m", "tests.fakes.upstream", "--port", "0"]
    proc = Proc("upstream", cmd, pipe=True)
    assert proc.popen.stdout is not None
    return proc, proc.popen.stdout.readline().decode().strip()


def start_redis(tmp: Path) -> tuple[Proc, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed")
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    cmd += ["no", "--loglevel", "warning", "--dir", str(tmp)]
    proc = Proc("redis", cmd)
    proc.wait_listening(port)
    return proc, f"redis://127.0.0.1:{port}/0"


class Postgres:
    """A private PostgreSQL cluster (initdb in `root`), fsync off, on a free port."""

    def __init__(self, root: Path) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL's server binaries are not installed")
        self.bindir = bins[-1].parent
        self.root = root
        self.port = free_port()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(root / "data"), "-A", "trust", "-U", "postgres", "-N")
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            "-c fsync=off -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(root / "data"),
            "-o",
            options,
            "-l",
            str(root / "log"),
            "-w",
            "start",
        )

    def create_database(self, name: str) -> str:
        """A new database's URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def _run(self, *cmd: str) -> None:
        argv = [str(self.bindir / cmd[0]), *cmd[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, timeout=START_TIMEOUT)

    def pid(self) -> int:
        """The postmaster's (its backends are its children)."""
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
