"""Run the real `streamkeep` command in a pseudo-terminal, as a person's shell would."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Callable


class PtyProcess:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: str | None = None) -> None:
        self._master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "COLUMNS": "100"},
            cwd=cwd,
            start_new_session=True,
        )
        os.close(slave)
        self.output = b""

    @property
    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self._master, 65536)
        except OSError:  # the child closed the terminal
            return False
        self.output += data
        return bool(data)

    def expect(self, predicate: Callable[[str], bool], timeout: float = 30) -> None:
        """Read until `predicate(text so far)` holds (a bounded wait, not a timing check)."""
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; terminal shows:\n{self.text}")
            exited = not self._read(0.1) and self.proc.poll() is not None
            if exited and not predicate(self.text):
                raise AssertionError(f"exited {self.proc.returncode}; shows:\n{self.text}")

    def send(self, data: str) -> None:
        os.write(self._master, data.encode())

    def interrupt(self) -> None:
        """Ctrl+C as the terminal delivers it: SIGINT to the foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.05):
            pass
        os.close(self._master)
        return self.proc.wait(1)
