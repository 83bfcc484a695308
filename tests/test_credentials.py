"""Credentials: validation, safe repr, the caching single-flight provider, backend lookup."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import pluggy
import pytest
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_ID,
    KNOWN_SECRET,
    ROTATED_SECRET,
    assert_no_secret,
)

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import (
    FIELDS,
    CredentialProvider,
    Credentials,
    CredentialsError,
    RegionMismatchError,
    StoreBackend,
    available_backends,
    backend_from_plugins,
    mask,
    store_fields,
    validate,
)
from arda_amazon_bp.hookspecs import hookimpl
from arda_amazon_bp.plugins import make_plugin_manager

ROTATED_FIELDS = {**KNOWN_FIELDS, "credential_secret": ROTATED_SECRET}


# --- validate -------------------------------------------------------------------------


def test_validate_builds_credentials_and_strips() -> None:
    creds = validate({k: f"  {v}\n" for k, v in KNOWN_FIELDS.items()}, "test")
    assert creds == Credentials(**KNOWN_FIELDS)
    assert creds.family == "lwa"


@pytest.mark.parametrize("version", ["2.1", "2.2", "2.3", "3.1", "3.2", "3.3"])
def test_validate_accepts_every_issued_version(version: str) -> None:
    assert validate({**KNOWN_FIELDS, "version": version}, "test").version == version


def test_validate_accepts_a_numeric_version_from_json() -> None:
    assert validate({**KNOWN_FIELDS, "version": 2.2}, "test").family == "cognito"


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [None, "", "   ", True, ["x"]])
def test_validate_names_a_missing_or_empty_field(field: str, value: object) -> None:
    with pytest.raises(CredentialsError) as info:
        validate({**KNOWN_FIELDS, field: value}, "the test source")
    assert field in str(info.value)
    assert "the test source" in str(info.value)
    assert info.value.missing == (field,)
    assert_no_secret(info.value)


@pytest.mark.parametrize("version", ["1.0", "2.4", "3", "v3.1", "2.10"])
def test_validate_refuses_unknown_versions(version: str) -> None:
    expected = re.escape("not one of 2.1, 2.2, 2.3, 3.1, 3.2, 3.3")
    with pytest.raises(CredentialsError, match=expected) as info:
        validate({**KNOWN_FIELDS, "version": version}, "test")
    assert info.value.missing == ()  # all four were read; one is malformed


@pytest.mark.parametrize(
    "tag", ["ardatest", "ardatest-", "-20", "arda test-20", "ardatest-2O", "a/b-20"]
)
def test_validate_refuses_tags_not_shaped_like_associates_ids(tag: str) -> None:
    with pytest.raises(CredentialsError, match="Associates tracking id"):
        validate({**KNOWN_FIELDS, "partner_tag": tag}, "test")


@pytest.mark.parametrize("tag", ["ardatest-20", "my.store_01-21", "x-22"])
def test_validate_accepts_associates_tags(tag: str) -> None:
    assert validate({**KNOWN_FIELDS, "partner_tag": tag}, "test").partner_tag == tag


@pytest.mark.parametrize("field", ["credential_id", "credential_secret"])
@pytest.mark.parametrize("bad", ["in side", "line\nbreak", "tab\there", "nul\x00"])
def test_validate_refuses_broken_ids_and_secrets_without_quoting_them(field: str, bad: str) -> None:
    value = KNOWN_SECRET[:10] + bad + KNOWN_SECRET[10:]
    with pytest.raises(CredentialsError, match=f"{field} .* whitespace or control") as info:
        validate({**KNOWN_FIELDS, field: value}, "test")
    assert KNOWN_SECRET[:10] not in str(info.value)


# --- Credentials ----------------------------------------------------------------------


def test_repr_and_str_show_at_most_the_ids_last_four_characters() -> None:
    creds = Credentials(**KNOWN_FIELDS)
    for text in (repr(creds), str(creds), f"{creds}", repr([creds]), repr({"c": creds})):
        assert "…ID42" in text
        assert_no_secret(text)


def test_mask_hides_short_ids_entirely() -> None:
    assert mask("abcdefgh") == "…"
    assert mask("abcdefghi") == "…fghi"


def test_quota_key_ignores_the_secret_and_fingerprint_does_not() -> None:
    old, new = Credentials(**KNOWN_FIELDS), Credentials(**ROTATED_FIELDS)
    assert old.quota_key == new.quota_key
    assert old.fingerprint != new.fingerprint
    other_version = Credentials(**{**KNOWN_FIELDS, "version": "3.2"})
    assert other_version.quota_key != old.quota_key
    for text in (old.quota_key, old.fingerprint):
        assert KNOWN_SECRET not in text
        assert KNOWN_ID not in text


# --- CredentialProvider ---------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedBackend:
    """Returns ``fields`` (changeable) or raises ``error``; counts and can slow loads."""

    def __init__(self, fields: Mapping[str, str] = KNOWN_FIELDS, delay: float = 0.0) -> None:
        self.fields = dict(fields)
        self.error: BaseException | None = None
        self.delay = delay
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def load(self) -> Credentials:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.error is not None:
                raise self.error
            return validate(self.fields, "scripted")
        finally:
            with self._lock:
                self.active -= 1


def test_get_caches_until_the_ttl_then_rereads() -> None:
    clock, backend = Clock(), ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=900, clock=clock)
    assert provider.get().credential_secret == KNOWN_SECRET
    backend.fields = ROTATED_FIELDS
    clock.advance(899)
    assert provider.get().credential_secret == KNOWN_SECRET
    assert backend.calls == 1
    clock.advance(1)
    assert provider.get().credential_secret == ROTATED_SECRET
    assert backend.calls == 2
    assert provider.loads == 2


def test_reload_of_the_refused_set_rereads_at_once() -> None:
    clock, backend = Clock(), ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=900, clock=clock)
    stale = provider.get()
    backend.fields = ROTATED_FIELDS
    assert provider.reload(stale).credential_secret == ROTATED_SECRET
    assert provider.get().credential_secret == ROTATED_SECRET
    assert backend.calls == 2


def test_reload_returns_a_newer_set_without_reading_again() -> None:
    clock, backend = Clock(), ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=900, clock=clock)
    stale = provider.get()
    backend.fields = ROTATED_FIELDS
    fresh = provider.reload(stale)
    # A second request that used the old set learns of the new one for free.
    assert provider.reload(stale) is fresh
    assert backend.calls == 2


def test_reload_finding_the_same_set_is_shared_for_the_cooldown() -> None:
    clock, backend = Clock(), ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=900, clock=clock, cooldown_seconds=5)
    stale = provider.get()
    assert provider.reload(stale) == stale  # the backend still holds the refused set
    assert provider.reload(stale) == stale
    assert backend.calls == 2  # late callers did not run the backend once each
    clock.advance(5)
    provider.reload(stale)
    assert backend.calls == 3


def test_reload_without_a_stale_set_always_reads() -> None:
    backend = ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=900, clock=Clock())
    provider.get()
    provider.reload()
    provider.reload()
    assert backend.calls == 3


def _in_threads(count: int, target: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = target()
        except Exception as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_twenty_threads_on_a_cold_cache_share_one_load() -> None:
    backend = ScriptedBackend(delay=0.3)
    provider = CredentialProvider(backend, ttl_seconds=900)
    results = _in_threads(20, provider.get)
    assert backend.calls == 1
    assert all(r == Credentials(**KNOWN_FIELDS) for r in results)


def test_twenty_threads_reloading_one_refused_set_share_one_load() -> None:
    backend = ScriptedBackend(delay=0.3)
    provider = CredentialProvider(backend, ttl_seconds=900)
    stale = provider.get()
    backend.fields = ROTATED_FIELDS
    results = _in_threads(20, lambda: provider.reload(stale))
    assert backend.calls == 2
    assert backend.max_active == 1
    assert {r.credential_secret for r in results} == {ROTATED_SECRET}


def test_a_failed_load_is_shared_and_remembered_for_the_cooldown() -> None:
    clock, backend = Clock(), ScriptedBackend(delay=0.3)
    backend.error = CredentialsError("vault 'x' is not accessible")
    provider = CredentialProvider(backend, ttl_seconds=900, clock=clock, cooldown_seconds=5)
    results = _in_threads(20, provider.get)
    assert backend.calls == 1  # not 20 serial runs of op
    assert all(isinstance(r, CredentialsError) for r in results)
    assert {str(r) for r in results} == {"vault 'x' is not accessible"}
    backend.delay = 0
    clock.advance(4.9)
    with pytest.raises(CredentialsError, match="not accessible"):
        provider.get()
    with pytest.raises(CredentialsError, match="not accessible"):
        provider.reload(Credentials(**KNOWN_FIELDS))
    assert backend.calls == 1
    clock.advance(0.1)
    backend.error = None
    assert provider.get().credential_secret == KNOWN_SECRET
    assert backend.calls == 2


def test_a_failed_refresh_keeps_serving_the_previous_set(caplog: pytest.LogCaptureFixture) -> None:
    clock, backend = Clock(), ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=60, clock=clock, cooldown_seconds=5)
    old = provider.get()
    clock.advance(61)
    backend.error = CredentialsError("1Password is unreachable")
    with caplog.at_level(logging.WARNING, logger="arda_amazon_bp.credentials"):
        assert provider.get() is old
    assert "serving the previous set" in caplog.text
    assert provider.get() is old
    assert backend.calls == 2  # the failure is remembered: no run per request
    # But a set Amazon refused is not handed out again.
    with pytest.raises(CredentialsError, match="unreachable"):
        provider.reload(old)
    clock.advance(5)
    backend.error = None
    backend.fields = ROTATED_FIELDS
    assert provider.get().credential_secret == ROTATED_SECRET


def test_other_callers_keep_the_expiring_set_while_a_refresh_runs() -> None:
    clock, backend = Clock(), ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=60, clock=clock)
    old = provider.get()
    clock.advance(61)
    backend.fields, backend.delay = ROTATED_FIELDS, 0.5
    refresher = threading.Thread(target=provider.get)
    refresher.start()
    while backend.active == 0:
        time.sleep(0.005)
    started = time.monotonic()
    assert provider.get() is old
    assert time.monotonic() - started < 0.2
    refresher.join()
    assert provider.get().credential_secret == ROTATED_SECRET
    assert backend.calls == 2


def test_an_error_without_field_information_says_unknown() -> None:
    assert CredentialsError("op is not installed").missing is None
    assert CredentialsError("x", missing=["version"]).missing == ("version",)


def test_an_unexpected_backend_exception_becomes_a_safe_credentials_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    backend = ScriptedBackend()
    backend.error = ValueError(f"could not parse {KNOWN_SECRET}")
    provider = CredentialProvider(backend, ttl_seconds=60)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsError) as info:
        provider.get()
    assert "ValueError" in str(info.value)
    assert "ScriptedBackend" in caplog.text
    assert_no_secret(info.value, caplog.text)
    backend.error = None
    provider.reload()  # the flight was released


def test_provider_repr_is_safe() -> None:
    provider = CredentialProvider(ScriptedBackend(), ttl_seconds=60)
    provider.get()
    assert "…ID42" in repr(provider)
    assert_no_secret(repr(provider))


def test_rotation_is_logged_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    backend = ScriptedBackend()
    provider = CredentialProvider(backend, ttl_seconds=60)
    stale = provider.get()
    backend.fields = ROTATED_FIELDS
    with caplog.at_level(logging.INFO, logger="arda_amazon_bp.credentials"):
        provider.reload(stale)
    assert "rotated" in caplog.text
    assert_no_secret(caplog.text)


# --- backend_from_plugins -------------------------------------------------------------


class _Backend:
    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def load(self) -> Credentials:
        return Credentials(**KNOWN_FIELDS)


class _VaultPlugin:
    @hookimpl
    def arda_amazon_credential_backends(self) -> dict[str, Any]:
        return {"vault": _Backend}


def test_builtins_are_offered_by_their_modules() -> None:
    offered = available_backends(make_plugin_manager())
    assert {name: plugin for name, (_, plugin) in offered.items()} == {
        "config": "arda_amazon_bp.backends.config",
        "env": "arda_amazon_bp.backends.env",
        "file": "arda_amazon_bp.backends.file",
        "onepassword": "arda_amazon_bp.backends.onepassword",
    }


def test_backend_from_plugins_builds_the_named_backend_with_the_config() -> None:
    pm = make_plugin_manager()
    pm.register(_VaultPlugin(), name="vault-plugin")
    config = {"VAULT_ADDR": "http://127.0.0.1:8200"}
    backend = backend_from_plugins(pm, "vault", config)
    assert isinstance(backend, _Backend)
    assert backend.config is config


def test_an_unknown_backend_lists_the_available_names() -> None:
    with pytest.raises(ConfigError) as info:
        backend_from_plugins(make_plugin_manager(), "onepasword", {})
    message = str(info.value)
    assert "AMAZON_CREDENTIALS_BACKEND='onepasword'" in message
    assert "available: config, env, file, onepassword" in message


def test_two_plugins_offering_one_name_are_both_named() -> None:
    class Shadow:
        @hookimpl
        def arda_amazon_credential_backends(self) -> dict[str, Any]:
            return {"env": _Backend}

    pm = make_plugin_manager()
    pm.register(Shadow(), name="shadow-env")
    with pytest.raises(ConfigError) as info:
        backend_from_plugins(pm, "file", {})
    assert "'arda_amazon_bp.backends.env'" in str(info.value)
    assert "'shadow-env'" in str(info.value)


@pytest.mark.parametrize(
    ("offered", "message"),
    [
        (["env"], "must return a mapping"),
        ({"odd": "not callable"}, "is not callable"),
        ({"odd": lambda config: object()}, "has no load"),
    ],
)
def test_malformed_plugins_are_config_errors(offered: Any, message: str) -> None:
    class Odd:
        @hookimpl
        def arda_amazon_credential_backends(self) -> Any:
            return offered

    pm = pluggy.PluginManager("arda_amazon_bp")
    from arda_amazon_bp import hookspecs

    pm.add_hookspecs(hookspecs)
    pm.register(Odd(), name="odd")
    with pytest.raises(ConfigError, match=message):
        backend_from_plugins(pm, "odd", {})


def test_no_backends_at_all_says_none() -> None:
    from arda_amazon_bp import hookspecs

    pm = pluggy.PluginManager("arda_amazon_bp")
    pm.add_hookspecs(hookspecs)
    with pytest.raises(ConfigError, match="available: none"):
        backend_from_plugins(pm, "env", {})


def test_known_id_constant_is_longer_than_the_mask() -> None:
    # Guards the hygiene helper: it greps for the full id, so the id must not be short.
    assert len(KNOWN_ID) > 8


class _StorePlugin:
    """A plugin written for several stores: it is told the store each backend is for."""

    def __init__(self) -> None:
        self.asked: list[str | None] = []

    @hookimpl
    def arda_amazon_credential_backends(self, marketplace: str | None) -> dict[str, Any]:
        self.asked.append(marketplace)
        return {"vault": lambda config: _StoreBackend(marketplace)}


class _StoreBackend:
    def __init__(self, marketplace: str | None) -> None:
        self.marketplace = marketplace

    def load(self) -> Credentials:
        return Credentials(**KNOWN_FIELDS)


def test_an_implementation_taking_marketplace_is_told_the_store() -> None:
    pm = make_plugin_manager()
    plugin = _StorePlugin()
    pm.register(plugin, name="store-plugin")

    backend = backend_from_plugins(pm, "vault", {}, "www.amazon.co.uk")

    assert isinstance(backend, _StoreBackend)
    assert backend.marketplace == "www.amazon.co.uk"
    assert plugin.asked == ["www.amazon.co.uk"]


def test_an_implementation_without_marketplace_still_serves_every_store() -> None:
    # pluggy lets an implementation name fewer arguments than its spec (migration note,
    # docs/plugins.md): a plugin written before stores existed keeps working.
    pm = make_plugin_manager()
    pm.register(_VaultPlugin(), name="vault-plugin")

    backend = backend_from_plugins(pm, "vault", {}, "www.amazon.co.uk")

    assert isinstance(backend, _Backend)


@pytest.mark.parametrize(
    ("version", "store", "refused"),
    [
        ("3.1", "www.amazon.co.uk", True),
        ("2.2", "www.amazon.com", True),
        ("3.3", "www.amazon.de", True),
        ("3.2", "www.amazon.in", False),
        ("2.1", "www.amazon.ca", False),
        ("3.3", "www.amazon.com.au", False),
    ],
)
def test_a_store_backend_refuses_a_set_of_another_region(
    version: str, store: str, refused: bool
) -> None:
    backend = StoreBackend(_FixedBackend({**KNOWN_FIELDS, "version": version}), store)
    if refused:
        with pytest.raises(RegionMismatchError) as info:
            backend.load()
        assert store in info.value.message and f"version {version}" in info.value.message
    else:
        assert backend.load().version == version


class _FixedBackend:
    def __init__(self, fields: Mapping[str, Any]) -> None:
        self.fields = fields

    def load(self) -> Credentials:
        return Credentials(**self.fields)


def test_store_fields_take_a_store_entry_by_country_or_host_over_the_default() -> None:
    data = {**KNOWN_FIELDS, "stores": {"gb": {"partner_tag": "uk-21"}, "www.amazon.de": {}}}

    assert store_fields(data, "www.amazon.co.uk")["partner_tag"] == "uk-21"
    assert store_fields(data, "www.amazon.co.uk")["credential_id"] == KNOWN_FIELDS["credential_id"]
    assert store_fields(data, "www.amazon.de") == KNOWN_FIELDS
    assert store_fields(data, None) == KNOWN_FIELDS
