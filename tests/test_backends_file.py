"""The ``file`` backend: an owner-only JSON file, re-read at every load."""

# Fixtures are imported by name, then requested by name as arguments:
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest
from arda_amazon_bp.backends import file as file_backend
from arda_amazon_bp.backends.file import FileBackend, from_config
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_SECRET,
    ROTATED_SECRET,
    CredentialsFile,
    FakeOp,
    assert_no_secret,
    credentials_file,  # noqa: F401 - a fixture
    fake_op,  # noqa: F401 - a fixture
)

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import (
    FIELDS,
    CredentialProvider,
    Credentials,
    CredentialsError,
    backend_from_plugins,
)
from arda_amazon_bp.plugins import make_plugin_manager

ROTATED = {**KNOWN_FIELDS, "credential_secret": ROTATED_SECRET}


def _error(backend: FileBackend) -> CredentialsError:
    with pytest.raises(CredentialsError) as info:
        backend.load()
    assert_no_secret(info.value)
    return info.value


def test_loads_the_file_named_in_the_app_config(credentials_file: CredentialsFile) -> None:
    backend = backend_from_plugins(make_plugin_manager(), "file", credentials_file.config)
    assert isinstance(backend, FileBackend)
    assert backend.load() == Credentials(**KNOWN_FIELDS)


def test_the_path_falls_back_to_the_environment(
    credentials_file: CredentialsFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMAZON_CREDENTIALS_FILE", str(credentials_file.path))
    assert from_config({}).path == credentials_file.path


def test_a_home_relative_path_is_expanded(
    credentials_file: CredentialsFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(credentials_file.path.parent))
    backend = from_config({"AMAZON_CREDENTIALS_FILE": f"~/{credentials_file.path.name}"})
    assert backend.load().credential_secret == KNOWN_SECRET


@pytest.mark.parametrize("value", [None, "", "   "])
def test_an_unset_path_fails_at_configuration_naming_the_key(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    monkeypatch.delenv("AMAZON_CREDENTIALS_FILE", raising=False)
    config = {} if value is None else {"AMAZON_CREDENTIALS_FILE": value}
    with pytest.raises(ConfigError, match="AMAZON_CREDENTIALS_FILE must be set"):
        backend_from_plugins(make_plugin_manager(), "file", config)


def test_a_non_path_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="must be a path"):
        from_config({"AMAZON_CREDENTIALS_FILE": 42})


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    error = _error(FileBackend(path))
    assert str(path) in str(error)
    assert "does not exist" in str(error)
    assert error.missing == FIELDS


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620, 0o602, 0o660, 0o610, 0o601, 0o666])
def test_a_file_others_can_access_is_refused_like_ssh_does(
    credentials_file: CredentialsFile, mode: int
) -> None:
    credentials_file.write(mode=mode)
    error = _error(FileBackend(credentials_file.path))
    assert f"chmod 600 {credentials_file.path}" in str(error)
    assert f"mode {mode:04o}" in str(error)


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_owner_only_modes_are_accepted(credentials_file: CredentialsFile, mode: int) -> None:
    credentials_file.write(mode=mode)
    assert FileBackend(credentials_file.path).load().credential_secret == KNOWN_SECRET


def test_a_directory_is_refused(tmp_path: Path) -> None:
    assert "is a directory" in str(_error(FileBackend(tmp_path)))


def _load_within(backend: FileBackend, seconds: float) -> CredentialsError:
    """``backend.load()`` in a daemon thread: a hang fails the test instead of the run."""
    outcome: list[BaseException | Credentials] = []

    def load() -> None:
        try:
            outcome.append(backend.load())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"load() still blocked after {seconds} s"
    assert len(outcome) == 1 and isinstance(outcome[0], CredentialsError), outcome
    assert_no_secret(outcome[0])
    return outcome[0]


def test_a_fifo_without_a_writer_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "creds.fifo"
    os.mkfifo(fifo, 0o600)
    # No writer: a plain open() for reading would block here forever.
    assert "not a regular file" in str(_load_within(FileBackend(fifo), 5))


def test_a_fifo_with_a_writer_is_refused_too(tmp_path: Path) -> None:
    fifo = tmp_path / "creds.fifo"
    os.mkfifo(fifo, 0o600)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        os.write(fd, json.dumps(KNOWN_FIELDS).encode())
        assert "not a regular file" in str(_load_within(FileBackend(fifo), 5))
    finally:
        os.close(fd)


def test_a_character_device_is_refused(tmp_path: Path) -> None:
    assert "not a regular file" in str(_load_within(FileBackend("/dev/zero"), 5))


def test_an_unreadable_file_is_refused(
    credentials_file: CredentialsFile, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials_file.write(mode=0o000)
    if os.geteuid() == 0:  # root reads any file: make the open fail as it would for others
        real_open = file_backend._open

        def denied(path: Path) -> int:
            if path == credentials_file.path:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path)

        monkeypatch.setattr(file_backend, "_open", denied)
    assert "cannot be read by this process" in str(_error(FileBackend(credentials_file.path)))


@pytest.mark.parametrize(
    "raw",
    [
        # Broken JSON right after the secret: a parser message would quote it.
        f'{{"credential_secret": "{KNOWN_SECRET}", ',
        f"credential_secret={KNOWN_SECRET}",
        "",
    ],
)
def test_invalid_json_is_refused_without_quoting_it(
    credentials_file: CredentialsFile, raw: str
) -> None:
    credentials_file.write(raw=raw)
    error = _error(FileBackend(credentials_file.path))
    assert "is not valid UTF-8 JSON" in str(error)
    assert error.__cause__ is None
    assert not error.__suppress_context__ or error.__context__ is None


def test_invalid_utf8_is_refused(credentials_file: CredentialsFile) -> None:
    credentials_file.path.write_bytes(b'{"credential_secret": "\xff\xfe"}')
    assert "not valid UTF-8 JSON" in str(_error(FileBackend(credentials_file.path)))


def test_a_utf8_byte_order_mark_is_tolerated(credentials_file: CredentialsFile) -> None:
    credentials_file.path.write_bytes(b"\xef\xbb\xbf" + json.dumps(KNOWN_FIELDS).encode())
    assert FileBackend(credentials_file.path).load().credential_secret == KNOWN_SECRET


@pytest.mark.parametrize(
    ("value", "kind"),
    [([KNOWN_SECRET], "array"), (KNOWN_SECRET, "string"), (None, "null"), (2.1, "number")],
)
def test_json_that_is_not_an_object_is_refused(
    credentials_file: CredentialsFile, value: object, kind: str
) -> None:
    credentials_file.write(raw=json.dumps(value))
    error = _error(FileBackend(credentials_file.path))
    assert f"found a JSON {kind}" in str(error)


@pytest.mark.parametrize("field", FIELDS)
def test_a_missing_field_is_named(credentials_file: CredentialsFile, field: str) -> None:
    credentials_file.write({k: v for k, v in KNOWN_FIELDS.items() if k != field})
    error = _error(FileBackend(credentials_file.path))
    assert field in str(error)
    assert str(credentials_file.path) in str(error)
    assert error.missing == (field,)


def test_a_numeric_version_is_accepted(credentials_file: CredentialsFile) -> None:
    credentials_file.write(raw=json.dumps({**KNOWN_FIELDS, "version": 3.1}))
    assert FileBackend(credentials_file.path).load().version == "3.1"


def test_replacing_the_file_rotates_after_the_ttl_or_a_reload(
    credentials_file: CredentialsFile,
) -> None:
    now = [0.0]
    provider = CredentialProvider(
        FileBackend(credentials_file.path), ttl_seconds=60, clock=lambda: now[0]
    )
    stale = provider.get()
    credentials_file.write(ROTATED)
    assert provider.get().credential_secret == KNOWN_SECRET
    now[0] = 60.0
    assert provider.get().credential_secret == ROTATED_SECRET
    credentials_file.write(KNOWN_FIELDS)
    assert provider.reload(provider.get()) == stale


def test_failures_log_no_secret(
    credentials_file: CredentialsFile, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FileBackend(credentials_file.path)
    provider = CredentialProvider(backend, ttl_seconds=60, cooldown_seconds=0)
    failures = [
        {"raw": f'{{"credential_secret": "{KNOWN_SECRET}"'},
        {"mode": 0o644},
        {"fields": {**KNOWN_FIELDS, "version": "9.9"}},
        {"fields": {**KNOWN_FIELDS, "credential_secret": KNOWN_SECRET + " x"}},
    ]
    with caplog.at_level(logging.DEBUG):
        for failure in failures:
            credentials_file.write(**failure)  # type: ignore[arg-type]
            with pytest.raises(CredentialsError) as info:
                provider.reload()
            assert_no_secret(info.value)
    assert caplog.text.count("could not be loaded") == len(failures)
    assert_no_secret(caplog.text, repr(backend), repr(provider))


# --- 1Password secret references (op://…) in the file ------------------------------------


def test_a_field_may_be_a_secret_reference(
    credentials_file: CredentialsFile, fake_op: FakeOp
) -> None:
    reference = "op://Arda-DevOAM/Amazon Creators API/credential-secret"
    credentials_file.write({**KNOWN_FIELDS, "credential_secret": reference})
    fake_op.set_field("credential-secret", ROTATED_SECRET)
    assert FileBackend(credentials_file.path).load().credential_secret == ROTATED_SECRET
    assert fake_op.runs[-1] == ["read", reference]


def test_a_dangling_reference_names_the_field_and_the_file(
    credentials_file: CredentialsFile, fake_op: FakeOp
) -> None:
    reference = "op://Arda-DevOAM/Amazon Creators API/partner-tag-2"
    credentials_file.write({**KNOWN_FIELDS, "partner_tag": reference})
    error = _error(FileBackend(credentials_file.path))
    assert str(error).startswith(
        f"field partner_tag of credentials file {credentials_file.path} holds a 1Password "
        "secret reference that op read could not resolve: its item has no such field"
    )
    assert reference not in str(error)
    assert error.missing == ("partner_tag",)


def test_a_stores_entry_wins_over_the_default_set_for_that_store_only(
    credentials_file: CredentialsFile,
) -> None:
    eu = {**KNOWN_FIELDS, "credential_id": "EUCREDENTIAL0042", "version": "3.2"}
    credentials_file.write(
        {**KNOWN_FIELDS, "stores": {"GB": eu, "www.amazon.de": {"partner_tag": "de-21"}}}
    )
    pm = make_plugin_manager()

    def load(marketplace: str | None) -> Credentials:
        return backend_from_plugins(pm, "file", credentials_file.config, marketplace).load()

    assert load("www.amazon.co.uk") == Credentials(**eu)
    assert load("www.amazon.de").partner_tag == "de-21"
    assert load("www.amazon.de").credential_id == KNOWN_FIELDS["credential_id"]
    assert load("www.amazon.com") == Credentials(**KNOWN_FIELDS)
    assert load(None) == Credentials(**KNOWN_FIELDS)
