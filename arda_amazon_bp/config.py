"""Every ``AMAZON_*`` configuration key, its default, and how a value is read.

Like Flask-Limiter's ``ConfigVars``, this module is the one place where keys and defaults
live. A key the app leaves unset falls back to the environment variable of the same name,
parsed as JSON when it parses (the way Flask's ``from_prefixed_env`` treats values), so a
deploy pipeline can configure everything by environment alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

#: key -> default. ``None`` means "no default" (optional, or required by whoever uses it).
DEFAULTS: dict[str, Any] = {
    "AMAZON_CREDENTIALS_BACKEND": "env",
    "AMAZON_CREDENTIALS_FILE": None,
    "AMAZON_CREDENTIALS": None,  # the config backend's four fields (tests, development)
    "AMAZON_PARTITION": None,
    "AMAZON_ONEPASSWORD_VAULT": None,  # None -> "Arda-{AMAZON_PARTITION}OAM"
    "AMAZON_ONEPASSWORD_ITEM": "Amazon Creators API",
    "AMAZON_CREDENTIALS_TTL_SECONDS": 900,
    "AMAZON_MARKETPLACE": "www.amazon.com",
    "AMAZON_MARKETPLACES": None,  # None -> [AMAZON_MARKETPLACE]
    "AMAZON_CREATORS_API_HOST": "https://creatorsapi.amazon",
    "AMAZON_TOKEN_URL": None,  # None -> chosen by the credential version
    "AMAZON_RATE_LIMITS": "1/second;8640/day",
    "AMAZON_RATE_MARGIN_SECONDS": 0.15,
    "AMAZON_RATE_LIMIT_STORAGE_URI": "memory://",
    "AMAZON_MAX_WAIT_SECONDS": 3,
    "AMAZON_MAX_WAITING": None,  # None -> half the server's threads when known, else 8
    "AMAZON_PRINCIPAL_LIMITS": None,  # None -> no per-user budget
    "AMAZON_CACHE_TTL_SECONDS": 3600,
    "AMAZON_CACHE_STORAGE_URI": "memory://",
    "AMAZON_CACHE_MAX_ENTRIES": 100_000,
    "AMAZON_NEGATIVE_CACHE_TTL_SECONDS": 300,
    "AMAZON_FRONT_CACHE_TTL_SECONDS": 2,  # per-process cache of hot imports; 0 = off
    "AMAZON_FRONT_CACHE_MAX_ENTRIES": 1000,
    "AMAZON_HTTP_TIMEOUT": (3.05, 10),
    "AMAZON_IMPORT_AUTH_DISABLED": False,
    "AMAZON_IMPORT_URL_PREFIX": "/api/amazon",
    "AMAZON_BATCH_MAX_URLS": 50,
    "AMAZON_MAX_BODY_BYTES": 65_536,
    "AMAZON_MAX_ITEMS_PER_CALL": 10,  # ASINs per getItems call; 1 = the naive baseline
    "AMAZON_UPSTREAM_EVENT_INTERVAL_SECONDS": 600,
    "AMAZON_SMOKE_ASIN": None,  # None -> cli.DEFAULT_SMOKE_ASIN
    "AMAZON_SHORT_LINKS": "refuse",  # or "resolve" (docs/api.md, short links)
    "AMAZON_SHORT_LINK_TIMEOUT_SECONDS": 3,
    "AMAZON_SHORT_LINK_CACHE_TTL_SECONDS": 86_400,
    "AMAZON_SHORT_LINK_RATE_LIMIT": "2/second;60/minute",
    "AMAZON_SHORT_LINK_BASE_URL": None,  # test seam, like AMAZON_CREATORS_API_HOST
}

#: Values of ``AMAZON_SHORT_LINKS``.
SHORT_LINK_MODES = ("refuse", "resolve")

#: Keys honoured only from the app's own config: the environment alone must not switch
#: authentication off for a whole deployment (docs/security.md).
APP_CONFIG_ONLY: frozenset[str] = frozenset({"AMAZON_IMPORT_AUTH_DISABLED"})

#: Amazon's terms limit how long product data may be kept.
MAX_CACHE_TTL_SECONDS = 86_400

#: The per-process front cache is a shock absorber for hot products, not a second cache.
MAX_FRONT_CACHE_TTL_SECONDS = 60


class ConfigError(ValueError):
    """A configuration value is missing or malformed; the message names the key."""


def _from_env(key: str) -> Any:
    raw = os.environ[key]
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def apply_defaults(config: MutableMapping[str, Any]) -> None:
    """Fill every unset key from the environment, else from :data:`DEFAULTS`.

    Raises :class:`ConfigError` when a key of :data:`APP_CONFIG_ONLY` is switched on in
    the environment but not in ``config``.
    """
    refuse_env_only(config)
    for key, default in DEFAULTS.items():
        if key in config:
            continue
        config[key] = _from_env(key) if _env_counts(key) else default


def read(config: Mapping[str, Any], key: str) -> Any:
    """A key's value: app config, else environment, else default (for keys set later)."""
    if key in config:
        return config[key]
    if _env_counts(key):
        return _from_env(key)
    return DEFAULTS.get(key)


def _env_counts(key: str) -> bool:
    return key in os.environ and key not in APP_CONFIG_ONLY


def refuse_env_only(config: Mapping[str, Any]) -> None:
    """:class:`ConfigError` for an :data:`APP_CONFIG_ONLY` key set only in the environment.

    A false value there asks for the default and is ignored; anything else would switch
    a safety off for every app the environment reaches, so it stops the app instead of
    being ignored silently.
    """
    for key in sorted(APP_CONFIG_ONLY):
        if key in config or key not in os.environ:
            continue
        try:
            wanted = _flag(key, _from_env(key))
        except ConfigError:
            wanted = True
        if wanted:
            raise ConfigError(
                f"{key} is set in the environment only; it is honoured only from the app's "
                f"own config (app.config[{key!r}] = True), so that an environment variable "
                "alone cannot switch authentication off for a whole deployment. Remove the "
                "variable, or set the key in the app's code for a demo."
            )


def _number(key: str, value: Any, *, minimum: float = 0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{key} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{key} must be >= {minimum}, got {number}")
    return number


def _timeout(value: Any) -> tuple[float, float]:
    key = "AMAZON_HTTP_TIMEOUT"
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ConfigError(f"{key} must be a number or a (connect, read) pair")
        connect, read_ = (_number(key, v) for v in value)
    else:
        connect = read_ = _number(key, value)
    if connect <= 0 or read_ <= 0:
        raise ConfigError(f"{key} must be positive")
    return connect, read_


def _items_per_call(value: Any) -> int:
    key = "AMAZON_MAX_ITEMS_PER_CALL"
    number = _number(key, value, minimum=1)
    if number != int(number) or number > 10:
        raise ConfigError(f"{key} must be a whole number from 1 to 10 (Amazon's ceiling)")
    return int(number)


def _whole(key: str, value: Any, *, minimum: int = 1) -> int:
    number = _number(key, value, minimum=minimum)
    if number != int(number):
        raise ConfigError(f"{key} must be a whole number, got {value!r}")
    return int(number)


def _optional_whole(key: str, value: Any) -> int | None:
    return None if value is None or value == "" else _whole(key, value)


def _optional_text(key: str, value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {type(value).__name__}")
    return value.strip()


def _front_cache_ttl(value: Any) -> float:
    key = "AMAZON_FRONT_CACHE_TTL_SECONDS"
    number = _number(key, value)
    if number > MAX_FRONT_CACHE_TTL_SECONDS:
        raise ConfigError(
            f"{key} must not exceed {MAX_FRONT_CACHE_TTL_SECONDS:g}: it bounds how stale a "
            "cached import may be (docs/performance.md)"
        )
    return number


def _flag(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.strip().lower() in {"", "0", "false", "no", "off"}:
        return False
    if isinstance(value, int):
        return bool(value)
    raise ConfigError(f"{key} must be a boolean, got {value!r}")


@dataclass(frozen=True)
class Settings:
    """The validated, typed view of the ``AMAZON_*`` keys used at run time."""

    credentials_backend: str
    credentials_ttl_seconds: float
    marketplace: str  # the primary store: the default for CLI commands and old callers
    creators_api_host: str
    token_url: str | None
    rate_limits: str
    rate_margin_seconds: float
    rate_limit_storage_uri: str
    max_wait_seconds: float
    cache_ttl_seconds: float
    cache_storage_uri: str
    cache_max_entries: int
    negative_cache_ttl_seconds: float
    front_cache_ttl_seconds: float
    front_cache_max_entries: int
    http_timeout: tuple[float, float]
    auth_disabled: bool
    url_prefix: str
    batch_max_urls: int
    upstream_event_interval_seconds: float
    max_items_per_call: int
    short_links: str
    short_link_timeout_seconds: float
    short_link_cache_ttl_seconds: float
    short_link_rate_limit: str
    short_link_base_url: str | None
    max_waiting: int | None  # None: derived from the server's threads (waiting.py)
    principal_limits: str | None  # None: no per-user budget
    max_body_bytes: int
    #: Every served store, primary first (AMAZON_MARKETPLACES; docs/configuration.md).
    marketplaces: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.marketplaces:  # built by hand (tests): the one store
            object.__setattr__(self, "marketplaces", (self.marketplace,))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Validate ``config`` (defaults already applied) and raise :class:`ConfigError`."""

        def get(key: str) -> Any:
            return read(config, key)

        def text(key: str) -> str:
            value = get(key)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{key} must be a non-empty string")
            return value.strip()

        cache_ttl = _number("AMAZON_CACHE_TTL_SECONDS", get("AMAZON_CACHE_TTL_SECONDS"))
        if cache_ttl > MAX_CACHE_TTL_SECONDS:
            raise ConfigError(
                f"AMAZON_CACHE_TTL_SECONDS must not exceed {MAX_CACHE_TTL_SECONDS} "
                "(Amazon's terms limit how long product data may be kept)"
            )
        token_url = get("AMAZON_TOKEN_URL")
        marketplace, marketplaces = _marketplaces(
            text("AMAZON_MARKETPLACE").lower(), get("AMAZON_MARKETPLACES")
        )
        return cls(
            credentials_backend=text("AMAZON_CREDENTIALS_BACKEND"),
            credentials_ttl_seconds=_number(
                "AMAZON_CREDENTIALS_TTL_SECONDS", get("AMAZON_CREDENTIALS_TTL_SECONDS")
            ),
            marketplace=marketplace,
            marketplaces=marketplaces,
            creators_api_host=text("AMAZON_CREATORS_API_HOST").rstrip("/"),
            token_url=text("AMAZON_TOKEN_URL") if token_url else None,
            rate_limits=text("AMAZON_RATE_LIMITS"),
            rate_margin_seconds=_number(
                "AMAZON_RATE_MARGIN_SECONDS", get("AMAZON_RATE_MARGIN_SECONDS")
            ),
            rate_limit_storage_uri=text("AMAZON_RATE_LIMIT_STORAGE_URI"),
            max_wait_seconds=_number("AMAZON_MAX_WAIT_SECONDS", get("AMAZON_MAX_WAIT_SECONDS")),
            cache_ttl_seconds=cache_ttl,
            cache_storage_uri=text("AMAZON_CACHE_STORAGE_URI"),
            cache_max_entries=int(
                _number("AMAZON_CACHE_MAX_ENTRIES", get("AMAZON_CACHE_MAX_ENTRIES"), minimum=1)
            ),
            negative_cache_ttl_seconds=_number(
                "AMAZON_NEGATIVE_CACHE_TTL_SECONDS", get("AMAZON_NEGATIVE_CACHE_TTL_SECONDS")
            ),
            front_cache_ttl_seconds=_front_cache_ttl(get("AMAZON_FRONT_CACHE_TTL_SECONDS")),
            front_cache_max_entries=int(
                _number(
                    "AMAZON_FRONT_CACHE_MAX_ENTRIES",
                    get("AMAZON_FRONT_CACHE_MAX_ENTRIES"),
                    minimum=1,
                )
            ),
            http_timeout=_timeout(get("AMAZON_HTTP_TIMEOUT")),
            auth_disabled=_flag("AMAZON_IMPORT_AUTH_DISABLED", get("AMAZON_IMPORT_AUTH_DISABLED")),
            url_prefix="/" + text("AMAZON_IMPORT_URL_PREFIX").strip("/"),
            batch_max_urls=int(
                _number("AMAZON_BATCH_MAX_URLS", get("AMAZON_BATCH_MAX_URLS"), minimum=1)
            ),
            upstream_event_interval_seconds=_number(
                "AMAZON_UPSTREAM_EVENT_INTERVAL_SECONDS",
                get("AMAZON_UPSTREAM_EVENT_INTERVAL_SECONDS"),
            ),
            max_items_per_call=_items_per_call(get("AMAZON_MAX_ITEMS_PER_CALL")),
            max_waiting=_optional_whole("AMAZON_MAX_WAITING", get("AMAZON_MAX_WAITING")),
            principal_limits=_optional_text(
                "AMAZON_PRINCIPAL_LIMITS", get("AMAZON_PRINCIPAL_LIMITS")
            ),
            max_body_bytes=_whole("AMAZON_MAX_BODY_BYTES", get("AMAZON_MAX_BODY_BYTES")),
            **_short_link_settings(get),
        )


def _marketplaces(single: str, value: Any) -> tuple[str, tuple[str, ...]]:
    """The primary store and every served store (``AMAZON_MARKETPLACES``).

    Unset or empty: ``AMAZON_MARKETPLACE`` alone, as before. Set: a comma-separated string
    (or a list) of canonical hosts from the marketplace table, each once; the primary
    store is ``AMAZON_MARKETPLACE`` when listed, else the first one listed.
    """
    key = "AMAZON_MARKETPLACES"
    if value is None or (isinstance(value, str) and not value.strip()):
        return single, (single,)
    if isinstance(value, str):
        hosts = [part.strip().lower() for part in value.split(",")]
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        hosts = [part.strip().lower() for part in value]
    else:
        raise ConfigError(f"{key} must be a comma-separated string of store hosts")
    from .marketplaces import MARKETPLACES

    unknown = [host for host in hosts if host not in MARKETPLACES]
    if unknown or not hosts:
        raise ConfigError(
            f"{key}: {', '.join(repr(h) for h in unknown) or 'no store'} is not a canonical "
            f"store host; use hosts such as www.amazon.com, www.amazon.co.uk"
        )
    if len(set(hosts)) != len(hosts):
        raise ConfigError(f"{key} lists a store twice")
    primary = single if single in hosts else hosts[0]
    return primary, (primary, *[h for h in hosts if h != primary])


def _short_link_settings(get: Any) -> dict[str, Any]:
    """The ``AMAZON_SHORT_LINK*`` keys (docs/configuration.md), validated."""
    mode = get("AMAZON_SHORT_LINKS")
    if not isinstance(mode, str) or mode.strip().lower() not in SHORT_LINK_MODES:
        raise ConfigError(f"AMAZON_SHORT_LINKS must be one of {', '.join(SHORT_LINK_MODES)}")
    timeout = _number("AMAZON_SHORT_LINK_TIMEOUT_SECONDS", get("AMAZON_SHORT_LINK_TIMEOUT_SECONDS"))
    if timeout <= 0:
        raise ConfigError("AMAZON_SHORT_LINK_TIMEOUT_SECONDS must be positive")
    rate_limit = get("AMAZON_SHORT_LINK_RATE_LIMIT")
    try:
        from limits import parse_many

        if not isinstance(rate_limit, str) or not parse_many(rate_limit):
            raise ValueError("no limit given")
    except ValueError as exc:
        raise ConfigError(f"AMAZON_SHORT_LINK_RATE_LIMIT: {exc}") from None
    base_url = get("AMAZON_SHORT_LINK_BASE_URL")
    if base_url is not None:
        from .transport import origin_of

        try:
            if not isinstance(base_url, str):
                raise ValueError(f"got {type(base_url).__name__}")
            origin_of(base_url.strip())
        except ValueError as exc:
            raise ConfigError(f"AMAZON_SHORT_LINK_BASE_URL must be an http(s) URL: {exc}") from None
    return {
        "short_links": mode.strip().lower(),
        "short_link_timeout_seconds": timeout,
        "short_link_cache_ttl_seconds": _number(
            "AMAZON_SHORT_LINK_CACHE_TTL_SECONDS", get("AMAZON_SHORT_LINK_CACHE_TTL_SECONDS")
        ),
        "short_link_rate_limit": rate_limit.strip(),
        "short_link_base_url": base_url.strip().rstrip("/") if base_url else None,
    }
