"""The ``onepassword`` backend, driven against a fake ``op`` on PATH (no subprocess mocks).

Every test runs against each op version the stand-in emulates (``OP_VERSIONS``): the
oldest supported (2.18, never conceals, has no ``--reveal``) and a current one (2.30+,
conceals unless ``--reveal``).
"""

# Fixtures are imported by name, then requested by name as arguments:
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from arda_amazon_bp.backends import onepassword, op_cli
from arda_amazon_bp.backends.onepassword import (
    LABELS,
    OnePasswordBackend,
    from_config,
    vault_from_config,
)
from fixtures_credentials import (
    FAKE_OP,
    KNOWN_FIELDS,
    KNOWN_OP_TOKEN,
    KNOWN_SECRET,
    OP_VERSIONS,
    REVOKED_OP_TOKEN,
    ROTATED_SECRET,
    FakeOp,
    assert_no_secret,
)
from fixtures_credentials import fake_op as plain_fake_op  # noqa: F401 - a fixture

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import (
    CredentialProvider,
    Credentials,
    CredentialsError,
    backend_from_plugins,
)
from arda_amazon_bp.plugins import make_plugin_manager

ITEM_GET = ["item", "get", "Amazon Creators API", "--vault", "Arda-DevOAM", "--format", "json"]
PLACEHOLDER = "[use 'op item get pk3iq2c7gkbspnyuqqvwmyhdla --reveal' to reveal]"


@pytest.fixture(params=list(OP_VERSIONS.values()), ids=list(OP_VERSIONS))
def fake_op(plain_fake_op: FakeOp, request: pytest.FixtureRequest) -> FakeOp:
    """The fake ``op``, emulating each supported version in turn."""
    plain_fake_op.use_version(request.param)
    return plain_fake_op


def item_get(fake: FakeOp) -> list[str]:
    """The argv the backend runs for ``fake``'s version: ``--reveal`` from 2.30 on."""
    return ITEM_GET + (["--reveal"] if fake.reveals else [])


def _backend(fake: FakeOp, **kwargs: Any) -> OnePasswordBackend:
    return OnePasswordBackend(fake.vault, fake.item, **kwargs)


def _error(backend: OnePasswordBackend) -> CredentialsError:
    with pytest.raises(CredentialsError) as info:
        backend.load()
    assert_no_secret(info.value)
    assert info.value.__cause__ is None
    return info.value


# --- the happy path -------------------------------------------------------------------


def test_one_op_run_per_load_with_the_documented_argv(fake_op: FakeOp) -> None:
    backend = backend_from_plugins(make_plugin_manager(), "onepassword", fake_op.config)
    assert backend.load() == Credentials(**KNOWN_FIELDS)
    assert fake_op.runs == [["--version"], item_get(fake_op)]


def test_fields_are_found_by_label_in_any_order_among_others(fake_op: FakeOp) -> None:
    fields = fake_op.fields
    reordered = {"username": "someone", **dict(reversed(list(fields.items()))), "notes": "x"}
    fields.clear()
    fields.update(reordered)
    fake_op.save()
    assert _backend(fake_op).load() == Credentials(**KNOWN_FIELDS)


def test_values_from_1password_are_validated(fake_op: FakeOp) -> None:
    fake_op.set_field("version", "4.1")
    error = _error(_backend(fake_op))
    assert "1Password item 'Amazon Creators API' in vault 'Arda-DevOAM'" in str(error)
    assert "'4.1'" in str(error)


# --- vault and item from configuration ------------------------------------------------


@pytest.mark.parametrize(
    ("partition", "vault"),
    [
        ("Dev", "Arda-DevOAM"),
        ("Stage", "Arda-StageOAM"),
        ("Demo", "Arda-DemoOAM"),
        ("Prod", "Arda-ProdOAM"),
        ("prod", "Arda-ProdOAM"),
        (" STAGE ", "Arda-StageOAM"),
    ],
)
def test_the_vault_follows_the_partition(partition: str, vault: str) -> None:
    assert vault_from_config({"AMAZON_PARTITION": partition}) == vault


def test_an_explicit_vault_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AMAZON_ONEPASSWORD_VAULT", raising=False)
    config = {"AMAZON_PARTITION": "Prod", "AMAZON_ONEPASSWORD_VAULT": "Ops Secrets"}
    assert vault_from_config(config) == "Ops Secrets"
    assert vault_from_config({"AMAZON_ONEPASSWORD_VAULT": "Ops Secrets"}) == "Ops Secrets"


def test_partition_and_item_fall_back_to_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMAZON_PARTITION", "Demo")
    monkeypatch.setenv("AMAZON_ONEPASSWORD_ITEM", "Creators 2024")
    monkeypatch.delenv("AMAZON_ONEPASSWORD_VAULT", raising=False)
    backend = from_config({})
    assert (backend.vault, backend.item) == ("Arda-DemoOAM", "Creators 2024")
    monkeypatch.delenv("AMAZON_ONEPASSWORD_ITEM")
    assert from_config({}).item == "Amazon Creators API"


@pytest.mark.parametrize("partition", ["Production", "QA", "dev1", 3])
def test_an_unknown_partition_is_a_config_error(partition: object) -> None:
    with pytest.raises(ConfigError, match="AMAZON_PARTITION must be one of Dev, Stage, Demo, Prod"):
        from_config({"AMAZON_PARTITION": partition})


def test_neither_partition_nor_vault_names_both_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("AMAZON_PARTITION", "AMAZON_ONEPASSWORD_VAULT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError) as info:
        backend_from_plugins(make_plugin_manager(), "onepassword", {})
    assert "AMAZON_PARTITION" in str(info.value)
    assert "AMAZON_ONEPASSWORD_VAULT" in str(info.value)


def test_a_non_string_vault_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="AMAZON_ONEPASSWORD_VAULT must be a string"):
        from_config({"AMAZON_ONEPASSWORD_VAULT": ["a"]})


# --- each failure of op, distinct and readable ----------------------------------------


def test_a_missing_token_is_reported_before_running_op(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OP_SERVICE_ACCOUNT_TOKEN")
    error = _error(_backend(fake_op))
    assert "OP_SERVICE_ACCOUNT_TOKEN is not set" in str(error)
    assert fake_op.runs == []


def test_op_not_installed(fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    error = _error(_backend(fake_op))
    assert "1Password CLI ('op') is not installed or not on PATH" in str(error)


def test_op_vanishing_between_lookup_and_run(fake_op: FakeOp, tmp_path: Path) -> None:
    # An absolute path that does not exist reaches subprocess: FileNotFoundError.
    backend = _backend(fake_op, executable=str(tmp_path / "gone" / "op"))
    assert "not installed" in str(_error(backend))


@pytest.mark.parametrize(
    "token",
    ["not-a-token", "ops_!!!!not-base64", "ops_bm90IGpzb24", KNOWN_OP_TOKEN[:40]],
    ids=["no-prefix", "bad-base64", "not-json", "truncated"],
)
def test_a_malformed_token(fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", token)
    error = _error(_backend(fake_op))
    assert "not a valid 1Password service account token" in str(error)
    assert token not in str(error)


def test_a_revoked_or_expired_token(fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", REVOKED_OP_TOKEN)
    error = _error(_backend(fake_op))
    assert "1Password refused OP_SERVICE_ACCOUNT_TOKEN" in str(error)
    assert "invalid, expired or revoked" in str(error)


def test_a_vault_that_does_not_exist(fake_op: FakeOp) -> None:
    error = _error(OnePasswordBackend("Arda-ProdOAM", fake_op.item))
    assert "vault 'Arda-ProdOAM' does not exist or the service account cannot access it" in str(
        error
    )


def test_a_vault_not_shared_with_the_service_account(fake_op: FakeOp) -> None:
    fake_op.update(granted=[])
    assert "cannot access it" in str(_error(_backend(fake_op)))


def test_an_item_that_does_not_exist(fake_op: FakeOp) -> None:
    error = _error(OnePasswordBackend(fake_op.vault, "Amazon Creator API"))
    assert "item 'Amazon Creator API' was not found in vault 'Arda-DevOAM'" in str(error)


def test_two_items_with_the_title(fake_op: FakeOp) -> None:
    items = fake_op.state["vaults"][fake_op.vault]
    items.append({**items[0], "id": "secondsecondsecondsecond12"})
    fake_op.save()
    assert "more than one item" in str(_error(_backend(fake_op)))


@pytest.mark.parametrize("label", list(LABELS))
def test_a_missing_field_names_its_label(fake_op: FakeOp, label: str) -> None:
    fake_op.remove_field(label)
    error = _error(_backend(fake_op))
    assert f"has no (or an empty) field labelled {label}" in str(error)
    assert error.missing == (LABELS[label],)


def test_an_empty_field_names_its_label(fake_op: FakeOp) -> None:
    fake_op.set_field("credential-secret", None)  # op then omits "value"
    error = _error(_backend(fake_op))
    assert "field labelled credential-secret" in str(error)
    assert error.missing == ("credential_secret",)


def test_a_concealed_placeholder_is_not_taken_for_the_secret(fake_op: FakeOp) -> None:
    # An op that claims an old version but conceals (or a secret that is the placeholder).
    fake_op.set_field("credential-secret", PLACEHOLDER)
    message = str(_error(_backend(fake_op)))
    assert "printed field(s) credential-secret" in message
    assert "need --reveal" in message


def test_a_current_op_without_reveal_would_conceal(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The defect this backend once had: without --reveal, op 2.30+ prints the placeholder.
    monkeypatch.setattr(op_cli, "REVEAL_VERSION", (99, 0, 0))
    if fake_op.reveals:
        assert "printed field(s) credential-secret" in str(_error(_backend(fake_op)))
    else:
        assert _backend(fake_op).load().credential_secret == KNOWN_SECRET


def test_a_hung_op_is_stopped_at_the_timeout(fake_op: FakeOp) -> None:
    fake_op.update(sleep=30)
    started = time.monotonic()
    error = _error(_backend(fake_op, timeout=0.5))
    assert time.monotonic() - started < 5
    assert "did not finish within 0.5 s" in str(error)


def test_the_default_timeout_is_the_module_constant(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert onepassword.OP_TIMEOUT_SECONDS == op_cli.OP_TIMEOUT_SECONDS == 15.0
    monkeypatch.setattr(onepassword, "OP_TIMEOUT_SECONDS", 0.5)
    fake_op.update(sleep=30)
    assert "within 0.5 s" in str(_error(_backend(fake_op)))


@pytest.mark.parametrize(
    "stdout",
    [f'{{"fields": [{{"label": "credential-secret", "value": "{KNOWN_SECRET}"', "[]", "null", ""],
    ids=["truncated-json", "array", "null", "empty"],
)
def test_output_that_is_not_the_item_json(fake_op: FakeOp, stdout: str) -> None:
    fake_op.update(stdout=stdout)
    assert "did not print the JSON item" in str(_error(_backend(fake_op)))


def test_rate_limited(fake_op: FakeOp) -> None:
    fake_op.update(rate_limited=True)
    assert "rate-limited the service account" in str(_error(_backend(fake_op)))


def test_offline(fake_op: FakeOp) -> None:
    fake_op.update(offline=True)
    assert "could not reach 1Password" in str(_error(_backend(fake_op)))


def test_an_op_that_refuses_the_command_names_the_minimum_version(fake_op: FakeOp) -> None:
    fake_op.update(stderr='unknown command "item" for "op"', exit=1)
    message = str(_error(_backend(fake_op)))
    assert "does not understand 'op item get --vault --format" in message
    assert "install 1Password CLI 2.18.0 or later" in message


# --- op versions: --reveal from 2.30 on, refused before, too old refused ------------------


def _fake_op_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["op", *args], capture_output=True, text=True, check=False, timeout=30)


def test_the_stand_in_conceals_like_its_version(fake_op: FakeOp) -> None:
    # The fidelity the backend relies on: 2.30+ conceals in JSON and human output unless
    # --reveal; older versions print values and do not know the flag.
    as_json = _fake_op_run(*ITEM_GET)
    human = _fake_op_run(*ITEM_GET[:5])
    values = {f["label"]: f.get("value") for f in json.loads(as_json.stdout)["fields"]}
    if fake_op.reveals:
        assert values["credential-secret"] == PLACEHOLDER
        assert f"credential-secret:    {PLACEHOLDER}" in human.stdout
        assert KNOWN_SECRET not in as_json.stdout + human.stdout
        revealed = _fake_op_run(*ITEM_GET, "--reveal")
        assert KNOWN_SECRET in revealed.stdout
    else:
        assert values["credential-secret"] == KNOWN_SECRET
        assert KNOWN_SECRET in human.stdout
        refused = _fake_op_run(*ITEM_GET, "--reveal")
        assert refused.returncode == 1
        assert refused.stdout == ""
        assert refused.stderr.startswith("[ERROR] ")
        assert refused.stderr.rstrip().endswith("unknown flag: --reveal")
    assert values["credential-id"] == KNOWN_FIELDS["credential_id"]  # never concealed
    assert _fake_op_run("--version").stdout == fake_op.version + "\n"


def test_an_op_that_claims_2_30_but_refuses_reveal(fake_op: FakeOp) -> None:
    # What an old op behind a wrapper that prints a newer version would answer.
    fake_op.use_version("2.31.1")
    fake_op.update(stderr="unknown flag: --reveal", exit=1)
    message = str(_error(_backend(fake_op)))
    assert "op refused --reveal although `op --version` said 2.31.1" in message
    assert "check that the op on PATH is the 1Password CLI it claims to be" in message


def test_reveal_is_passed_exactly_when_op_conceals_without_it(fake_op: FakeOp) -> None:
    assert _backend(fake_op).load().credential_secret == KNOWN_SECRET
    assert ("--reveal" in fake_op.item_runs[0]) is fake_op.reveals


@pytest.mark.parametrize("version", ["2.29.0", "2.30.0", "2.31.1"])
def test_the_version_boundary_of_reveal(fake_op: FakeOp, version: str) -> None:
    fake_op.use_version(version)
    assert _backend(fake_op).load().credential_secret == KNOWN_SECRET
    assert ("--reveal" in fake_op.item_runs[0]) is (version >= "2.30")


def test_the_version_is_probed_once_per_process(fake_op: FakeOp) -> None:
    backend = _backend(fake_op)
    for _ in range(3):
        backend.load()
    assert fake_op.runs.count(["--version"]) == 1
    assert len(fake_op.item_runs) == 3


def test_an_op_upgraded_in_place_is_probed_again(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = _backend(fake_op)
    backend.load()
    # Install another op at the same path (a copy, so its mtime differs), now 2.31.1.
    monkeypatch.setenv("FAKE_OP_VERSION", "2.31.1")
    installed = Path(shutil.which("op") or "op")
    installed.unlink()
    shutil.copy(FAKE_OP, installed)
    os.utime(installed, ns=(time.time_ns(), time.time_ns() + 10**9))
    backend.load()
    assert fake_op.runs.count(["--version"]) == 2
    assert fake_op.item_runs[-1][-1] == "--reveal"


@pytest.mark.parametrize("version", ["2.17.1", "2.0.0", "1.12.4"])
def test_an_op_older_than_service_accounts_is_refused_naming_the_minimum(
    fake_op: FakeOp, version: str
) -> None:
    fake_op.use_version(version)
    message = str(_error(_backend(fake_op)))
    assert f"the installed 1Password CLI is {version}" in message
    assert "need op 2.18.0 or later" in message
    assert fake_op.item_runs == []


@pytest.mark.parametrize("printed", ["", "op version unknown\n"])
def test_an_op_that_prints_no_version(fake_op: FakeOp, printed: str, tmp_path: Path) -> None:
    fake = tmp_path / "bin-noversion"
    fake.mkdir()
    script = fake / "op"
    script.write_text(f"#!/bin/sh\nprintf '{printed}'\n", encoding="utf-8")
    script.chmod(0o755)
    message = str(_error(_backend(fake_op, executable=str(script))))
    assert "--version printed no version" in message


def test_op_version_is_reported_for_check_credentials(fake_op: FakeOp) -> None:
    assert _backend(fake_op).op_version() == fake_op.version


def test_connect_variables_do_not_hijack_the_service_account(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OP_CONNECT_HOST", "http://127.0.0.1:8080")
    monkeypatch.setenv("OP_CONNECT_TOKEN", "connect-token")
    assert _backend(fake_op).load().credential_secret == KNOWN_SECRET


def test_an_unknown_failure_is_summarised_and_scrubbed(fake_op: FakeOp) -> None:
    noise = "x" * 400
    fake_op.update(
        stderr=(
            f"strange failure near {KNOWN_OP_TOKEN} token=ops_abcDEF123 "
            f"blob QUJDREVGR0hJSktMTU5PUFFSU1RVVldY {KNOWN_SECRET} {noise}\n"
            f"second line {KNOWN_SECRET}"
        ),
        exit=3,
    )
    message = str(_error(_backend(fake_op)))
    assert "failed (exit 3): strange failure near <redacted>" in message
    assert "second line" not in message
    assert "[ERROR]" not in message
    assert len(message) < 300


def test_an_unknown_silent_failure(fake_op: FakeOp) -> None:
    fake_op.update(stderr="", exit=2)
    assert "failed (exit 2) without a message" in str(_error(_backend(fake_op)))


def test_failure_messages_are_distinct(fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch) -> None:
    messages: set[str] = set()

    def record(**state: Any) -> None:
        fake_op.update(**state)
        messages.add(str(_error(_backend(fake_op, timeout=0.5))))
        fake_op.update(**dict.fromkeys(state))

    record(offline=True)
    record(rate_limited=True)
    record(sleep=5)
    record(stdout="garbage")
    record(granted=[])
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", "nope")
    record()
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", REVOKED_OP_TOKEN)
    record()
    monkeypatch.delenv("OP_SERVICE_ACCOUNT_TOKEN")
    record()
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", KNOWN_OP_TOKEN)
    messages.add(str(_error(OnePasswordBackend(fake_op.vault, "missing item"))))
    fake_op.remove_field("partner-tag")
    record()
    assert len(messages) == 10


# --- rotation and single-flight -------------------------------------------------------


def test_a_rotated_secret_is_used_after_the_ttl_or_at_once_on_reload(fake_op: FakeOp) -> None:
    now = [0.0]
    provider = CredentialProvider(_backend(fake_op), ttl_seconds=900, clock=lambda: now[0])
    stale = provider.get()
    fake_op.set_field("credential-secret", ROTATED_SECRET)
    assert provider.get().credential_secret == KNOWN_SECRET
    now[0] = 900.0
    assert provider.get().credential_secret == ROTATED_SECRET
    fake_op.set_field("credential-secret", KNOWN_SECRET)
    assert provider.reload(provider.get()) == stale
    assert len(fake_op.item_runs) == 3


def test_twenty_concurrent_requests_run_op_once(fake_op: FakeOp) -> None:
    fake_op.update(sleep=0.5)
    provider = CredentialProvider(_backend(fake_op), ttl_seconds=900)
    barrier = threading.Barrier(20)
    results: list[Credentials] = []

    def request() -> None:
        barrier.wait()
        results.append(provider.get())

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 20
    assert {r.credential_secret for r in results} == {KNOWN_SECRET}
    assert fake_op.item_runs == [item_get(fake_op)]


def test_a_failing_op_runs_once_for_a_pile_of_requests(fake_op: FakeOp) -> None:
    fake_op.update(sleep=0.3, granted=[])
    provider = CredentialProvider(_backend(fake_op), ttl_seconds=900)
    errors: list[CredentialsError] = []

    def request() -> None:
        try:
            provider.get()
        except CredentialsError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    with pytest.raises(CredentialsError):
        provider.get()  # still within the cooldown: no new run
    assert len(errors) == 20
    assert len(fake_op.item_runs) == 1


# --- secret hygiene -------------------------------------------------------------------


def test_no_failure_path_leaks_a_secret_or_the_token(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    backend = _backend(fake_op, timeout=0.5)
    provider = CredentialProvider(backend, ttl_seconds=900, cooldown_seconds=0)
    leaky_stderr = f"boom {KNOWN_OP_TOKEN} {KNOWN_SECRET} {REVOKED_OP_TOKEN}"
    scenarios: list[dict[str, Any]] = [
        {"offline": True},
        {"rate_limited": True},
        {"sleep": 5},
        {"stdout": f'{{"value": "{KNOWN_SECRET}"'},
        {"granted": []},
        {"stderr": leaky_stderr, "exit": 1},
        {"stderr": f"(401) Unauthorized {KNOWN_OP_TOKEN}", "exit": 1},
    ]
    caught: list[CredentialsError] = []
    with caplog.at_level(logging.DEBUG):
        for scenario in scenarios:
            fake_op.update(**scenario)
            with pytest.raises(CredentialsError) as info:
                provider.reload()
            caught.append(info.value)
            fake_op.update(**dict.fromkeys(scenario))
        for token in ("garbage", REVOKED_OP_TOKEN):
            monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", token)
            with pytest.raises(CredentialsError) as info:
                provider.reload()
            caught.append(info.value)
        monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", KNOWN_OP_TOKEN)
        fake_op.set_field("version", "0.0")
        with pytest.raises(CredentialsError) as info:
            provider.reload()
        caught.append(info.value)
    assert len(caught) == len(scenarios) + 3
    assert_no_secret(caplog.text, repr(backend), repr(provider), *caught)
    for error in caught:
        assert error.__cause__ is None


def _add_store_item(fake_op: FakeOp, title: str, **fields: str) -> None:
    items = fake_op.state["vaults"][fake_op.vault]
    labels = {label: KNOWN_FIELDS[name] for label, name in LABELS.items()}
    labels.update({label: fields[name] for label, name in LABELS.items() if name in fields})
    items.append({"id": "gbstoreitem0000000000000000", "title": title, "fields": labels})
    fake_op.save()


def test_a_store_reads_its_own_item_when_several_stores_are_served(fake_op: FakeOp) -> None:
    _add_store_item(fake_op, "Amazon Creators API (GB)", version="3.2", partner_tag="uk-21")
    config = {**fake_op.config, "AMAZON_MARKETPLACES": "www.amazon.com,www.amazon.co.uk"}
    pm = make_plugin_manager()

    uk = backend_from_plugins(pm, "onepassword", config, "www.amazon.co.uk").load()
    us = backend_from_plugins(pm, "onepassword", config, "www.amazon.com").load()

    assert (uk.version, uk.partner_tag) == ("3.2", "uk-21")
    assert us == Credentials(**KNOWN_FIELDS)  # no "(US)" item: the default item serves
    titles = [run[2] for run in fake_op.item_runs]
    assert titles == ["Amazon Creators API (GB)", "Amazon Creators API (US)", "Amazon Creators API"]


def test_a_single_store_app_runs_op_once_per_load(fake_op: FakeOp) -> None:
    backend = backend_from_plugins(
        make_plugin_manager(), "onepassword", fake_op.config, "www.amazon.com"
    )
    backend.load()
    assert [run[2] for run in fake_op.item_runs] == ["Amazon Creators API"]
