"""``op_cli``: secret references read with ``op read``, against the fake ``op`` on PATH.

Each test runs against every op version the stand-in emulates (``OP_VERSIONS``): ``op
read`` prints the value in all of them.
"""

# Fixtures are imported by name, then requested by name as arguments:
# ruff: noqa: F811

from __future__ import annotations

import pytest
from arda_amazon_bp.backends import op_cli
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_SECRET,
    OP_VERSIONS,
    REVOKED_OP_TOKEN,
    FakeOp,
    assert_no_secret,
)
from fixtures_credentials import fake_op as plain_fake_op  # noqa: F401 - a fixture

from arda_amazon_bp.credentials import CredentialsError

SECRET_REF = "op://Arda-DevOAM/Amazon Creators API/credential-secret"
VARIABLE = "AMAZON_CREATORS_CREDENTIAL_SECRET"


@pytest.fixture(params=list(OP_VERSIONS.values()), ids=list(OP_VERSIONS))
def fake_op(plain_fake_op: FakeOp, request: pytest.FixtureRequest) -> FakeOp:
    plain_fake_op.use_version(request.param)
    return plain_fake_op


def _error(reference: str) -> str:
    with pytest.raises(CredentialsError) as info:
        op_cli.read_reference(reference, VARIABLE)
    message = str(info.value)
    assert_no_secret(info.value)
    assert info.value.__cause__ is None
    assert message.startswith(f"{VARIABLE} holds a 1Password secret reference that op read")
    assert reference.strip() not in message  # the configured value is not repeated
    return message


@pytest.mark.parametrize(
    "value",
    ["op://v/i/f", "  op://v/i/s/f", "op://Arda-DevOAM/Amazon Creators API/credential-secret"],
)
def test_a_reference_is_recognised(value: str) -> None:
    assert op_cli.is_reference(value)


@pytest.mark.parametrize("value", ["", "OP://v/i/f", "http://op/", "secret op://v/i/f", None, 3])
def test_anything_else_is_a_value(value: object) -> None:
    assert not op_cli.is_reference(value)


@pytest.mark.parametrize(
    "reference",
    [
        SECRET_REF,
        "op://Arda-DevOAM/Amazon Creators API/add more/credential-secret",  # with the section
        "op://Arda-DevOAM/pk3iq2c7gkbspnyuqqvwmyhdla/credential-secret",  # item by id
        "op://Arda-DevOAM/Amazon Creators API/CREDENTIAL-SECRET",  # case-insensitive
        f"  {SECRET_REF}\n",
    ],
)
def test_op_read_resolves_a_reference_in_every_version(fake_op: FakeOp, reference: str) -> None:
    assert op_cli.read_reference(reference, VARIABLE) == KNOWN_SECRET
    assert fake_op.runs[-1] == ["read", reference.strip()]
    assert fake_op.runs.count(["--version"]) == 1


@pytest.mark.parametrize(
    ("reference", "fix"),
    [
        ("op://Arda-DevOAM/Amazon Creators API", "not a valid secret reference"),
        ("op://a/b/c/d/e", "not a valid secret reference"),
        ("op://Arda-NopeOAM/Amazon Creators API/credential-secret", "its vault does not exist"),
        ("op://Arda-DevOAM/Amazon Creator API/credential-secret", "its item does not exist"),
        ("op://Arda-DevOAM/Amazon Creators API/credential-secrte", "has no such field"),
        ("op://Arda-DevOAM/Amazon Creators API/other/credential-secret", "has no such field"),
    ],
)
def test_a_dangling_reference_says_what_is_wrong(fake_op: FakeOp, reference: str, fix: str) -> None:
    assert fix in _error(reference)


def test_a_vault_not_granted_reads_like_a_missing_one(fake_op: FakeOp) -> None:
    fake_op.update(granted=[])
    assert "its vault does not exist or the service account cannot read it" in _error(SECRET_REF)


def test_token_problems_are_those_of_the_backend(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", REVOKED_OP_TOKEN)
    assert "1Password refused OP_SERVICE_ACCOUNT_TOKEN" in _error(SECRET_REF)
    runs = len(fake_op.runs)
    monkeypatch.delenv("OP_SERVICE_ACCOUNT_TOKEN")
    assert "OP_SERVICE_ACCOUNT_TOKEN is not set" in _error(SECRET_REF)
    assert len(fake_op.runs) == runs  # refused before running op


def test_an_unknown_failure_is_scrubbed_of_the_reference(fake_op: FakeOp) -> None:
    fake_op.update(stderr=f"weird failure reading {SECRET_REF} ({KNOWN_SECRET})", exit=7)
    message = _error(SECRET_REF)
    assert "op exited 7: weird failure reading <redacted>" in message


def test_offline_and_timeouts(fake_op: FakeOp) -> None:
    fake_op.update(offline=True)
    assert "could not reach 1Password" in _error(SECRET_REF)
    fake_op.update(offline=None, sleep=5)
    with pytest.raises(CredentialsError, match=r"did not finish within 0\.5 s"):
        op_cli.read_reference(SECRET_REF, VARIABLE, timeout=0.5)


def test_an_op_too_old_for_service_accounts(fake_op: FakeOp) -> None:
    fake_op.use_version("2.17.0")
    assert "need op 2.18.0 or later" in _error(SECRET_REF)


def test_the_value_keeps_everything_but_one_trailing_newline(fake_op: FakeOp) -> None:
    fake_op.set_field("partner-tag", KNOWN_FIELDS["partner_tag"] + "\n")
    reference = "op://Arda-DevOAM/Amazon Creators API/partner-tag"
    assert op_cli.read_reference(reference, "X") == KNOWN_FIELDS["partner_tag"] + "\n"
