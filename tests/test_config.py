"""Settings: flags over the environment over `streamkeep.toml`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamkeep.cli import main
from streamkeep.config import LimitsConfig, LimitSpec, load_settings
from streamkeep.store.credentials import key_prefix, new_api_key


def test_replay_window_comes_from_the_environment_over_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text("replay_window = 5\n")
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    assert load_settings().replay_window == 5.0
    monkeypatch.setenv("STREAMKEEP_REPLAY_WINDOW", "2.5")
    assert load_settings().replay_window == 2.5
    assert load_settings(replay_window=1).replay_window == 1.0


def test_generation_retention_is_read_as_the_replay_window(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text("generation_retention = 7\n")  # the setting's earlier name
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    assert load_settings().replay_window == 7.0
    assert load_settings(generation_retention=0.0).replay_window == 0.0


def test_a_negative_replay_window_is_refused() -> None:
    with pytest.raises(ValueError, match="replay_window"):
        load_settings(replay_window=-1)


def test_limits_are_read_from_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text(
        "[limits.user]\n"
        "requests_per_minute = 60\n"
        "tokens_per_period = 100000\n"
        "[limits.key]\n"
        "concurrent_generations = 2\n"
        "[limits.users.alice]\n"
        "requests_per_minute = 0\n"  # TOML has no null: 0 is unlimited
        "period = 'month'\n"
        '[limits.keys."sk-keep-AbCd1234"]\n'
        "tokens_per_period = 500\n"
    )
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    limits = load_settings().limits
    assert limits.user == LimitSpec(requests_per_minute=60, tokens_per_period=100_000)
    assert limits.key == LimitSpec(concurrent_generations=2)
    assert limits.users == {"alice": LimitSpec(period="month")}
    assert limits.users["alice"].model_fields_set == {"requests_per_minute", "period"}
    assert limits.keys == {"sk-keep-AbCd1234": LimitSpec(tokens_per_period=500)}


def test_there_are_no_limits_by_default() -> None:
    limits = load_settings().limits
    assert limits == LimitsConfig()
    assert limits.user == limits.key == LimitSpec()
    assert LimitSpec() == LimitSpec(
        requests_per_minute=None, concurrent_generations=None, tokens_per_period=None
    )


@pytest.mark.parametrize(
    ("limits", "error"),
    [
        ({"user": {"requests_per_minute": -1}}, "greater than or equal to 0"),
        ({"user": {"request_per_minute": 5}}, "request_per_minute"),  # misspelt
        ({"key": {"period": "week"}}, "period"),
        ({"keys": {"AbCd1234": {}}}, "prefix"),
        ({"keys": {"sk-keep-AbCd1234" + "x" * 43: {}}}, "never the whole key"),
        ({"usr": {}}, "usr"),
    ],
)
def test_bad_limits_are_refused(limits: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_settings(limits=limits)


def test_the_prefix_of_a_new_api_key_names_it_in_the_limits() -> None:
    prefix = key_prefix(new_api_key())
    assert prefix is not None
    assert prefix in LimitsConfig.model_validate({"keys": {prefix: {}}}).keys


ALIAS_PROVIDERS = {
    "groq": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1", "models": ["llama"]},
    "open": {"kind": "openai", "base_url": "http://127.0.0.1:2/v1"},  # any model name
}


def test_aliases_are_read_from_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text(
        'model = "fast"\n'
        "[providers.groq]\n"
        'kind = "openai"\n'
        'base_url = "http://127.0.0.1:1/v1"\n'
        'models = ["llama"]\n'
        "[aliases]\n"
        'fast = ["groq/llama", "local/smollm2"]\n'
    )
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    settings = load_settings()
    assert settings.aliases == {"fast": ["groq/llama", "local/smollm2"]}
    assert settings.default_model() == "fast"


@pytest.mark.parametrize(
    ("aliases", "error"),
    [
        ({"groq/fast": ["groq/llama"]}, "without '/'"),
        ({"fast one": ["groq/llama"]}, "letters, digits"),
        ({"-fast": ["groq/llama"]}, "letters, digits"),
        ({"groq": ["open/x"]}, "also a provider's name"),
        ({"fast": []}, "names no model"),
        ({"fast": ["groq/llama", "groq/llama"]}, "names a model twice"),
        ({"fast": ["groq/llama"], "faster": ["fast"]}, "points at the alias 'fast'"),
        ({"fast": ["nowhere/llama"]}, "not PROVIDER/MODEL of a configured provider"),
        ({"fast": ["llama"]}, "not PROVIDER/MODEL"),
        ({"fast": ["groq/mixtral"]}, "provider 'groq' has no model 'mixtral'"),
    ],
)
def test_bad_aliases_are_refused_at_start(aliases: dict[str, list[str]], error: str) -> None:
    with pytest.raises(ValueError, match=r"\[aliases\]") as raised:
        load_settings(providers=ALIAS_PROVIDERS, aliases=aliases)
    assert error in str(raised.value)


def test_an_alias_may_name_any_model_of_a_pass_through_provider() -> None:
    settings = load_settings(providers=ALIAS_PROVIDERS, aliases={"any": ["open/whatever"]})
    assert settings.aliases == {"any": ["open/whatever"]}


def test_an_alias_takes_images_only_when_every_model_of_it_does() -> None:
    providers = {**ALIAS_PROVIDERS, "blind": {**ALIAS_PROVIDERS["groq"], "images": False}}
    settings = load_settings(
        providers=providers,
        aliases={"seeing": ["groq/llama", "open/x"], "mixed": ["groq/llama", "blind/llama"]},
    )
    assert settings.takes_images("seeing") and settings.takes_images("groq/llama")
    assert not settings.takes_images("mixed") and not settings.takes_images("blind/llama")


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        (
            '[aliases]\nfast = ["nowhere/x"]\n',
            "[aliases] 'fast': 'nowhere/x' is not PROVIDER/MODEL",
        ),
        ("replay_window = -1\n", "replay_window: Input should be greater than or equal to 0"),
        ("replay_window = \n", "streamkeep.toml: Invalid value"),
    ],
)
def test_bad_settings_stop_the_command_with_a_plain_message(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    toml: str,
    said: str,
) -> None:
    config = tmp_path / "streamkeep.toml"
    config.write_text(toml)
    monkeypatch.setenv("STREAMKEEP_CONFIG", str(config))
    assert main(["serve", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamkeep: invalid settings:\n") and said in err
    assert "Traceback" not in err and not (tmp_path / "streamkeep.db").exists()


JWT = {"jwt_issuer": "https://auth.example", "jwt_audience": "streamkeep"}


def test_jwt_and_proxy_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMKEEP_JWT_JWKS_URL", "https://auth.example/jwks.json")
    monkeypatch.setenv("STREAMKEEP_JWT_ISSUER", "https://auth.example")
    monkeypatch.setenv("STREAMKEEP_JWT_AUDIENCE", "streamkeep")
    monkeypatch.setenv("STREAMKEEP_JWT_ALGORITHMS", "ES256, RS256")
    monkeypatch.setenv("STREAMKEEP_TRUSTED_PROXIES", "10.0.0.5/32, fd00::/8")
    settings = load_settings()
    assert settings.jwt_algorithm_list() == ["ES256", "RS256"]
    assert settings.trusted_proxies == ["10.0.0.5/32", "fd00::/8"]
    assert settings.external_identity


def test_external_identity_is_off_by_default_and_a_secret_means_hs256() -> None:
    assert not load_settings().external_identity
    assert load_settings(jwt_secret="s" * 32, **JWT).jwt_algorithm_list() == ["HS256"]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"jwt_secret": "s" * 32}, "need jwt_issuer and jwt_audience"),
        ({"jwt_secret": "short", **JWT}, "at least 32 characters"),
        ({"jwt_secret": "s" * 32, "jwt_jwks_url": "https://a/j", **JWT}, "set one of them"),
        ({"jwt_secret": "s" * 32, "jwt_algorithms": ["RS256"], **JWT}, "RS256 cannot be used"),
        ({"jwt_jwks_url": "https://a/j", "jwt_algorithms": ["HS256"], **JWT}, "HS256 cannot"),
        ({"trusted_proxies": ["10.0.0.300/32"]}, "not an address range"),
        ({"password_login": False}, "nobody could sign in"),
        ({"oidc_issuer": "https://sso.example"}, "needs oidc_client_id and oidc_client_secret"),
        (
            {
                "oidc_issuer": "https://s",
                "oidc_client_id": "c",
                "oidc_client_secret": "s",
                "oidc_scopes": "email",
            },
            "must include `openid`",
        ),
    ],
)
def test_bad_identity_settings_are_refused(values: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        load_settings(**values)
