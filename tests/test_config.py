"""Config keys: defaults in one place, env fallback parsed as JSON, validation naming the key."""

from __future__ import annotations

import pytest

from arda_amazon_bp.config import DEFAULTS, ConfigError, Settings, apply_defaults


def settings(**config):
    apply_defaults(config)
    return Settings.from_config(config)


def test_defaults_fill_unset_keys_only():
    config = {"AMAZON_MARKETPLACE": "www.amazon.de"}
    apply_defaults(config)
    assert config["AMAZON_MARKETPLACE"] == "www.amazon.de"
    assert config["AMAZON_RATE_LIMITS"] == "1/second;8640/day"
    assert set(DEFAULTS) <= set(config)


def test_unset_key_falls_back_to_env_parsed_as_json(monkeypatch):
    monkeypatch.setenv("AMAZON_HTTP_TIMEOUT", "[2, 5]")
    monkeypatch.setenv("AMAZON_MAX_WAITING", "3")
    monkeypatch.setenv("AMAZON_RATE_LIMITS", "2/second;100/day")  # not JSON: kept as text
    monkeypatch.setenv("AMAZON_PRINCIPAL_LIMITS", "30/minute;500/day")
    result = settings()
    assert result.http_timeout == (2.0, 5.0)
    assert result.max_waiting == 3
    assert result.rate_limits == "2/second;100/day"
    assert result.principal_limits == "30/minute;500/day"


def test_new_keys_default_to_no_budget_derived_waiting_and_64_kib():
    result = settings()
    assert result.principal_limits is None
    assert result.max_waiting is None
    assert result.max_body_bytes == 65_536


@pytest.mark.parametrize("value", ["true", "1", "yes", "maybe"])
def test_auth_disabled_in_the_environment_only_is_refused(monkeypatch, value):
    monkeypatch.setenv("AMAZON_IMPORT_AUTH_DISABLED", value)
    with pytest.raises(ConfigError, match=r"environment only.*app's own config"):
        settings()


def test_auth_disabled_false_in_the_environment_is_ignored(monkeypatch):
    monkeypatch.setenv("AMAZON_IMPORT_AUTH_DISABLED", "false")
    assert settings().auth_disabled is False


def test_auth_disabled_from_app_config_wins_and_the_environment_is_not_read(monkeypatch):
    monkeypatch.setenv("AMAZON_IMPORT_AUTH_DISABLED", "true")
    assert settings(AMAZON_IMPORT_AUTH_DISABLED=True).auth_disabled is True
    assert settings(AMAZON_IMPORT_AUTH_DISABLED=False).auth_disabled is False
    # read() (keys looked up after init_app) never takes it from the environment either.
    assert Settings.from_config({}).auth_disabled is False


def test_app_config_wins_over_env(monkeypatch):
    monkeypatch.setenv("AMAZON_CACHE_TTL_SECONDS", "10")
    assert settings(AMAZON_CACHE_TTL_SECONDS=20).cache_ttl_seconds == 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, (5.0, 5.0)),
        (5.5, (5.5, 5.5)),
        ((3.05, 10), (3.05, 10.0)),
        ([2, 7.5], (2.0, 7.5)),
        ("7", (7.0, 7.0)),
    ],
)
def test_http_timeout_takes_a_number_or_a_pair(value, expected):
    assert settings(AMAZON_HTTP_TIMEOUT=value).http_timeout == expected


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AMAZON_HTTP_TIMEOUT", [1, 2, 3]),
        ("AMAZON_HTTP_TIMEOUT", 0),
        ("AMAZON_HTTP_TIMEOUT", "soon"),
        ("AMAZON_CACHE_TTL_SECONDS", 86_401),
        ("AMAZON_CACHE_TTL_SECONDS", -1),
        ("AMAZON_MAX_WAIT_SECONDS", True),
        ("AMAZON_MARKETPLACE", ""),
        ("AMAZON_IMPORT_AUTH_DISABLED", "maybe"),
        ("AMAZON_MAX_ITEMS_PER_CALL", 11),
        ("AMAZON_MAX_ITEMS_PER_CALL", 2.5),
        ("AMAZON_MAX_WAITING", 0),
        ("AMAZON_MAX_WAITING", 1.5),
        ("AMAZON_MAX_BODY_BYTES", 0),
        ("AMAZON_PRINCIPAL_LIMITS", 30),
    ],
)
def test_bad_values_raise_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=key):
        settings(**{key: value})


def test_cache_ttl_of_a_day_is_allowed():
    assert settings(AMAZON_CACHE_TTL_SECONDS=86_400).cache_ttl_seconds == 86_400


def test_marketplaces_unset_serve_amazon_marketplace_alone():
    result = settings(AMAZON_MARKETPLACE="www.amazon.de")
    assert result.marketplaces == ("www.amazon.de",)
    assert result.marketplace == "www.amazon.de"


@pytest.mark.parametrize(
    ("value", "primary", "served"),
    [
        (
            "www.amazon.com, WWW.AMAZON.CO.UK",
            "www.amazon.com",
            ("www.amazon.com", "www.amazon.co.uk"),
        ),
        (
            ["www.amazon.co.uk", "www.amazon.com"],
            "www.amazon.com",
            ("www.amazon.com", "www.amazon.co.uk"),
        ),
        (
            "www.amazon.co.uk,www.amazon.de",
            "www.amazon.co.uk",
            ("www.amazon.co.uk", "www.amazon.de"),
        ),
    ],
)
def test_marketplaces_put_amazon_marketplace_first_when_listed(value, primary, served):
    result = settings(AMAZON_MARKETPLACES=value)  # AMAZON_MARKETPLACE: www.amazon.com
    assert result.marketplace == primary
    assert result.marketplaces == served


def test_marketplaces_come_from_the_environment_too(monkeypatch):
    monkeypatch.setenv("AMAZON_MARKETPLACES", "www.amazon.com,www.amazon.ca")
    assert settings().marketplaces == ("www.amazon.com", "www.amazon.ca")


@pytest.mark.parametrize(
    "value",
    ["amazon.co.uk", "www.amazon.cn", "www.amazon.com,www.amazon.com", " , ", 42],
)
def test_bad_marketplaces_are_refused_naming_the_key(value):
    with pytest.raises(ConfigError, match="AMAZON_MARKETPLACES"):
        settings(AMAZON_MARKETPLACES=value)
