"""`streamkeep doctor`, run as a real command against real parts: a SQLite file, the
shared PostgreSQL and Redis, the fake provider over HTTP, and ports nothing listens on."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import streamkeep
from streamkeep.cli.checks import mask_url, masked
from streamkeep.store.db import Database
from tests.conftest import TEST_DATABASE_URL, TEST_REDIS_URL, free_port, require_service
from tests.fakes.upstream import FakeUpstream
from tests.fakes.upstream_wire import Script

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-live-SECRET123"


@dataclass
class Run:
    status: int
    out: str
    err: str

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.out)
        return data


async def doctor(config: str, *args: str, cwd: Path) -> Run:
    """Run `streamkeep doctor` with `config` as its streamkeep.toml; the event loop keeps
    serving the fake provider meanwhile."""
    (cwd / "streamkeep.toml").write_text(config)
    env = {**os.environ, "STREAMKEEP_CONFIG": str(cwd / "streamkeep.toml")}
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamkeep", "doctor", *args,
        cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def provider(name: str, url: str, kind: str = "openai", **extra: str) -> str:
    lines = [f"[providers.{name}]", f'kind = "{kind}"', f'base_url = "{url}"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


async def test_a_sqlite_file_and_a_reachable_provider_are_reported_with_secrets_masked(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    database = Database.from_url(f"sqlite:///{data / 'streamkeep.db'}")
    await database.upgrade()
    await database.dispose()
    config = f'data_dir = "{data}"\n' + provider(
        "fake",
        fake_upstream.base_url,
        api_key=f'"{SECRET}"',
        extra_headers='{ "x-team-token" = "hdr-SECRET" }',
    )
    run = await doctor(config, cwd=tmp_path)
    assert run.status == 0, run.out + run.err
    assert SECRET not in run.out and "hdr-SECRET" not in run.out
    lines = run.out.splitlines()
    assert lines[0] == f"streamkeep       {streamkeep.__version__}"
    assert f"data dir         {data} (exists)" in lines
    assert any(line.startswith(f"sqlite file      {data / 'streamkeep.db'} (") for line in lines)
    assert next(line for line in lines if line.startswith("database ")).split()[1] == "ok"
    fake = lines.index(next(line for line in lines if line.startswith("provider fake")))
    assert lines[fake].split()[2] == "ok"
    assert lines[fake + 1].split() == ["openai", fake_upstream.base_url]
    assert lines[fake + 2].split() == ["models:", "fake-model"]  # its own list (pass-through)
    assert "redis            not configured (single process)" in lines
    assert "  openai_api_key = null" in lines
    assert any(line.startswith("  providers = ") and '"api_key": "***"' in line for line in lines)
    assert any('"x-team-token": "***"' in line for line in lines)
    assert fake_upstream.models_headers[0]["authorization"] == f"Bearer {SECRET}"
    # The embedded model is on by default: its parts are named.
    embedded = next(line for line in lines if line.startswith("embedded model"))
    assert embedded.startswith("embedded model   local/smollm2: ")
    assert any(line.strip().startswith("wheel cache: ") for line in lines)


@pytest.mark.postgres
@pytest.mark.redis
async def test_postgresql_and_redis_are_reached_and_timed_in_json(tmp_path: Path) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("Redis", "127.0.0.1", 6379)
    # Trust auth ignores the password: it is there to be masked.
    url = TEST_DATABASE_URL.replace("postgres@", "postgres:pg-SECRET@", 1)
    assert "pg-SECRET" in url
    run = await doctor(
        "enable_local_model = false\n",
        "--json", "--database-url", url, "--redis-url", TEST_REDIS_URL,
        cwd=tmp_path,
    )  # fmt: skip
    assert run.status == 0, run.out + run.err
    assert "pg-SECRET" not in run.out
    report = run.json()
    assert report["database"]["ok"] is True
    assert report["database"]["latency_ms"] > 0
    assert report["database"]["target"] == url.replace("pg-SECRET", "***")
    assert report["redis"]["ok"] is True and report["redis"]["latency_ms"] > 0
    assert report["providers"] == [] and report["embedded"] is None
    assert report["settings"]["database_url"] == url.replace("pg-SECRET", "***")


async def test_unreachable_parts_are_named_and_the_exit_status_is_1(tmp_path: Path) -> None:
    closed = free_port()
    redis_url = f"redis://:rd-SECRET@127.0.0.1:{free_port()}/0"
    config = "enable_local_model = false\n" + provider(
        "gone", f"http://127.0.0.1:{closed}/v1", api_key='"x"', models='["m"]'
    )
    run = await doctor(config, "--redis-url", redis_url, cwd=tmp_path)
    assert run.status == 1, run.out + run.err
    assert "rd-SECRET" not in run.out
    lines = run.out.splitlines()
    assert lines[-1] == "unreachable: redis, provider gone"
    gone = next(line for line in lines if line.startswith("provider gone"))
    assert gone.split()[2] == "UNREACHABLE:"
    assert "ProviderConnectionError" in gone
    redis = next(line for line in lines if line.startswith("redis "))
    assert redis.split()[1] == "UNREACHABLE:"


async def test_a_provider_that_does_not_answer_in_time_is_reported_within_the_timeout(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.models_answer = Script(hang_before_first_byte=60)
    config = "enable_local_model = false\n" + provider("slow", fake_upstream.base_url)
    run = await doctor(config, "--json", "--timeout", "0.5", cwd=tmp_path)
    assert run.status == 1
    (slow,) = run.json()["providers"]
    assert slow["ok"] is False
    assert slow["detail"] == "no answer within 0.5s"


async def test_an_anthropic_provider_lists_its_models_with_its_own_headers(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.models = ["claude-x", "claude-y"]
    config = "enable_local_model = false\n" + provider(
        "claude", fake_upstream.root_url, kind="anthropic", api_key=f'"{SECRET}"',
        models='["claude-x", "claude-z"]',
    )  # fmt: skip
    run = await doctor(config, "--json", cwd=tmp_path)
    assert run.status == 0, run.out + run.err
    (claude,) = run.json()["providers"]
    assert claude["ok"] is True
    assert claude["models"] == ["claude-x", "claude-z"]  # the configured list
    assert claude["detail"] == "configured but not listed by the provider: claude-z"
    headers = fake_upstream.models_headers[0]
    assert headers["x-api-key"] == SECRET and "anthropic-version" in headers


async def test_a_password_in_a_urls_user_part_or_query_is_masked_everywhere(
    tmp_path: Path,
) -> None:
    """A provider's base URL (its target line too), a DSN's `?password=` and a
    key-like query parameter (`?api-key=`, as Azure's endpoints take) are secrets."""
    closed = free_port()
    database = f"postgresql://u:db-SECRET@127.0.0.1:{free_port()}/x?password=qs-SECRET"
    config = "enable_local_model = false\n" + provider(
        "azure", f"http://user:base-SECRET@127.0.0.1:{closed}/v1?api-key=key-SECRET"
    )
    for args in ((), ("--json",)):
        run = await doctor(config, *args, "--database-url", database, cwd=tmp_path)
        assert run.status == 1, run.out + run.err
        for secret in ("db-SECRET", "qs-SECRET", "base-SECRET", "key-SECRET"):
            assert secret not in run.out, (secret, run.out)
    (azure,) = run.json()["providers"]
    assert azure["target"] == f"openai http://user:***@127.0.0.1:{closed}/v1?api-key=***"


async def test_malformed_urls_are_reported_as_unreachable_not_a_traceback(
    tmp_path: Path,
) -> None:
    """Doctor is what a user runs when the configuration is wrong: a port that is not a
    number, or a database it does not support, is the report's subject."""
    for database in ("postgresql://u:db-SECRET@127.0.0.1:notaport/x", "mysql://u:db-SECRET@h/x"):
        run = await doctor(
            "enable_local_model = false\n",
            "--database-url", database,
            "--redis-url", "redis://:rd-SECRET@127.0.0.1:notaport/0",
            cwd=tmp_path,
        )  # fmt: skip
        assert run.status == 1, run.out + run.err
        assert "Traceback" not in run.err, run.err
        assert "SECRET" not in run.out + run.err
        assert run.out.splitlines()[-1] == "unreachable: database, redis"
        lines = run.out.splitlines()
        assert next(x for x in lines if x.startswith("redis ")).split()[1] == "UNREACHABLE:"
        assert "redis://:***@127.0.0.1:notaport/0" in [x.strip() for x in lines]


async def test_a_provider_that_echoes_its_key_in_an_error_does_not_put_it_in_the_report(
    tmp_path: Path, fake_upstream: FakeUpstream
) -> None:
    """Some OpenAI-compatible proxies answer a refused key with the key in the message."""
    echoed = {"error": {"message": f"Invalid key. Received API Key = {SECRET}, or hdr-SECRET"}}
    fake_upstream.models_answer = Script(status=401, raw=[json.dumps(echoed).encode()])
    config = "enable_local_model = false\n" + provider(
        "proxy", fake_upstream.base_url, api_key=f'"{SECRET}"',
        extra_headers='{ "x-team-token" = "hdr-SECRET" }',
    )  # fmt: skip
    for args in ((), ("--json",)):
        run = await doctor(config, *args, cwd=tmp_path)
        assert run.status == 1, run.out + run.err
        assert SECRET not in run.out and "hdr-SECRET" not in run.out, run.out
    (proxy,) = run.json()["providers"]
    assert proxy["ok"] is False
    assert "Received API Key = ***" in proxy["detail"]


async def test_a_timeout_of_zero_is_refused(tmp_path: Path) -> None:
    run = await doctor("", "--timeout", "0", cwd=tmp_path)
    assert run.status != 0
    assert run.out == ""
    assert "--timeout must be more than 0" in run.err


def test_secrets_are_masked_wherever_they_are() -> None:
    assert mask_url("postgresql://u:pw@db.example:5432/x") == "postgresql://u:***@db.example:5432/x"
    assert mask_url("redis://:pw@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert mask_url("sqlite:////tmp/a.db") == "sqlite:////tmp/a.db"
    assert mask_url("postgresql://h/x?sslmode=require&password=pw") == (
        "postgresql://h/x?sslmode=require&password=***"
    )
    assert mask_url("rediss://h:6380/0?Token=t&db=1") == "rediss://h:6380/0?Token=***&db=1"
    assert mask_url("https://x.example/v1?api-key=k&sig=s") == (
        "https://x.example/v1?api-key=***&sig=***"
    )
    settings = {
        "openai_api_key": "sk-1",
        "anthropic_api_key": None,
        "redis_url": "redis://u:pw@h/0",
        "providers": {"p": {"api_key": "k", "extra_headers": {"authorization": "Bearer z"}}},
        "tools": {"mcp": {"m": {"env": {"TOKEN": "t"}, "headers": {"x": "y"}, "url": "u"}}},
        "port": 8000,
    }
    assert masked(settings) == {
        "openai_api_key": "***",
        "anthropic_api_key": None,
        "redis_url": "redis://u:***@h/0",
        "providers": {"p": {"api_key": "***", "extra_headers": {"authorization": "***"}}},
        "tools": {"mcp": {"m": {"env": {"TOKEN": "***"}, "headers": {"x": "***"}, "url": "u"}}},
        "port": 8000,
    }


async def test_the_embedded_models_build_log_is_named_with_its_last_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "logs").mkdir(parents=True)
    log = data / "logs" / "embedded-runtime.log"
    log.write_text(
        "$ pip wheel llama-cpp-python\n[150/300] Building ggml.c\nerror: no compiler\n\n"
    )
    run = await doctor(f'data_dir = "{data}"\n', "--json", cwd=tmp_path)
    assert run.status == 0, run.out + run.err
    embedded = run.json()["embedded"]
    assert embedded["build_log"] == str(log)
    assert embedded["build_log_last_line"] == "error: no compiler"
    assert embedded["model"] == "local/smollm2"
