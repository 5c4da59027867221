"""EmbeddedRuntime: the embedded model's runtime prepared in the background, its states
(`off`, `preparing`, `ready`, `failed`) driven by a real build command.

The command is a real Python script standing in for pip (the runtime's own input, as
`local_runtime_command` is a user's): it prints build progress as Make and Ninja do,
waits for the test to let it go, and then installs a module (a file in a directory on
`sys.path`) or fails.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from streamkeep.llm.errors import ConfigurationError, ModelNotReady
from streamkeep.llm.runtime import EmbeddedRuntime, default_steps
from tests.scaleout.waits import eventually

BUILD = """\
import pathlib, signal, subprocess, sys, time
site, module, gate, status = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3]), int(sys.argv[4])
print("[ 10%] Building C object ggml.c.o", flush=True)
print("[150/300] Building CXX object llama.cpp.o", flush=True)  # Ninja's form
# A compiler, run as Ninja runs one: in a process group of its own, ended by Ninja only
# when Ninja is asked to stop (SIGTERM). It must end when the preparation is stopped.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], process_group=0)
signal.signal(signal.SIGTERM, lambda *_: (child.kill(), sys.exit(143)))
pathlib.Path(site, "child.pid").write_text(str(child.pid))
while not gate.exists():
    time.sleep(0.01)
if status == 0 and module != "-":
    (pathlib.Path(site) / f"{module}.py").write_text("READY = True\\n")
if status:
    print("error: no C compiler found", flush=True)
child.kill()
sys.exit(status)
"""


class Build:
    """One runtime whose build command is BUILD, and the knobs of that build."""

    def __init__(self, tmp: Path, *, status: int = 0, installs: bool = True) -> None:
        self.site = tmp / "site"
        self.site.mkdir()
        self.module = f"sk_runtime_{uuid.uuid4().hex[:8]}"
        self.gate = tmp / "go"
        script = tmp / "build.py"
        script.write_text(BUILD)
        module = self.module if installs else "-"
        self.lines: list[str] = []
        self.runtime = EmbeddedRuntime(
            tmp / "logs" / "runtime.log",
            command=[
                sys.executable,
                str(script),
                str(self.site),
                module,
                str(self.gate),
                str(status),
            ],
            module=self.module,
            cache=tmp / "wheels",
            announce=self.lines.append,
        )

    async def at_half(self) -> None:
        """Until the build has said it is half done."""
        await eventually(lambda: "50%" in self.runtime.status().detail, within=30)


@pytest.fixture
def build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Build:
    made = Build(tmp_path)
    monkeypatch.syspath_prepend(str(made.site))
    return made


async def test_a_missing_runtime_is_prepared_in_the_background_then_ready(build: Build) -> None:
    runtime = build.runtime
    assert runtime.state == "off"
    runtime.start()
    try:
        await build.at_half()
        status = runtime.status()
        assert status.state == "preparing"
        assert "building llama-cpp-python (50%)" in status.detail
        assert status.seconds_left is not None and status.seconds_left >= 5
        with pytest.raises(ModelNotReady) as caught:
            runtime.check()
        assert 5 <= caught.value.retry_after <= 30
        build.gate.touch()
        assert await runtime.wait() == "ready"
    finally:
        await runtime.aclose()
    runtime.check()  # no longer raises
    assert runtime.status().state == "ready"
    log = runtime.log_path.read_text()
    assert "[150/300] Building CXX object llama.cpp.o" in log
    assert build.lines[0].startswith("embedded model local/smollm2: preparing")
    assert str(runtime.log_path) in build.lines[0]
    assert build.lines[-1] == "embedded model local/smollm2 is ready"


async def test_a_failed_build_says_why_and_how_to_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing = Build(tmp_path, status=3)
    monkeypatch.syspath_prepend(str(failing.site))
    failing.gate.touch()
    failing.runtime.start()
    assert await failing.runtime.wait() == "failed"
    status = failing.runtime.status()
    assert "exit status 3" in status.detail
    assert "error: no C compiler found" in status.detail
    assert str(failing.runtime.log_path) in status.detail
    assert "restart the server" in status.detail
    with pytest.raises(ConfigurationError, match="no C compiler"):
        failing.runtime.check()
    assert "is unavailable" in failing.lines[-1]


async def test_a_build_that_installs_nothing_is_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = Build(tmp_path, installs=False)
    monkeypatch.syspath_prepend(str(empty.site))
    empty.gate.touch()
    empty.runtime.start()
    assert await empty.runtime.wait() == "failed"
    assert "still not importable" in empty.runtime.status().detail


async def test_stopping_the_server_stops_the_build_and_what_it_started(build: Build) -> None:
    build.runtime.start()
    await build.at_half()
    await eventually(lambda: (build.site / "child.pid").exists())
    child = int((build.site / "child.pid").read_text())
    await build.runtime.aclose()
    assert build.runtime.state == "failed"
    assert not (build.site / f"{build.module}.py").exists()
    await eventually(lambda: not _alive(child), within=10)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped by init, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


async def test_with_preparing_off_nothing_runs_and_the_model_says_how_to_install(
    tmp_path: Path,
) -> None:
    lines: list[str] = []
    runtime = EmbeddedRuntime(
        tmp_path / "runtime.log",
        command=[sys.executable, "-c", "raise SystemExit(1)"],
        prepare=False,
        module=f"sk_absent_{uuid.uuid4().hex[:8]}",
        announce=lines.append,
    )
    runtime.start()
    assert await runtime.wait() == "off"
    with pytest.raises(ConfigurationError, match=r"pip install 'streamkeep\[local\]'"):
        runtime.check()
    assert lines == [] and not runtime.log_path.exists()


async def test_an_installed_runtime_is_ready_at_once(tmp_path: Path) -> None:
    runtime = EmbeddedRuntime(tmp_path / "runtime.log", module="json")
    assert runtime.state == "ready"
    runtime.start()
    assert await runtime.wait() == "ready"
    assert not runtime.log_path.exists()


def test_the_default_steps_build_only_a_wheel_not_in_the_cache(tmp_path: Path) -> None:
    build_then_install = default_steps(tmp_path)
    assert [step[3:5] for step in build_then_install][:1] == [["wheel", "-v"]]
    assert "install" in build_then_install[-1]
    (tmp_path / "llama_cpp_python-0.3.36-cp311-cp311-linux_x86_64.whl").touch()
    assert default_steps(tmp_path) == build_then_install[1:]


async def test_a_second_server_waits_for_the_first_ones_build_and_runs_none_of_its_own(
    tmp_path: Path, build: Build
) -> None:
    """Two servers on one machine share the wheel cache's lock: the second one's command
    (which would fail) never runs, and it is ready once the first one's build is."""
    lines: list[str] = []
    second = EmbeddedRuntime(
        tmp_path / "second.log",
        command=[sys.executable, "-c", "raise SystemExit('must not run')"],
        module=build.module,
        cache=tmp_path / "wheels",
        announce=lines.append,
    )
    build.runtime.start()
    try:
        await build.at_half()
        second.start()
        await eventually(lambda: second.log_path.exists())
        assert second.status().detail.startswith("preparing: waiting for the build lock")
        build.gate.touch()
        assert await build.runtime.wait() == "ready"
        assert await second.wait() == "ready"
    finally:
        await build.runtime.aclose()
        await second.aclose()
    assert "must not run" not in second.log_path.read_text()
    assert lines[-1] == "embedded model local/smollm2 is ready"
