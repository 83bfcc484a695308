"""The ``env`` backend: the four ``AMAZON_CREATORS_*`` variables, re-read at every load,
``op://`` secret references among them read with the fake ``op`` in each emulated version."""

# Fixtures are imported by name, then requested by name as arguments:
# ruff: noqa: F811

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from arda_amazon_bp.backends.env import VARIABLES, EnvBackend
from fixtures_app import USER_TOKEN, AmazonMock, post_import
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_SECRET,
    OP_LABELS,
    OP_VERSIONS,
    ROTATED_SECRET,
    FakeOp,
    assert_no_secret,
    env_credentials,  # noqa: F401 - a fixture
)
from fixtures_credentials import fake_op as plain_fake_op  # noqa: F401 - a fixture
from flask import Flask

from arda_amazon_bp.credentials import (
    CredentialProvider,
    Credentials,
    CredentialsError,
    backend_from_plugins,
)
from arda_amazon_bp.plugins import make_plugin_manager

pytestmark = pytest.mark.usefixtures("env_credentials")

SECRET_VARIABLE = "AMAZON_CREATORS_CREDENTIAL_SECRET"


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


# --- 1Password secret references (op://…) --------------------------------------------------

REFERENCES: dict[str, str] = {
    var: f"op://Arda-DevOAM/Amazon Creators API/{OP_LABELS[name]}"
    for name, var in VARIABLES.items()
}


@pytest.fixture(params=list(OP_VERSIONS.values()), ids=list(OP_VERSIONS))
def fake_op(plain_fake_op: FakeOp, request: pytest.FixtureRequest) -> FakeOp:
    plain_fake_op.use_version(request.param)
    return plain_fake_op


def test_every_variable_may_be_a_secret_reference(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable, reference in REFERENCES.items():
        monkeypatch.setenv(variable, reference)
    assert EnvBackend().load() == Credentials(**KNOWN_FIELDS)
    reads = [argv for argv in fake_op.runs if argv[0] == "read"]
    assert sorted(reads) == sorted(["read", ref] for ref in REFERENCES.values())


def test_references_and_values_mix(fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, REFERENCES[SECRET_VARIABLE])
    assert EnvBackend().load().credential_secret == KNOWN_SECRET
    assert [argv for argv in fake_op.runs if argv[0] == "read"] == [
        ["read", REFERENCES[SECRET_VARIABLE]]
    ]


def test_a_reference_is_never_used_as_the_value(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variable resolves to a rotated secret: what 1Password holds now wins.
    fake_op.set_field("credential-secret", ROTATED_SECRET)
    monkeypatch.setenv(SECRET_VARIABLE, REFERENCES[SECRET_VARIABLE])
    assert EnvBackend().load().credential_secret == ROTATED_SECRET


def test_a_dangling_reference_names_the_variable_not_the_value(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    dangling = "op://Arda-DevOAM/Amazon Creators API/credential-secret-old"
    monkeypatch.setenv(SECRET_VARIABLE, dangling)
    with pytest.raises(CredentialsError) as info:
        EnvBackend().load()
    message = str(info.value)
    assert message.startswith(f"{SECRET_VARIABLE} holds a 1Password secret reference")
    assert "has no such field" in message
    assert dangling not in message
    assert info.value.missing == ("credential_secret",)
    assert_no_secret(info.value)


def test_a_dangling_reference_answers_502_and_logs_the_variable(
    fake_op: FakeOp,
    monkeypatch: pytest.MonkeyPatch,
    make_app: Callable[..., Flask],
    amazon: AmazonMock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dangling = "op://Arda-DevOAM/Amazon Creators API Old/credential-secret"
    monkeypatch.setenv(SECRET_VARIABLE, dangling)
    client = make_app().test_client()
    with caplog.at_level(logging.DEBUG):
        answer = post_import(
            client,
            {"url": "https://www.amazon.com/dp/B0C7NTRL01"},
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
        )
    assert answer.status_code == 502
    error = answer.get_json()["error"]
    assert error["code"] == "AMAZON_UPSTREAM_UNAVAILABLE"
    assert error["details"]["reason"] == "credentials_unavailable"
    assert amazon.get_items_requests() == 0
    logged = [r.getMessage() for r in caplog.records if SECRET_VARIABLE in r.getMessage()]
    assert logged, caplog.text
    assert all("its item does not exist" in line for line in logged)
    for text in (caplog.text, answer.get_data(as_text=True)):
        assert dangling not in text
        assert_no_secret(text)


def test_a_stores_own_variables_win_field_by_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAZON_CREATORS_GB_PARTNER_TAG", "mystoreuk-21")
    monkeypatch.setenv("AMAZON_CREATORS_GB_VERSION", "3.2")

    uk = EnvBackend(marketplace="www.amazon.co.uk").load()
    us = EnvBackend(marketplace="www.amazon.com").load()

    assert (uk.partner_tag, uk.version) == ("mystoreuk-21", "3.2")
    assert uk.credential_id == KNOWN_FIELDS["credential_id"]  # the unsuffixed one serves
    assert us == Credentials(**KNOWN_FIELDS)  # no AMAZON_CREATORS_US_*: the default set


def test_the_hook_builds_a_backend_for_the_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMAZON_CREATORS_DE_PARTNER_TAG", "mystorede-21")
    backend = backend_from_plugins(make_plugin_manager(), "env", {}, "www.amazon.de")

    assert backend.load().partner_tag == "mystorede-21"


def test_a_missing_field_names_both_variables_a_store_may_use(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AMAZON_CREATORS_PARTNER_TAG")
    with pytest.raises(CredentialsError) as info:
        EnvBackend(marketplace="www.amazon.co.jp").load()
    assert "AMAZON_CREATORS_JP_PARTNER_TAG or AMAZON_CREATORS_PARTNER_TAG" in info.value.message
