"""The ``env`` backend: the four ``AMAZON_CREATORS_*`` variables, re-read at every load."""

from __future__ import annotations

import logging

import pytest
from arda_amazon_bp.backends.env import VARIABLES, EnvBackend
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_SECRET,
    ROTATED_SECRET,
    assert_no_secret,
    env_credentials,  # noqa: F401 - a fixture
)

from arda_amazon_bp.credentials import (
    CredentialProvider,
    Credentials,
    CredentialsError,
    backend_from_plugins,
)
from arda_amazon_bp.plugins import make_plugin_manager

pytestmark = pytest.mark.usefixtures("env_credentials")


def test_loads_the_four_variables() -> None:
    assert EnvBackend().load() == Credentials(**KNOWN_FIELDS)


def test_is_selected_by_name_through_the_plugin_manager() -> None:
    backend = backend_from_plugins(make_plugin_manager(), "env", {})
    assert isinstance(backend, EnvBackend)
    assert backend.load().credential_secret == KNOWN_SECRET


@pytest.mark.parametrize(("field", "variable"), sorted(VARIABLES.items()))
@pytest.mark.parametrize("unset", [True, False])
def test_a_missing_or_blank_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, field: str, variable: str, unset: bool
) -> None:
    if unset:
        monkeypatch.delenv(variable)
    else:
        monkeypatch.setenv(variable, "  ")
    with pytest.raises(CredentialsError) as info:
        EnvBackend().load()
    assert str(info.value) == f"environment variable(s) not set: {variable}"
    assert info.value.missing == (field,)
    assert_no_secret(info.value)


def test_every_missing_variable_is_named_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES.values():
        monkeypatch.delenv(variable)
    with pytest.raises(CredentialsError) as info:
        EnvBackend().load()
    for variable in VARIABLES.values():
        assert variable in str(info.value)


def test_malformed_values_are_refused_naming_the_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAZON_CREATORS_VERSION", "4.0")
    with pytest.raises(CredentialsError, match="environment variables AMAZON_CREATORS_") as info:
        EnvBackend().load()
    assert_no_secret(info.value)


def test_an_explicit_mapping_replaces_the_process_environment() -> None:
    environ = {var: KNOWN_FIELDS[name] for name, var in VARIABLES.items()}
    environ["AMAZON_CREATORS_PARTNER_TAG"] = "other-21"
    assert EnvBackend(environ).load().partner_tag == "other-21"


def test_a_changed_environment_rotates_after_the_ttl_or_a_reload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [0.0]
    provider = CredentialProvider(EnvBackend(), ttl_seconds=60, clock=lambda: now[0])
    stale = provider.get()
    monkeypatch.setenv("AMAZON_CREATORS_CREDENTIAL_SECRET", ROTATED_SECRET)
    assert provider.get().credential_secret == KNOWN_SECRET
    now[0] = 60
    assert provider.get().credential_secret == ROTATED_SECRET
    monkeypatch.setenv("AMAZON_CREATORS_CREDENTIAL_SECRET", KNOWN_SECRET)
    # Amazon refused the rotated set: re-read at once, before the TTL.
    assert provider.reload(provider.get()).credential_secret == KNOWN_SECRET
    assert stale == provider.get()


def test_failures_log_no_secret(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AMAZON_CREATORS_PARTNER_TAG", "not a tag")
    provider = CredentialProvider(EnvBackend(), ttl_seconds=60)
    with caplog.at_level(logging.DEBUG), pytest.raises(CredentialsError) as info:
        provider.get()
    assert "partner tag" in caplog.text
    assert_no_secret(caplog.text, info.value, provider, EnvBackend())
