"""``flask amazon check-credentials | smoke | quota`` against a stub extension state.

The state object has the attributes the extension provides (``settings``,
``credentials``, ``client``, ``quota``); credentials come from real backends (file,
env, the fake ``op``), the client and the quota are stubs whose use is asserted.
"""

# Fixtures are imported by name, then requested by name as arguments:
# ruff: noqa: F811

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from arda_amazon_bp.backends.env import EnvBackend
from arda_amazon_bp.backends.file import FileBackend
from arda_amazon_bp.backends.onepassword import OnePasswordBackend
from click.testing import Result
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_OP_TOKEN,
    KNOWN_SECRET,
    ROTATED_SECRET,
    CredentialsFile,
    FakeOp,
    assert_no_secret,
    credentials_file,  # noqa: F401 - a fixture
    fake_op,  # noqa: F401 - a fixture
)
from flask import Flask

from arda_amazon_bp import config
from arda_amazon_bp.cli import DEFAULT_SMOKE_ASIN, amazon_cli
from arda_amazon_bp.config import Settings
from arda_amazon_bp.creators import GetItemsResult, ItemError
from arda_amazon_bp.credentials import CredentialBackend, CredentialProvider, Credentials
from arda_amazon_bp.errors import AmazonImportError, UpstreamReason, rate_limited
from arda_amazon_bp.errors import upstream_unavailable as unavailable
from arda_amazon_bp.quota import WindowStatus

ITEM = {
    "asin": DEFAULT_SMOKE_ASIN,
    "detailPageURL": f"https://www.amazon.com/dp/{DEFAULT_SMOKE_ASIN}?tag=ardatest-20",
    "itemInfo": {"title": {"displayValue": "Atomic Habits"}},
}


@dataclass
class StubClient:
    """Records get_items calls; answers ``answer`` (or raises it), after ``attempts`` calls
    of ``before_call`` (2 = a retry after a refreshed token)."""

    credentials: CredentialProvider
    answer: Any = None
    attempts: int = 1
    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    events: list[str] | None = None

    def get_items(
        self,
        marketplace: str,
        asins: Sequence[str],
        *,
        before_call: Callable[[Credentials], None] | None = None,
    ) -> GetItemsResult:
        creds = self.credentials.get()
        for _ in range(self.attempts):
            if before_call is not None:
                before_call(creds)
        self.calls.append((marketplace, list(asins)))
        if self.events is not None:
            self.events.append("get_items")
        if isinstance(self.answer, BaseException):
            raise self.answer
        if self.answer is not None:
            return self.answer  # type: ignore[no-any-return]
        return GetItemsResult(items={asins[0]: ITEM}, errors={}, credentials=creds)


@dataclass
class StubQuota:
    """Records acquire() calls; ``refuse`` is raised instead when set."""

    refuse: BaseException | None = None
    acquired: list[str] = field(default_factory=list)
    sent: list[tuple[str, float]] = field(default_factory=list)
    windows: list[WindowStatus] = field(default_factory=list)
    status_error: BaseException | None = None
    events: list[str] | None = None

    def acquire(self, key: str, *, max_wait: float | None = None) -> float:
        if self.events is not None:
            self.events.append("acquire")
        if self.refuse is not None:
            raise self.refuse
        self.acquired.append(key)
        return 0.0

    def sending(self, key: str, slot_taken_at: float) -> None:
        self.sent.append((key, slot_taken_at))

    def status(self, key: str) -> list[WindowStatus]:
        if self.status_error is not None:
            raise self.status_error
        self.status_key = key
        return self.windows


@dataclass
class StubState:
    settings: Settings
    credentials: CredentialProvider
    client: Any
    quota: StubQuota
    plugin_manager: Any = None


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = dict(overrides)
    config.apply_defaults(values)
    return Settings.from_config(values)


def make_app(backend: CredentialBackend, **settings: Any) -> tuple[Flask, StubState]:
    provider = CredentialProvider(backend, ttl_seconds=900)
    state = StubState(
        settings=_settings(**settings),
        credentials=provider,
        client=StubClient(provider),
        quota=StubQuota(),
    )
    app = Flask("cli-test")
    app.extensions["arda_amazon_bp"] = state
    app.cli.add_command(amazon_cli)
    return app, state


def run(app: Flask, *args: str) -> Result:
    result = app.test_cli_runner().invoke(args=["amazon", *args])
    assert_no_secret(result.output, result.stdout, result.stderr)
    return result


class Fixed:
    """A backend returning a fixed set (or raising)."""

    def __init__(self, fields: Mapping[str, str] = KNOWN_FIELDS) -> None:
        self.fields = dict(fields)

    def load(self) -> Credentials:
        return Credentials(**self.fields)


# --- check-credentials ----------------------------------------------------------------


def test_check_credentials_reports_a_usable_set(credentials_file: CredentialsFile) -> None:
    app, _ = make_app(FileBackend(credentials_file.path), AMAZON_CREDENTIALS_BACKEND="file")
    result = run(app, "check-credentials")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "backend:       file (FileBackend(path=" in out
    assert "credential_id found, credential_secret found, version found, partner_tag found" in out
    assert "version:       3.1 (lwa, region NA)" in out
    assert "partner tag:   ardatest-20" in out
    assert "credential id: …ID42" in out
    assert "marketplace:   www.amazon.com" in out
    assert "not checked here; `flask amazon smoke` requests one" in out
    assert out.rstrip().endswith("OK: credentials load and match the marketplace")


def test_check_credentials_json(credentials_file: CredentialsFile) -> None:
    app, _ = make_app(FileBackend(credentials_file.path), AMAZON_CREDENTIALS_BACKEND="file")
    result = run(app, "check-credentials", "--json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body == {
        "ok": True,
        "error": None,
        "backend": "file",
        "source": f"FileBackend(path={str(credentials_file.path)!r})",
        "fields": dict.fromkeys(KNOWN_FIELDS, True),
        "version": "3.1",
        "family": "lwa",
        "region": "NA",
        "partnerTag": "ardatest-20",
        "credentialId": "…ID42",
        "marketplace": "www.amazon.com",
        "marketplaceRegion": "NA",
        "marketplaceServed": True,
        "token": {"checked": False, "seconds": None},
    }


def test_check_credentials_reads_afresh_not_from_the_cache(
    credentials_file: CredentialsFile,
) -> None:
    app, state = make_app(FileBackend(credentials_file.path))
    state.credentials.get()
    credentials_file.write({**KNOWN_FIELDS, "partner_tag": "rotated-20"})
    result = run(app, "check-credentials")
    assert "partner tag:   rotated-20" in result.stdout
    assert state.credentials.get().partner_tag == "rotated-20"


def test_check_credentials_names_the_missing_field(credentials_file: CredentialsFile) -> None:
    credentials_file.write({k: v for k, v in KNOWN_FIELDS.items() if k != "credential_secret"})
    app, _ = make_app(FileBackend(credentials_file.path))
    result = run(app, "check-credentials")
    assert result.exit_code == 1
    assert "credential_secret MISSING" in result.stdout
    assert "credential_id found" in result.stdout
    assert result.stderr.startswith("FAIL: credentials could not be loaded: missing or empty")
    body = json.loads(run(app, "check-credentials", "--json").stdout)
    assert body["ok"] is False
    assert body["fields"]["credential_secret"] is False
    assert body["fields"]["partner_tag"] is True
    assert "credential_secret" in body["error"]


def test_check_credentials_when_the_fields_could_not_be_read(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OP_SERVICE_ACCOUNT_TOKEN")
    app, _ = make_app(OnePasswordBackend(fake_op.vault, fake_op.item))
    result = run(app, "check-credentials", "--json")
    assert result.exit_code == 1
    body = json.loads(result.stdout)
    assert body["fields"] == dict.fromkeys(KNOWN_FIELDS)
    assert "OP_SERVICE_ACCOUNT_TOKEN is not set" in body["error"]
    assert "fields:        not read" in run(app, "check-credentials").stdout


def test_check_credentials_through_the_fake_op(fake_op: FakeOp) -> None:
    app, _ = make_app(
        OnePasswordBackend(fake_op.vault, fake_op.item), AMAZON_CREDENTIALS_BACKEND="onepassword"
    )
    result = run(app, "check-credentials")
    assert result.exit_code == 0
    assert "OnePasswordBackend(vault='Arda-DevOAM', item='Amazon Creators API')" in result.stdout
    assert f"op version:    {fake_op.version}\n" in result.stdout
    assert len(fake_op.item_runs) == 1
    body = json.loads(run(app, "check-credentials", "--json").stdout)
    assert body["opVersion"] == fake_op.version
    assert body["ok"] is True


def test_check_credentials_reports_an_op_too_old(fake_op: FakeOp) -> None:
    fake_op.use_version("2.17.0")
    app, _ = make_app(
        OnePasswordBackend(fake_op.vault, fake_op.item), AMAZON_CREDENTIALS_BACKEND="onepassword"
    )
    result = run(app, "check-credentials")
    assert result.exit_code == 1
    assert "op version:    unknown (the installed 1Password CLI is 2.17.0" in result.stdout
    assert "need op 2.18.0 or later" in result.stderr
    assert fake_op.item_runs == []


@pytest.mark.parametrize(
    ("version", "marketplace", "ok"),
    [
        ("3.1", "www.amazon.com", True),
        ("2.1", "www.amazon.ca", True),
        ("3.2", "www.amazon.de", True),
        ("2.2", "www.amazon.in", True),
        ("3.3", "www.amazon.co.jp", True),
        ("3.1", "www.amazon.de", False),
        ("2.2", "www.amazon.com", False),
        ("3.3", "www.amazon.co.uk", False),
    ],
)
def test_check_credentials_checks_the_versions_region_serves_the_marketplace(
    version: str, marketplace: str, ok: bool
) -> None:
    app, _ = make_app(Fixed({**KNOWN_FIELDS, "version": version}), AMAZON_MARKETPLACE=marketplace)
    result = run(app, "check-credentials", "--json")
    body = json.loads(result.stdout)
    assert body["marketplaceServed"] is ok
    assert result.exit_code == (0 if ok else 1)
    if not ok:
        assert f"credential version {version} serves region" in body["error"]
        assert marketplace in body["error"]


def test_check_credentials_refuses_an_unknown_marketplace() -> None:
    app, _ = make_app(Fixed(), AMAZON_MARKETPLACE="www.amazon.cn")
    result = run(app, "check-credentials")
    assert result.exit_code == 1
    assert "AMAZON_MARKETPLACE 'www.amazon.cn' is not a known marketplace" in result.stderr


def test_check_credentials_uses_the_clients_token_check_when_there_is_one() -> None:
    app, state = make_app(Fixed())
    state.client = type("WithTokenCheck", (), {"check_token": lambda self: 0.25})()
    result = run(app, "check-credentials", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["token"] == {"checked": True, "seconds": 0.25}
    assert "token:         issued in 0.25 s" in run(app, "check-credentials").stdout


def test_check_credentials_reports_a_refused_token() -> None:
    def refuse(self: object) -> float:
        raise unavailable(UpstreamReason.CREDENTIALS_REJECTED, "Amazon refused the client.")

    app, state = make_app(Fixed())
    state.client = type("WithTokenCheck", (), {"check_token": refuse})()
    result = run(app, "check-credentials")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "FAIL: token request failed: AMAZON_UPSTREAM_UNAVAILABLE (credentials_rejected): "
        "Amazon refused the client."
    )


def test_check_credentials_without_the_extension() -> None:
    app = Flask("bare")
    app.cli.add_command(amazon_cli)
    result = app.test_cli_runner().invoke(args=["amazon", "check-credentials"])
    assert result.exit_code == 1
    assert "arda_amazon_bp is not initialised" in result.output


# --- smoke ----------------------------------------------------------------------------


def test_smoke_takes_a_slot_then_looks_the_asin_up() -> None:
    app, state = make_app(Fixed())
    events: list[str] = []
    state.quota.events = state.client.events = events
    result = run(app, "smoke")
    assert result.exit_code == 0, result.output
    creds = Credentials(**KNOWN_FIELDS)
    assert state.quota.acquired == [creds.quota_key]
    assert events == ["acquire", "get_items"]
    assert state.client.calls == [("www.amazon.com", [DEFAULT_SMOKE_ASIN])]
    assert "title:       Atomic Habits" in result.stdout
    assert "partner tag: ardatest-20" in result.stdout
    assert "latency:     " in result.stdout
    assert result.stdout.rstrip().endswith("OK: getItems answered")


def test_smoke_json() -> None:
    app, _ = make_app(Fixed())
    body = json.loads(run(app, "smoke", "--json").stdout)
    assert body["ok"] is True
    assert body["title"] == "Atomic Habits"
    assert body["asin"] == DEFAULT_SMOKE_ASIN
    assert body["partnerTag"] == "ardatest-20"
    assert body["credentialId"] == "…ID42"
    assert isinstance(body["latency"], float)


def test_a_retry_inside_get_items_takes_its_own_slot() -> None:
    app, state = make_app(Fixed())
    state.client.attempts = 2
    assert run(app, "smoke").exit_code == 0
    assert len(state.quota.acquired) == 2


def test_smoke_asin_from_option_app_config_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app, state = make_app(Fixed())
    run(app, "smoke", "--asin", "b0c7ntrl01")
    monkeypatch.setenv("AMAZON_SMOKE_ASIN", "B0ENVASIN1")
    run(app, "smoke")
    app.config["AMAZON_SMOKE_ASIN"] = "B0CONFIG01"
    run(app, "smoke")
    assert [asins for _, asins in state.client.calls] == [
        ["B0C7NTRL01"],
        ["B0ENVASIN1"],
        ["B0CONFIG01"],
    ]


def test_a_malformed_asin_is_a_usage_error() -> None:
    app, state = make_app(Fixed())
    result = run(app, "smoke", "--asin", "not-an-asin")
    assert result.exit_code == 2
    assert "is not an ASIN" in result.output
    assert state.client.calls == []
    assert state.quota.acquired == []


def test_smoke_reports_an_upstream_error_with_code_and_reason() -> None:
    app, state = make_app(Fixed())
    state.client.answer = unavailable(
        UpstreamReason.ASSOCIATE_NOT_ELIGIBLE, "The Associates account is not eligible."
    )
    result = run(app, "smoke")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "FAIL: getItems failed: AMAZON_UPSTREAM_UNAVAILABLE (associate_not_eligible): "
        "The Associates account is not eligible."
    )
    body = json.loads(run(app, "smoke", "--json").stdout)
    assert body["code"] == "AMAZON_UPSTREAM_UNAVAILABLE"
    assert body["reason"] == "associate_not_eligible"


def test_smoke_reports_an_item_error() -> None:
    app, state = make_app(Fixed())
    state.client.answer = GetItemsResult(
        items={},
        errors={DEFAULT_SMOKE_ASIN: ItemError("ItemNotAccessible", "Not accessible.")},
        credentials=Credentials(**KNOWN_FIELDS),
    )
    result = run(app, "smoke")
    assert result.exit_code == 1
    assert "Amazon returned no item: ItemNotAccessible: Not accessible." in result.stderr


def test_smoke_without_a_quota_slot_does_not_call_amazon() -> None:
    app, state = make_app(Fixed())
    state.quota.refuse = rate_limited(2, "local", "No slot within 3 s.", limit="second")
    result = run(app, "smoke")
    assert result.exit_code == 1
    assert "no quota slot: AMAZON_RATE_LIMITED (local): No slot within 3 s." in result.stderr
    assert state.client.calls == []


def test_smoke_when_credentials_cannot_be_loaded(credentials_file: CredentialsFile) -> None:
    credentials_file.write(mode=0o644)
    app, state = make_app(FileBackend(credentials_file.path))
    result = run(app, "smoke")
    assert result.exit_code == 1
    assert "chmod 600" in result.stderr
    assert state.quota.acquired == []


# --- quota ----------------------------------------------------------------------------


def test_quota_lists_each_window_of_the_current_credential() -> None:
    app, state = make_app(Fixed())
    state.quota.windows = [
        WindowStatus("1 per 1 second", 1, 1, 0, 1_700_000_000.4),
        WindowStatus("8640 per 1 day", 8640, 17, 8623, 1_700_086_400.0),
    ]
    result = run(app, "quota")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"credential …ID42 (quota key {Credentials(**KNOWN_FIELDS).quota_key})"
    assert lines[2].split() == ["1", "per", "1", "second", "1", "0", "2023-11-14T22:13:20Z"]
    assert lines[3].split() == ["8640", "per", "1", "day", "17", "8623", "2023-11-15T22:13:20Z"]
    assert state.quota.status_key == Credentials(**KNOWN_FIELDS).quota_key
    body = json.loads(run(app, "quota", "--json").stdout)
    assert body["windows"][1] == {
        "limit": "8640 per 1 day",
        "amount": 8640,
        "used": 17,
        "remaining": 8623,
        "resetAt": "2023-11-15T22:13:20Z",
    }
    assert body["credentialId"] == "…ID42"


def test_quota_when_the_storage_fails() -> None:
    app, state = make_app(Fixed())
    state.quota.status_error = ConnectionError(f"redis said {KNOWN_SECRET}")
    result = run(app, "quota")
    assert result.exit_code == 1
    assert "quota storage: unexpected ConnectionError" in result.stderr


# --- secret hygiene -------------------------------------------------------------------


def _hygiene_backends(
    fake: FakeOp, file: CredentialsFile, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Callable[[], CredentialBackend]]:
    def op_revoked() -> CredentialBackend:
        fake.update(token="ops_someoneelse")
        return OnePasswordBackend(fake.vault, fake.item)

    def op_leaky_stderr() -> CredentialBackend:
        fake.update(stderr=f"odd {KNOWN_OP_TOKEN} {KNOWN_SECRET}", exit=1)
        return OnePasswordBackend(fake.vault, fake.item)

    def op_garbage() -> CredentialBackend:
        fake.update(stdout=f'{{"value": "{KNOWN_SECRET}"')
        return OnePasswordBackend(fake.vault, fake.item)

    def op_bad_version() -> CredentialBackend:
        fake.set_field("version", "9.9")
        return OnePasswordBackend(fake.vault, fake.item)

    def file_world_readable() -> CredentialBackend:
        file.write(mode=0o644)
        return FileBackend(file.path)

    def file_broken_json() -> CredentialBackend:
        file.write(raw=f'{{"credential_secret": "{KNOWN_SECRET}",')
        return FileBackend(file.path)

    def env_broken_secret() -> CredentialBackend:
        for name, value in KNOWN_FIELDS.items():
            monkeypatch.setenv(f"AMAZON_CREATORS_{name.upper()}", value)
        monkeypatch.setenv("AMAZON_CREATORS_CREDENTIAL_SECRET", f"{KNOWN_SECRET} {ROTATED_SECRET}")
        return EnvBackend()

    return {
        "op-revoked": op_revoked,
        "op-leaky-stderr": op_leaky_stderr,
        "op-garbage": op_garbage,
        "op-bad-version": op_bad_version,
        "file-world-readable": file_world_readable,
        "file-broken-json": file_broken_json,
        "env-broken-secret": env_broken_secret,
    }


HYGIENE_CASES = [
    "op-revoked",
    "op-leaky-stderr",
    "op-garbage",
    "op-bad-version",
    "file-world-readable",
    "file-broken-json",
    "env-broken-secret",
]


@pytest.mark.parametrize("case", HYGIENE_CASES)
@pytest.mark.parametrize("command", ["check-credentials", "smoke", "quota"])
@pytest.mark.parametrize("as_json", [False, True])
def test_no_credential_failure_prints_or_logs_a_secret(
    fake_op: FakeOp,
    credentials_file: CredentialsFile,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: str,
    command: str,
    as_json: bool,
) -> None:
    backend = _hygiene_backends(fake_op, credentials_file, monkeypatch)[case]()
    app, _ = make_app(backend)
    with caplog.at_level(logging.DEBUG):
        result = run(app, command, *(["--json"] if as_json else []))
    assert result.exit_code == 1
    assert_no_secret(caplog.text)


LEAKY_MESSAGE = f"upstream echoed {KNOWN_SECRET} for {KNOWN_FIELDS['credential_id']}"


@pytest.mark.parametrize(
    "failure",
    [
        AmazonImportError("AMAZON_UPSTREAM_UNAVAILABLE", LEAKY_MESSAGE, {"reason": "x"}),
        RuntimeError(LEAKY_MESSAGE),
    ],
    ids=["typed", "unexpected"],
)
@pytest.mark.parametrize("as_json", [False, True])
def test_upstream_failures_quoting_a_secret_are_scrubbed(
    fake_op: FakeOp, failure: Exception, as_json: bool
) -> None:
    app, state = make_app(OnePasswordBackend(fake_op.vault, fake_op.item))
    state.client.answer = failure

    def leaky_token_check(self: object) -> float:
        raise failure

    result = run(app, "smoke", *(["--json"] if as_json else []))
    assert result.exit_code == 1
    state.client = type("WithTokenCheck", (), {"check_token": leaky_token_check})()
    result = run(app, "check-credentials", *(["--json"] if as_json else []))
    assert result.exit_code == 1
