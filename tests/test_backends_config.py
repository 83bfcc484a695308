"""The ``config`` backend: the four fields from the app config key ``AMAZON_CREDENTIALS``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from arda_amazon_bp.backends.config import ConfigBackend, from_config
from fixtures_credentials import KNOWN_FIELDS, KNOWN_SECRET, ROTATED_SECRET, assert_no_secret
from flask import Flask

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import Credentials, CredentialsError, backend_from_plugins
from arda_amazon_bp.plugins import make_plugin_manager


def test_loads_the_four_fields_from_the_app_config() -> None:
    backend = from_config({"AMAZON_CREDENTIALS": dict(KNOWN_FIELDS)})
    assert backend.load() == Credentials(**KNOWN_FIELDS)


def test_is_a_built_in_selected_by_name_through_the_plugin_manager() -> None:
    backend = backend_from_plugins(
        make_plugin_manager(), "config", {"AMAZON_CREDENTIALS": dict(KNOWN_FIELDS)}
    )
    assert isinstance(backend, ConfigBackend)
    assert backend.load().credential_secret == KNOWN_SECRET


def test_the_environment_variable_of_the_same_name_is_read_as_json(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMAZON_CREDENTIALS", json.dumps(KNOWN_FIELDS))
    assert from_config({}).load() == Credentials(**KNOWN_FIELDS)


def test_a_changed_mapping_is_picked_up_at_the_next_load() -> None:
    fields = dict(KNOWN_FIELDS)
    backend = from_config({"AMAZON_CREDENTIALS": fields})
    fields["credential_secret"] = ROTATED_SECRET
    assert backend.load().credential_secret == ROTATED_SECRET


def test_unset_is_a_config_error_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMAZON_CREDENTIALS", raising=False)
    with pytest.raises(ConfigError, match="AMAZON_CREDENTIALS must be set"):
        from_config({})


@pytest.mark.parametrize("value", [KNOWN_SECRET, [KNOWN_SECRET], 3])
def test_a_non_mapping_is_refused_by_type_without_quoting_it(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        from_config({"AMAZON_CREDENTIALS": value})
    assert f"got {type(value).__name__}" in str(info.value)
    assert_no_secret(info.value)


@pytest.mark.parametrize("field", sorted(KNOWN_FIELDS))
def test_a_missing_field_is_named_without_any_value(field: str) -> None:
    fields = {k: v for k, v in KNOWN_FIELDS.items() if k != field}
    with pytest.raises(CredentialsError) as info:
        from_config({"AMAZON_CREDENTIALS": fields}).load()
    assert field in str(info.value)
    assert "AMAZON_CREDENTIALS" in str(info.value)
    assert info.value.missing == (field,)
    assert_no_secret(info.value)


def test_repr_shows_no_field() -> None:
    backend = from_config({"AMAZON_CREDENTIALS": dict(KNOWN_FIELDS)})
    assert repr(backend) == "ConfigBackend()"
    assert_no_secret(backend, backend.load())


def test_an_app_configured_this_way_needs_no_credential_variables(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ID", "SECRET"):
        monkeypatch.delenv(f"AMAZON_CREATORS_CREDENTIAL_{name}")
    app = make_app(AMAZON_CREDENTIALS_BACKEND="config", AMAZON_CREDENTIALS=dict(KNOWN_FIELDS))
    provider = app.extensions["arda_amazon_bp"].credentials
    assert provider.get() == Credentials(**KNOWN_FIELDS)
