"""The probes behind `streamkeep doctor`: what is configured, and whether each part
answers. Every probe is bounded by its own time limit and they run side by side, so one
unreachable host costs the report that limit once, not once per part.

Nothing here changes anything: a SQLite file that does not exist yet is reported as
such, not created; no migration runs.
"""

from __future__ import annotations

import asyncio
import os
import platform
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import streamkeep
from streamkeep.config import ProviderConfig, Settings

MASK = "***"
# Settings fields whose whole value is a secret, and those holding name -> secret maps
# (headers may carry `Authorization`; an MCP server's env its own keys).
_SECRET_FIELDS = frozenset({"api_key", "openai_api_key", "anthropic_api_key"})
_SECRET_MAPS = frozenset({"extra_headers", "headers", "env"})
# Query parameters that carry a credential: libpq's `?password=`, Redis's, Azure's
# `?api-key=`, a signed URL's `sig`, tokens.
_SECRET_QUERY = re.compile(r"pass|pwd|secret|token|key|sig|auth|credential", re.IGNORECASE)


@dataclass(slots=True)
class Probe:
    """One part's answer: `ok` None when it was not asked (not configured)."""

    name: str
    target: str
    ok: bool | None
    latency_ms: float | None = None
    detail: str = ""
    models: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Report:
    version: dict[str, str]
    config_file: dict[str, Any]
    data: dict[str, Any]
    settings: dict[str, Any]
    database: Probe
    redis: Probe
    providers: list[Probe]
    embedded: dict[str, Any] | None

    @property
    def failed(self) -> list[Probe]:
        """The configured parts that did not answer."""
        return [p for p in (self.database, self.redis, *self.providers) if p.ok is False]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mask_url(url: str) -> str:
    """`url` with any password, and any credential-like query value, replaced by `***`
    (a DSN, a Redis URL, a provider's base URL)."""
    parts = original = urlsplit(url)
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        # As written: `.port` raises on one that is not a number, and doctor reports that.
        port = parts.netloc.rpartition("@")[2].rpartition("]")[2]
        port = port[port.index(":") :] if ":" in port else ""
        parts = parts._replace(netloc=f"{user}:{MASK}@{host}{port}")
    if parts.query:
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        if any(_SECRET_QUERY.search(name) for name, _ in pairs):
            query = urlencode(
                [(n, MASK if _SECRET_QUERY.search(n) else v) for n, v in pairs], safe="*"
            )
            parts = parts._replace(query=query)
    # Reassembled only when masked: urlunsplit drops an empty authority (`sqlite:////`).
    return url if parts is original else urlunsplit(parts)


def masked(value: Any, key: str = "") -> Any:
    """A settings dump with every secret hidden (see `_SECRET_FIELDS`, `_SECRET_MAPS`);
    a secret that is set shows as `***`, one that is not as null."""
    if key in _SECRET_FIELDS:
        return MASK if value else value
    if key in _SECRET_MAPS and isinstance(value, dict):
        return dict.fromkeys(value, MASK)
    if isinstance(value, dict):
        return {k: masked(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v) for v in value]
    if isinstance(value, str) and key.endswith("url"):
        return mask_url(value)
    return value


def version_info() -> dict[str, str]:
    return {
        "streamkeep": streamkeep.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "executable": sys.executable,
    }


def config_file_info() -> dict[str, Any]:
    path = Path(os.environ.get("STREAMKEEP_CONFIG", "streamkeep.toml")).resolve()
    return {"path": str(path), "exists": path.is_file()}


def data_info(settings: Settings) -> dict[str, Any]:
    data_dir = settings.data_dir.resolve()
    info: dict[str, Any] = {"data_dir": str(data_dir), "exists": data_dir.is_dir()}
    if settings.database_url is None:
        db_file = data_dir / "streamkeep.db"
        info["sqlite_file"] = str(db_file)
        info["sqlite_bytes"] = db_file.stat().st_size if db_file.is_file() else None
    return info


async def _timed(coro: Any, limit: float) -> tuple[float, Any]:
    """(milliseconds taken, result) of `coro`, within `limit` seconds."""
    started = time.perf_counter()
    async with asyncio.timeout(limit):
        result = await coro
    return (time.perf_counter() - started) * 1000, result


def _why(exc: BaseException, limit: float) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {limit:g}s"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


async def probe_database(settings: Settings, limit: float) -> Probe:
    from streamkeep.store.db import Database

    url = settings.resolved_database_url
    probe = Probe("database", mask_url(url), ok=None)
    if settings.database_url is None and not (settings.data_dir / "streamkeep.db").is_file():
        probe.ok, probe.detail = True, "SQLite file not created yet (made at first serve)"
        return probe
    try:  # a URL it cannot use (a bad port, another database) is reported too
        database = Database.from_url(url)
    except Exception as exc:
        probe.ok, probe.detail = False, _why(exc, limit)
        return probe
    try:
        probe.latency_ms, answered = await _timed(database.ping(), limit)
        probe.ok = bool(answered)
        if not answered:
            probe.detail = "did not answer SELECT 1"
    except Exception as exc:  # any driver failure is the report's subject, not a crash
        probe.ok, probe.detail = False, _why(exc, limit)
    finally:
        await database.dispose()
    return probe


async def probe_redis(settings: Settings, limit: float) -> Probe:
    import redis.asyncio as aioredis

    if not settings.redis_url:
        return Probe("redis", "", ok=None, detail="not configured (single process)")
    probe = Probe("redis", mask_url(settings.redis_url), ok=None)
    try:  # a URL it cannot use (a bad port, an unknown scheme) is reported too
        client = aioredis.from_url(
            settings.redis_url, socket_connect_timeout=limit, socket_timeout=limit
        )
    except Exception as exc:
        probe.ok, probe.detail = False, _why(exc, limit)
        return probe
    try:
        probe.latency_ms, _ = await _timed(client.ping(), limit)
        probe.ok = True
    except Exception as exc:  # refused, wrong password, timeout: all reported
        probe.ok, probe.detail = False, _why(exc, limit)
    finally:
        await client.aclose()
    return probe


async def probe_provider(name: str, cfg: ProviderConfig, limit: float) -> Probe:
    """Ask a remote provider for its models (`GET .../models`): it answers, or why not."""
    from streamkeep.llm.registry import build_provider, provider_url

    probe = Probe(f"provider {name}", f"{cfg.kind} {mask_url(provider_url(cfg))}", ok=None)
    probe.models = list(cfg.models)
    provider = build_provider(name, cfg)
    try:
        probe.latency_ms, listed = await _timed(provider.list_models(), limit)  # type: ignore[attr-defined]
        probe.ok = True
        if not cfg.models:
            probe.models = listed
        elif missing := [m for m in cfg.models if m not in listed]:
            probe.detail = f"configured but not listed by the provider: {', '.join(missing)}"
    except Exception as exc:  # refused, 401, timeout, not JSON: all reported
        # A provider's error may quote the key it refused (some proxies do).
        secrets = [cfg.api_key or "", *cfg.extra_headers.values()]
        probe.ok, probe.detail = False, _hidden(_why(exc, limit), secrets)
    finally:
        await provider.aclose()
    return probe


def _hidden(text: str, secrets: list[str]) -> str:
    """`text` with each of `secrets` (the longest first) replaced by `***`."""
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def embedded_info(settings: Settings) -> dict[str, Any] | None:
    """The embedded model's parts: its runtime (llama-cpp-python) and its GGUF file."""
    if not any(cfg.kind == "local" for cfg in settings.all_providers().values()):
        return None
    from streamkeep.llm.local import GGUF_DISTRIBUTION, RUNTIME_DISTRIBUTION, gguf_file
    from streamkeep.llm.runtime import LLAMA_VERSION, EmbeddedRuntime, wheel_cache

    runtime = EmbeddedRuntime.from_settings(settings)
    info: dict[str, Any] = {"model": "local/smollm2"}
    if runtime.state == "ready":
        info["state"] = "ready"
    elif settings.local_runtime_prepare:
        info["state"] = "runtime missing: `streamkeep serve` prepares it in the background"
    else:
        info["state"] = "runtime missing, and local_runtime_prepare is off"
    for key, dist in (("runtime", RUNTIME_DISTRIBUTION), ("model_package", GGUF_DISTRIBUTION)):
        try:
            info[key] = f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            info[key] = f"{dist}: not installed"
    cache = wheel_cache()
    wheels = sorted(cache.glob(f"llama_cpp_python-{LLAMA_VERSION}-*.whl"))
    info["wheel_cache"] = str(cache)
    info["cached_wheel"] = wheels[0].name if wheels else None
    log = runtime.log_path.resolve()
    info["build_log"] = str(log) if log.is_file() else None
    info["build_log_last_line"] = _last_line(log) if log.is_file() else None
    path = gguf_file()
    info["gguf"] = str(path) if path else None
    info["gguf_bytes"] = path.stat().st_size if path else None
    return info


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (its end only: a build log runs to megabytes)."""
    with path.open("rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        lines = [line.strip() for line in f.read().decode(errors="replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")[:200]


async def diagnose(settings: Settings, limit: float) -> Report:
    remote = {n: c for n, c in settings.all_providers().items() if c.kind != "local"}
    database, redis_probe, *providers = await asyncio.gather(
        probe_database(settings, limit),
        probe_redis(settings, limit),
        *(probe_provider(n, c, limit) for n, c in remote.items()),
    )
    return Report(
        version=version_info(),
        config_file=config_file_info(),
        data=data_info(settings),
        settings=masked(settings.model_dump(mode="json")),
        database=database,
        redis=redis_probe,
        providers=providers,
        embedded=embedded_info(settings),
    )
