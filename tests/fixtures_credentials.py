"""Credential fixtures: a fake ``op`` on PATH, a 0600 credentials file, env variables.

Fixtures: ``fake_op`` (:class:`FakeOp`, emulating op :data:`CURRENT_OP`; see
:data:`OP_VERSIONS` for the other modes), ``credentials_file`` (:class:`CredentialsFile`),
``env_credentials`` (the four ``AMAZON_CREATORS_*`` variables set). The ``KNOWN_*``
values are distinctive so secret-hygiene tests can grep every output for them.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

FAKE_OP = Path(__file__).parent / "fake_op" / "op"

#: The op versions the stand-in emulates for the backend's tests: the oldest supported
#: (service accounts arrived in 2.18; values are never concealed) and a current one
#: (2.30+: concealed unless --reveal).
OLDEST_OP = "2.18.0"
CURRENT_OP = "2.31.1"
OP_VERSIONS: dict[str, str] = {"oldest": OLDEST_OP, "current": CURRENT_OP}

KNOWN_ID = "amzn1.application-oa2-client.5f0c1d2e3a4b49c6ID42"
KNOWN_SECRET = "SECRETsecretAAAAbbbbCCCCddddEEEE1111secret"
ROTATED_SECRET = "ROTATEDrotatedFFFFggggHHHHiiii2222rotated"
KNOWN_VERSION = "3.1"
KNOWN_TAG = "ardatest-20"

#: The four fields as the file backend and ``validate`` take them.
KNOWN_FIELDS: dict[str, str] = {
    "credential_id": KNOWN_ID,
    "credential_secret": KNOWN_SECRET,
    "version": KNOWN_VERSION,
    "partner_tag": KNOWN_TAG,
}


def make_op_token(email: str = "test-sa@1passwordserviceaccounts.com") -> str:
    """A well-formed service account token: ``ops_`` + base64url JSON, as 1Password issues."""
    body = {
        "signInAddress": "my.1password.com",
        "userAuth": {"method": "SRPg-4096", "alg": "PBES2g-HS256", "iterations": 650000},
        "email": email,
        "srpX": "9f1b" * 16,
        "muk": {"alg": "A256GCM", "ext": True, "k": "TOKENKEYMATERIAL" * 3, "kty": "oct"},
        "secretKey": "A3-TOKENSECRETKEY-XXXXXX",
    }
    raw = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    return "ops_" + raw


KNOWN_OP_TOKEN = make_op_token()
#: Well-formed, but not the one the fake 1Password accepts (revoked or expired).
REVOKED_OP_TOKEN = make_op_token("revoked-sa@1passwordserviceaccounts.com")

#: Every value no output may ever contain.
SECRETS: tuple[str, ...] = (KNOWN_SECRET, ROTATED_SECRET, KNOWN_OP_TOKEN, REVOKED_OP_TOKEN)


def assert_no_secret(*texts: object) -> None:
    """Fail when any text (str/repr taken) contains a known secret or a part of the token."""
    for text in texts:
        blob = text if isinstance(text, str) else f"{text!s}\n{text!r}"
        for secret in SECRETS:
            assert secret not in blob, f"secret leaked: {blob[:300]!r}"
        # A 20-character window of the token's payload is as bad as the whole token.
        for token in (KNOWN_OP_TOKEN, REVOKED_OP_TOKEN):
            payload = token[4:]
            for start in range(0, len(payload) - 20, 10):
                assert payload[start : start + 20] not in blob, "token fragment leaked"
        # The full id is not secret, but only its last 4 characters may ever be shown.
        assert KNOWN_ID not in blob, f"full credential id shown: {blob[:300]!r}"


OP_LABELS = {
    "credential_id": "credential-id",
    "credential_secret": "credential-secret",
    "version": "version",
    "partner_tag": "partner-tag",
}


class FakeOp:
    """Controls the fake ``op``: its state file (read at every run), its run log and the
    op version it emulates."""

    def __init__(self, directory: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self._monkeypatch = monkeypatch
        self.version = CURRENT_OP
        self.state_path = directory / "op-state.json"
        self.log_path = directory / "op-runs.jsonl"
        self.vault = "Arda-DevOAM"
        self.item = "Amazon Creators API"
        self.state: dict[str, Any] = {
            "token": KNOWN_OP_TOKEN,
            "vaults": {
                self.vault: [
                    {
                        "id": "pk3iq2c7gkbspnyuqqvwmyhdla",
                        "title": self.item,
                        "fields": {OP_LABELS[k]: v for k, v in KNOWN_FIELDS.items()},
                    }
                ]
            },
        }
        self.save()

    def add_partition_vaults(self) -> None:
        """Put the default item into every partition's vault (``Arda-{P}OAM``), each with
        its own id, as devOps does before a deploy (docs/runbook.md, 2.1)."""
        template = self.state["vaults"][self.vault][0]
        for partition in ("Dev", "Stage", "Demo", "Prod"):
            self.state["vaults"][f"Arda-{partition}OAM"] = [
                {**template, "id": f"{partition.lower():x<26}", "fields": dict(template["fields"])}
            ]
        self.save()

    def partition_fields(self, partition: str) -> dict[str, Any]:
        """The labelled fields of ``Arda-{partition}OAM``'s item (edit, then :meth:`save`)."""
        fields: dict[str, Any] = self.state["vaults"][f"Arda-{partition}OAM"][0]["fields"]
        return fields

    @property
    def fields(self) -> dict[str, Any]:
        """The labelled fields of the default item (edit, then :meth:`save`)."""
        fields: dict[str, Any] = self.state["vaults"][self.vault][0]["fields"]
        return fields

    def set_field(self, label: str, value: str | None) -> None:
        """Change (``None``: empty) one field of the default item, at once."""
        self.fields[label] = value
        self.save()

    def remove_field(self, label: str) -> None:
        del self.fields[label]
        self.save()

    def update(self, **changes: Any) -> None:
        """Change top-level state keys (``sleep``, ``offline``, ``stdout`` …), at once."""
        self.state.update(changes)
        self.save()

    def save(self) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state), encoding="utf-8")
        tmp.replace(self.state_path)  # atomic: a concurrent run never reads half a file

    def use_version(self, version: str) -> None:
        """Emulate op ``version`` from now on (and forget the version probed before)."""
        from arda_amazon_bp.backends import op_cli

        assert self._monkeypatch is not None
        self._monkeypatch.setenv("FAKE_OP_VERSION", version)
        self.version = version
        op_cli.forget_versions()

    @property
    def reveals(self) -> bool:
        """Whether this version conceals values unless told ``--reveal`` (2.30+)."""
        return tuple(int(p) for p in self.version.split(".")) >= (2, 30, 0)

    @property
    def item_runs(self) -> list[list[str]]:
        """The ``op item get`` runs (without the ``op --version`` probes)."""
        return [argv for argv in self.runs if argv[:2] == ["item", "get"]]

    @property
    def runs(self) -> list[list[str]]:
        """The argv (after ``op``) of every run so far."""
        if not self.log_path.exists():
            return []
        lines = self.log_path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["argv"] for line in lines if line.strip()]

    @property
    def config(self) -> dict[str, Any]:
        """App config selecting this fake's vault and item."""
        return {"AMAZON_PARTITION": "Dev", "AMAZON_CREDENTIALS_BACKEND": "onepassword"}


@pytest.fixture
def fake_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeOp:
    """The fake ``op`` first on PATH, a valid ``OP_SERVICE_ACCOUNT_TOKEN``, default item."""
    bin_dir = tmp_path / "fake-op-bin"
    bin_dir.mkdir()
    (bin_dir / "op").symlink_to(FAKE_OP)
    # The shebang says "env python3": make that this interpreter, whatever PATH holds.
    (bin_dir / "python3").symlink_to(sys.executable)
    fake = FakeOp(tmp_path, monkeypatch)
    fake.use_version(CURRENT_OP)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_OP_STATE", str(fake.state_path))
    monkeypatch.setenv("FAKE_OP_LOG", str(fake.log_path))
    monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", KNOWN_OP_TOKEN)
    for name in ("OP_CONNECT_HOST", "OP_CONNECT_TOKEN", "AMAZON_ONEPASSWORD_VAULT"):
        monkeypatch.delenv(name, raising=False)
    return fake


class CredentialsFile:
    """A credentials JSON file, owner-only by default."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(
        self, fields: Mapping[str, Any] | None = None, *, raw: str | None = None, mode: int = 0o600
    ) -> Path:
        """Replace the file (atomically, like a secret mount) and set its mode."""
        text = (
            raw if raw is not None else json.dumps(dict(KNOWN_FIELDS if fields is None else fields))
        )
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(mode)
        tmp.replace(self.path)
        return self.path

    @property
    def mode(self) -> int:
        return stat.S_IMODE(self.path.stat().st_mode)

    @property
    def config(self) -> dict[str, Any]:
        return {"AMAZON_CREDENTIALS_BACKEND": "file", "AMAZON_CREDENTIALS_FILE": str(self.path)}


@pytest.fixture
def credentials_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CredentialsFile:
    """``KNOWN_FIELDS`` in an owner-only JSON file (``AMAZON_CREDENTIALS_FILE`` not exported)."""
    monkeypatch.delenv("AMAZON_CREDENTIALS_FILE", raising=False)
    handle = CredentialsFile(tmp_path / "amazon-credentials.json")
    handle.write()
    return handle


@pytest.fixture
def env_credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The four ``AMAZON_CREATORS_*`` variables set to ``KNOWN_FIELDS``; returns them."""
    variables = {f"AMAZON_CREATORS_{name.upper()}": value for name, value in KNOWN_FIELDS.items()}
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return variables
