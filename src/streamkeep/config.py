"""Settings: environment variables, `streamkeep serve` flags and an optional TOML file.

Precedence (highest first): explicit keyword arguments (the CLI flags), `STREAMKEEP_*`
environment variables (plus the vendors' own `OPENAI_*` / `ANTHROPIC_API_KEY`), then
`streamkeep.toml` (path from `STREAMKEEP_CONFIG`, default `./streamkeep.toml`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOCAL_MODEL = "local/smollm2"
# A fallback alias's name: never a `provider/model` (no "/"), so the two cannot be confused.
ALIAS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class ProviderConfig(BaseModel):
    """One configured provider; its name is the prefix of its model names."""

    kind: Literal["openai", "anthropic", "local"]
    base_url: str | None = None
    api_key: str | None = None
    # Models this provider serves (names without the prefix), listed by /v1/models.
    # Empty means "any name is passed through" (e.g. a vLLM or OpenRouter endpoint);
    # /v1/models then lists what an OpenAI-compatible one's own /models lists.
    models: list[str] = Field(default_factory=list)
    connect_timeout: float = 10.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    max_retries: int = 2
    extra_headers: dict[str, str] = Field(default_factory=dict)
    # Whether its models take images in (None: yes, except the embedded local model).
    images: bool | None = None

    @property
    def takes_images(self) -> bool:
        return self.kind != "local" if self.images is None else self.images


class LimitSpec(BaseModel):
    """The limits of one user or API key; None (or 0 in TOML, which has no null) is
    unlimited. Enforced by `streamkeep.http.limits`."""

    # A misspelt limit would otherwise be ignored, silently leaving a caller unlimited.
    model_config = ConfigDict(extra="forbid", frozen=True)

    requests_per_minute: int | None = Field(default=None, ge=0)
    concurrent_generations: int | None = Field(default=None, ge=0)
    tokens_per_period: int | None = Field(default=None, ge=0)  # input + output
    period: Literal["hour", "day", "month"] = "day"  # starting at UTC boundaries

    @field_validator("requests_per_minute", "concurrent_generations", "tokens_per_period")
    @classmethod
    def _zero_is_unlimited(cls, v: int | None) -> int | None:
        return v or None


# An API key's visible prefix (as `store.credentials` makes it), never the key itself.
_KEY_PREFIX = re.compile(r"sk-keep-[A-Za-z0-9]{8}")


class LimitsConfig(BaseModel):
    """`[limits.user]` and `[limits.key]` apply to every user and API key; entries of
    `[limits.users.<name>]` and `[limits.keys."<prefix>"]` replace the limits they name.
    Unlimited by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: LimitSpec = LimitSpec()
    key: LimitSpec = LimitSpec()
    users: dict[str, LimitSpec] = Field(default_factory=dict)  # by user name
    keys: dict[str, LimitSpec] = Field(default_factory=dict)  # by key prefix

    @field_validator("keys")
    @classmethod
    def _prefixes(cls, v: dict[str, LimitSpec]) -> dict[str, LimitSpec]:
        for name in v:
            if _KEY_PREFIX.fullmatch(name) is None:
                raise ValueError(
                    f"{name[:16]!r}...: name a key by its prefix, `sk-keep-` and 8 letters "
                    "or digits (never the whole key: it is a secret)"
                )
        return v


class McpServerConfig(BaseModel):
    """One MCP server: a command started over stdio, or a streamable HTTP `url`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # stdio: the program and its arguments, e.g. ["uvx", "mcp-server-fetch"]
    command: list[str] | None = Field(default=None, min_length=1)
    env: dict[str, str] = Field(default_factory=dict)  # added to the server's environment
    cwd: str | None = None
    # streamable HTTP: e.g. "http://127.0.0.1:9000/mcp"
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    # Seconds one call of its tools may take (None: `tools.timeout`).
    timeout: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_transport(self) -> McpServerConfig:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of `command` (stdio) or `url`")
        return self


class ToolsConfig(BaseModel):
    """`[tools]`: the tool loop's bounds, Python tools by import path, MCP servers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Model calls per reply: a model still calling tools after this many ends the reply.
    max_steps: int = Field(default=5, ge=1, le=100)
    # Seconds one tool call may take before it is cancelled and reported as an error.
    timeout: float = Field(default=30.0, gt=0)
    # "package.module:function" of Python tools to register (see streamkeep.tools).
    python: list[str] = Field(default_factory=list)
    # By name, the prefix of their tools' names (`NAME__TOOL`).
    mcp: dict[str, McpServerConfig] = Field(default_factory=dict)

    @field_validator("mcp")
    @classmethod
    def _server_names(cls, v: dict[str, McpServerConfig]) -> dict[str, McpServerConfig]:
        for name in v:
            if re.fullmatch(r"[A-Za-z0-9-]{1,24}", name) is None:
                raise ValueError(
                    f"MCP server name {name[:30]!r}: 1 to 24 letters, digits or '-' "
                    "(it prefixes its tools' names)"
                )
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STREAMKEEP_", extra="ignore")

    data_dir: Path = Path(".streamkeep")
    database_url: str | None = None
    redis_url: str | None = None
    redis_prefix: str = "streamkeep:"  # of every Redis key and channel: deployments may share
    model: str | None = None  # default model for new chats; None = first configured
    host: str = "127.0.0.1"
    port: int = 8000
    # Host names answered besides loopback and `host` ("*.example.com", "*" for any):
    # a page under any other name is a DNS-rebinding attempt (see server.security).
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    openai_api_key: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "STREAMKEEP_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OPENAI_BASE_URL", "STREAMKEEP_OPENAI_BASE_URL"),
    )
    anthropic_api_key: str | None = Field(
        default=None,
        validation_alias=AliasChoices("ANTHROPIC_API_KEY", "STREAMKEEP_ANTHROPIC_API_KEY"),
    )
    enable_local_model: bool = True
    # When llama-cpp-python (the embedded model's runtime) is missing, the server
    # prepares it in the background (`llm.runtime`): pip-installs the machine's cached
    # wheel, building it first if there is none. Off: the model stays unavailable.
    local_runtime_prepare: bool = True
    # One command (shell-quoted) that prepares it instead of the default steps.
    local_runtime_command: str | None = None

    # Generations
    checkpoint_interval: float = 1.0  # seconds between batched checkpoints of live replies
    shutdown_grace: float = 30.0  # seconds live generations get to finish on SIGTERM
    stop_on_disconnect: bool = False  # stop a generation when its last client leaves
    max_message_chars: int = 100_000
    # Seconds a finished reply's stream stays replayable (`GET .../stream` with
    # Last-Event-ID); also how long a same-key retry still joins it. In memory, and in
    # Redis with several workers.
    replay_window: float = Field(default=30.0, ge=0)
    # Request bodies over this many bytes are refused (413) before they are read whole.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    # With Redis: seconds without a heartbeat (and without its worker's presence key)
    # before another worker stores a generation `interrupted`.
    worker_stale_after: float = 15.0
    # Images in (see streamkeep.store.images): the largest one taken, in bytes, and how
    # many one message may carry. Bigger: 413; more: 400.
    max_image_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    max_images_per_message: int = Field(default=8, ge=1)
    # Fetch an image given by http(s) URL (gateway APIs); off: such a URL is a 400.
    # Never from a private, loopback or link-local address, unless its host is listed
    # in `image_url_hosts_allowed` (for tests and trusted internal hosts).
    fetch_image_urls: bool = False
    image_url_hosts_allowed: list[str] = Field(default_factory=list)
    # The OpenAI-compatible gateway stores every call as a chat unless this is off.
    gateway_store: bool = True
    # `gc.freeze()` once the app has started: the objects made until then (modules, the
    # app) leave the collector's sight for the life of the process. Process-wide (an app
    # embedded in another program may want it off); what it saves: README, Benchmarks.
    gc_freeze: bool = True
    # Requests per minute, concurrent generations and tokens per period, per user and
    # per API key (see `LimitsConfig`): counted in Redis when there is one.
    limits: LimitsConfig = LimitsConfig()
    # The tool loop, Python tools and MCP servers (see ToolsConfig, streamkeep.tools).
    tools: ToolsConfig = ToolsConfig()
    # Fallback aliases: NAME -> the provider models to try in order (see
    # `streamkeep.llm.fallback`); checked against the providers by `_aliases_resolve`.
    aliases: dict[str, list[str]] = Field(default_factory=dict)

    # Operations. Log lines as plain text or one JSON object per line (`logs`).
    log_format: Literal["text", "json"] = "text"
    # Message content (prompts, answers) in the GenAI spans exported over OTLP: off by
    # default, as prompts are often private. Logs never carry it.
    capture_content: bool = False

    # Accounts (see http.auth). Auth is on once a user exists; `no_auth` keeps it off
    # (`streamkeep serve --no-auth`: needed to listen beyond loopback with no user).
    no_auth: bool = False
    # Seconds a page sign-in lasts (14 days).
    session_lifetime: float = Field(default=14 * 24 * 3600, gt=0)
    # The session cookie's Secure flag. None: when the request came over HTTPS; set true
    # behind a proxy that ends TLS (the server then sees plain HTTP).
    cookie_secure: bool | None = None
    # Local password sign-in on the page (`POST /api/auth/login`); off: only OIDC.
    password_login: bool = True

    # External identity (see http.external, README "Accounts"); any of the three
    # turns auth on from the start.
    # JWT bearer tokens from a product's own auth: HS256 with `jwt_secret`, or keys
    # from `jwt_jwks_url`; `jwt_issuer` and `jwt_audience` must match the token's.
    jwt_secret: SecretStr | None = None
    jwt_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    # None: ["HS256"] with a secret, ["RS256", "ES256"] with a JWKS.
    jwt_algorithms: Annotated[list[str] | None, NoDecode] = None
    jwt_leeway: float = Field(default=30.0, ge=0, le=600)  # seconds, for exp/nbf/iat
    jwt_name_claim: str = "preferred_username"  # the user's name (else email, sub)
    jwt_email_claim: str = "email"
    # Seconds a fetched JWKS is used; a token with an unknown `kid` refetches it,
    # at most once per `jwks_refresh_interval` seconds.
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    jwks_refresh_interval: float = Field(default=30.0, ge=0)
    # Trusted headers from an auth proxy: honoured only from these address ranges
    # (CIDR, e.g. "10.0.0.5/32"); empty: off.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    trusted_user_header: str = "X-Forwarded-User"
    trusted_email_header: str = "X-Forwarded-Email"
    # OIDC sign-in for the page (authorization code flow with PKCE): the provider's
    # issuer URL (its /.well-known/openid-configuration is read), this client's id and
    # secret, and the name on the page's "Sign in with NAME" button.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: SecretStr | None = None
    oidc_provider_name: str = "OIDC"
    oidc_scopes: str = "openid email profile"
    # Where the provider sends the browser back; None: this server's
    # /api/auth/oidc/callback as the request reached it.
    oidc_redirect_url: str | None = None
    # Who may sign in: an email domain listed here (the `email` claim), and/or a
    # value of `oidc_groups_claim` equal to `oidc_required_group`. Empty/None: anyone.
    oidc_allowed_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    oidc_groups_claim: str = "groups"
    oidc_required_group: str | None = None
    # Admins: the claim `oidc_admin_claim` equals, or (a list) holds, `oidc_admin_value`.
    oidc_admin_claim: str = "groups"
    oidc_admin_value: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        # `generation_retention` is the earlier name of `replay_window`.
        if isinstance(data, dict) and "generation_retention" in data:
            data = dict(data)
            legacy = data.pop("generation_retention")
            data.setdefault("replay_window", legacy)
        return data

    @model_validator(mode="after")
    def _aliases_resolve(self) -> Settings:
        providers = self.all_providers()
        for name, targets in self.aliases.items():
            problem = _alias_problem(name, targets, providers, self.aliases)
            if problem is not None:
                raise ValueError(f"[aliases] {name[:70]!r}: {problem}")
        return self

    @model_validator(mode="after")
    def _identity_settings(self) -> Settings:
        problem = jwt_problem(self) or proxies_problem(self.trusted_proxies) or oidc_problem(self)
        if problem is not None:
            raise ValueError(problem)
        return self

    @property
    def jwt_enabled(self) -> bool:
        return self.jwt_secret is not None or self.jwt_jwks_url is not None

    @property
    def oidc_enabled(self) -> bool:
        return self.oidc_issuer is not None

    @property
    def external_identity(self) -> bool:
        """Whether any external identity is configured (auth is then on)."""
        return self.jwt_enabled or bool(self.trusted_proxies) or self.oidc_enabled

    def jwt_algorithm_list(self) -> list[str]:
        if self.jwt_algorithms:
            return self.jwt_algorithms
        return ["HS256"] if self.jwt_secret is not None else ["RS256", "ES256"]

    @field_validator(
        "allowed_hosts", "trusted_proxies", "jwt_algorithms", "oidc_allowed_domains", mode="before"
    )
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        return [h.strip() for h in v.split(",") if h.strip()] if isinstance(v, str) else v

    @field_validator("data_dir", mode="before")
    @classmethod
    def _expand(cls, v: Any) -> Any:
        return Path(v).expanduser() if isinstance(v, str) else v

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'streamkeep.db').resolve()}"

    def all_providers(self) -> dict[str, ProviderConfig]:
        """Configured providers plus those implied by the vendors' own variables."""
        found: dict[str, ProviderConfig] = {}
        if self.enable_local_model:
            found["local"] = ProviderConfig(kind="local", models=["smollm2"])
        if self.openai_api_key or self.openai_base_url:
            found["openai"] = ProviderConfig(
                kind="openai",
                base_url=self.openai_base_url or "https://api.openai.com/v1",
                api_key=self.openai_api_key,
            )
        if self.anthropic_api_key:
            found["anthropic"] = ProviderConfig(
                kind="anthropic",
                base_url="https://api.anthropic.com",
                api_key=self.anthropic_api_key,
            )
        found.update(self.providers)
        return found

    def takes_images(self, model: str) -> bool:
        """Whether `model`'s provider takes images (`ProviderConfig.images`); for a
        fallback alias, whether all its models' do (any of them may answer); an unknown
        provider: True (the registry refuses its model anyway)."""
        providers = self.all_providers()
        for target in self.aliases.get(model, [model]):
            cfg = providers.get(target.partition("/")[0])
            if cfg is not None and not cfg.takes_images:
                return False
        return True

    def default_model(self) -> str:
        if self.model:
            return self.model
        for name, cfg in self.all_providers().items():
            if cfg.models:
                return f"{name}/{cfg.models[0]}"
        return LOCAL_MODEL


def _alias_problem(
    name: str,
    targets: list[str],
    providers: dict[str, ProviderConfig],
    aliases: dict[str, list[str]],
) -> str | None:
    """What is wrong with one `[aliases]` entry, or None."""
    if "/" in name:
        return "an alias is named without '/': PROVIDER/MODEL names a provider's model"
    if ALIAS_NAME.fullmatch(name) is None:
        return "1 to 64 letters, digits or '.', '_', ':', '-', starting with a letter or digit"
    if name in providers:
        return "is also a provider's name; give the alias another"
    if not targets:
        return "names no model to try"
    if len(set(targets)) < len(targets):
        return "names a model twice"
    for target in targets:
        if target in aliases:
            return f"points at the alias {target!r}: an alias names provider models only"
        prefix, _, model = target.partition("/")
        cfg = providers.get(prefix)
        if not model or cfg is None:
            known = ", ".join(sorted(providers)) or "none"
            return f"{target!r} is not PROVIDER/MODEL of a configured provider ({known})"
        if cfg.models and model not in cfg.models:
            return f"provider {prefix!r} has no model {model!r}; it serves: {', '.join(cfg.models)}"
    return None


_SECRET_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def jwt_problem(settings: Settings) -> str | None:
    """What is wrong with the `jwt_*` settings, or None. A shared secret only ever
    checks HMAC algorithms and a JWKS only public-key ones: a token cannot pick the
    other kind (the classic confusion of an RSA public key used as an HMAC secret)."""
    if not settings.jwt_enabled:
        return None
    if settings.jwt_secret is not None and settings.jwt_jwks_url is not None:
        return "jwt_secret and jwt_jwks_url: set one of them (a product signs one way)"
    if not settings.jwt_issuer or not settings.jwt_audience:
        return "JWT bearer tokens need jwt_issuer and jwt_audience (the token's iss and aud)"
    allowed = _SECRET_ALGORITHMS if settings.jwt_secret is not None else _KEY_ALGORITHMS
    wrong = [a for a in settings.jwt_algorithm_list() if a not in allowed]
    if wrong:
        with_what = "jwt_secret" if settings.jwt_secret is not None else "jwt_jwks_url"
        can = ", ".join(sorted(allowed))
        return f"jwt_algorithms: {', '.join(wrong)} cannot be used with {with_what} ({can} can)"
    if settings.jwt_secret is not None and len(settings.jwt_secret.get_secret_value()) < 32:
        return "jwt_secret: at least 32 characters (RFC 7518 wants a key as long as the hash)"
    return None


def oidc_problem(settings: Settings) -> str | None:
    if not settings.oidc_enabled:
        if not settings.password_login and not settings.external_identity:
            return "password_login is off and no external identity is set: nobody could sign in"
        return None
    if not settings.oidc_client_id or settings.oidc_client_secret is None:
        return "OIDC sign-in needs oidc_client_id and oidc_client_secret"
    if "openid" not in settings.oidc_scopes.split():
        return "oidc_scopes: must include `openid`"
    return None


def proxies_problem(proxies: list[str]) -> str | None:
    for entry in proxies:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            return f"trusted_proxies: {entry[:60]!r} is not an address range (CIDR)"
    return None


class SettingsError(ValueError):
    """Settings that cannot be used: one line per problem, naming the setting."""


def _problems(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "\n".join(lines)


def load_settings(**overrides: Any) -> Settings:
    """Build settings from the TOML file, the environment and explicit overrides.

    Raises SettingsError saying what is wrong with them."""
    try:
        return _load_settings(overrides)
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


def _load_settings(overrides: dict[str, Any]) -> Settings:
    path = Path(os.environ.get("STREAMKEEP_CONFIG", "streamkeep.toml"))
    file_values: dict[str, Any] = {}
    if path.is_file():
        with path.open("rb") as f:
            try:
                file_values = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(f"{path}: {exc}") from None
    env_settings = Settings()
    merged = {**file_values, **env_settings.model_dump(exclude_unset=True)}
    merged.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(merged)
