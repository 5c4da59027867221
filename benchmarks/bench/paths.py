"""The paths a stream can take from the fake upstream to the load client.

Each path starts its server(s) once for the whole sitting (`start`), so runs of all
paths interleave; `stop` ends them. A path that cannot run raises `Skip` with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import Postgres, Proc, free_port, start_redis, tree

MODEL = "fake/fake-model"  # streamkeep's name for the fake provider's model
LITELLM_VENV = Path.home() / ".cache" / "streamkeep" / "litellm-venv"
LITELLM_KEY = "sk-streamkeep-bench"


class Skip(Exception):
    """This path cannot run here; the message says why."""


@dataclass
class Shared:
    """What the paths share: the fake upstream, a temp dir, and (started on first use)
    a private PostgreSQL and Redis."""

    upstream_url: str
    tmp: Path
    postgres: Postgres | None = None
    redis: Proc | None = None
    redis_url: str = ""

    def postgres_url(self) -> str:
        if self.postgres is None:
            try:
                root = self.tmp / "postgres"
                root.mkdir()
                self.postgres = Postgres(root)
            except (RuntimeError, subprocess.CalledProcessError, OSError) as e:
                raise Skip(f"no private PostgreSQL: {e}") from e
        return self.postgres.create_database(f"sk_{uuid.uuid4().hex[:8]}")

    def redis_server(self) -> str:
        if self.redis is None:
            try:
                self.redis, self.redis_url = start_redis(self.tmp)
            except RuntimeError as e:
                raise Skip(f"no private Redis: {e}") from e
        return self.redis_url

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.stop()


@dataclass
class Route:
    """One path from the fake upstream to the client (a server or none)."""

    name: str
    what: str  # one line for the README and --help
    kind: str = "openai"  # "openai": POST {url}/chat/completions; "chat": the chat API
    url: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    metrics: bool = False  # streamkeep's /metrics counts database statements
    model: str = "fake-model"  # as this path names the fake upstream's model
    # Servers it uses that are its own in this sitting (private PostgreSQL, Redis):
    # their CPU counts in the path's, their memory does not (shared buffers).
    helpers: list[int] = field(default_factory=list)

    def start(self, shared: Shared) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return [pid for proc in self.procs for pid in proc.pids()]

    def cpu_pids(self) -> list[int]:
        return self.pids() + [pid for helper in self.helpers for pid in tree(helper)]

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


class Direct(Route):
    def start(self, shared: Shared) -> None:
        self.url = shared.upstream_url  # no server of its own: the baseline


class Nginx(Route):
    def start(self, shared: Shared) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).is_file():
            raise Skip("nginx is not installed (apt-get install nginx-light)")
        port, up = free_port(), shared.upstream_url.split("//")[1].split("/")[0]
        prefix = shared.tmp / "nginx"
        prefix.mkdir()
        temp = " ".join(
            f"{k}_temp_path {prefix}/{k};"
            for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            f"worker_processes 1; daemon off; pid {prefix}/nginx.pid;\n"
            f"error_log {prefix}/error.log warn; worker_rlimit_nofile 8192;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; {temp}\n"
            f"  upstream up {{ server {up}; keepalive 64; }}\n"
            f"  server {{ listen 127.0.0.1:{port};\n"
            "    location / { proxy_pass http://up; proxy_http_version 1.1;\n"
            '      proxy_set_header Connection ""; proxy_buffering off; } } }\n'
        )
        proc = Proc("nginx", [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")])
        self.procs.append(proc)
        proc.wait_listening(port)
        self.url = f"http://127.0.0.1:{port}/v1"


@dataclass
class Floor(Route):
    """A bare relay of bench/floors.py: what any Python relay costs at the least."""

    relay: str = "tcp"

    def start(self, shared: Shared) -> None:
        port, up = free_port(), shared.upstream_url.split("//")[1].split("/")[0]
        floors = Path(__file__).with_name("floors.py")
        cmd = [sys.executable, str(floors), self.relay, str(port), up.rsplit(":", 1)[1]]
        proc = Proc(f"relay-{self.relay}", cmd)
        self.procs.append(proc)
        proc.wait_listening(port)
        self.url = f"http://127.0.0.1:{port}/v1"


class LiteLLM(Route):
    def start(self, shared: Shared) -> None:
        binary = LITELLM_VENV / "bin" / "litellm"
        if not binary.is_file():
            raise Skip(f"LiteLLM is not installed in {LITELLM_VENV} (see install_litellm)")
        port = free_port()
        config = shared.tmp / "litellm.yaml"
        config.write_text(
            "model_list:\n  - model_name: fake-model\n    litellm_params:\n"
            f"      model: openai/fake-model\n      api_base: {shared.upstream_url}\n"
            "      api_key: x\nlitellm_settings:\n  telemetry: false\n"
        )
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # else it fetches a price list at import
            "LITELLM_MASTER_KEY": LITELLM_KEY,
        }
        cmd = [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        proc = Proc("litellm", cmd, env)
        self.procs.append(proc)
        proc.wait_listening(port)
        self.url = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {LITELLM_KEY}"}


@dataclass
class Streamkeep(Route):
    store: bool = True
    database: str = "sqlite"  # or "postgres"
    workers: int = 1
    model: str = MODEL
    server: str = "uvicorn"  # or "granian": the same app under granian's ASGI server

    def start(self, shared: Shared) -> None:
        home = shared.tmp / self.name
        home.mkdir()
        config = home / "streamkeep.toml"
        config.write_text(
            f'enable_local_model = false\nmodel = "{MODEL}"\n'
            f"gateway_store = {str(self.store).lower()}\n"
            f'[providers.fake]\nkind = "openai"\nbase_url = "{shared.upstream_url}"\n'
            'api_key = "x"\nmodels = ["fake-model"]\n'
        )
        env = {"STREAMKEEP_CONFIG": str(config), "STREAMKEEP_DATA_DIR": str(home)}
        if self.database == "postgres":
            env["STREAMKEEP_DATABASE_URL"] = shared.postgres_url()
            assert shared.postgres is not None
            self.helpers.append(shared.postgres.pid())
        if self.workers > 1:
            env["STREAMKEEP_REDIS_URL"] = shared.redis_server()
            assert shared.redis is not None
            self.helpers.append(shared.redis.pid)
            env["STREAMKEEP_REDIS_PREFIX"] = f"skbench:{uuid.uuid4().hex[:8]}:"
        port = free_port()
        if self.server == "granian":
            cmd = [str(Path(sys.executable).with_name("granian")), "--interface", "asgi"]
            cmd += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(self.workers)]
            cmd += ["--loop", "uvloop", "--http", "1", "--log-level", "warning", "--no-ws"]
            cmd += ["--factory", "streamkeep.server.app:create_app"]
        else:
            cmd = [sys.executable, "-m", "streamkeep", "serve", "--port", str(port)]
            cmd += ["--log-level", "warning", "--workers", str(self.workers)]
        proc = Proc(self.name, cmd, env)
        self.procs.append(proc)
        proc.wait_listening(port)
        time.sleep(0.5 * self.workers)  # every worker up, not just the first
        base = f"http://127.0.0.1:{port}"
        self.url = f"{base}/v1" if self.kind == "openai" else base


def all_paths() -> list[Route]:
    return [
        Direct("direct", "straight to the fake upstream (the baseline)"),
        Nginx("nginx", "nginx proxy_pass, proxy_buffering off, 1 worker"),
        Floor("relay-tcp", "bare TCP proxy (uvloop, no HTTP parsing): the Python floor"),
        Floor(
            "relay-http",
            "bare uvicorn + aiohttp relay (streamkeep's frameworks, nothing else)",
            relay="http",
        ),
        LiteLLM("litellm", "LiteLLM proxy (litellm[proxy], no database)"),
        Streamkeep(
            "gateway", "streamkeep POST /v1/chat/completions, storing (SQLite)", metrics=True
        ),
        Streamkeep(
            "gateway-nostore", "the same with gateway_store = false", metrics=True, store=False
        ),
        Streamkeep(
            "gateway-granian",
            "the gateway, storing, under granian instead of uvicorn",
            metrics=True,
            server="granian",
        ),
        Streamkeep("chat-sqlite", "streamkeep chat API, SQLite", kind="chat", metrics=True),
        Streamkeep(
            "chat-postgres",
            "streamkeep chat API, PostgreSQL (private server)",
            kind="chat",
            metrics=True,
            database="postgres",
        ),
        Streamkeep(
            "gateway-workers2",
            "the gateway, storing, serve --workers 2, SQLite + Redis (private server)",
            workers=2,
        ),
        Streamkeep(
            "workers2-redis",
            "streamkeep chat API, serve --workers 2, SQLite + Redis (private server)",
            kind="chat",
            workers=2,
        ),
    ]


def install_litellm() -> str | None:
    """Create LiteLLM's own venv if missing (needs the network); None or why not."""
    if (LITELLM_VENV / "bin" / "litellm").is_file():
        return None
    print(f"installing litellm[proxy] into {LITELLM_VENV} (once per machine)...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pip = [str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"]
        subprocess.run(pip, check=True, timeout=1800)
    except (subprocess.SubprocessError, OSError) as e:
        shutil.rmtree(LITELLM_VENV, ignore_errors=True)
        return f"could not install litellm[proxy]: {e}"
    return None
