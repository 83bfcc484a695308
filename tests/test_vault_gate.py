"""``arda-amazon check-vaults`` (``python -m arda_amazon_bp check-vaults``): the pre-deploy
vault gate, against the fake ``op`` holding the four partition vaults."""

# Fixtures are imported by name, then requested by name as arguments:
# ruff: noqa: F811

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_OP_TOKEN,
    KNOWN_TAG,
    OP_VERSIONS,
    FakeOp,
    assert_no_secret,
)
from fixtures_credentials import fake_op as plain_fake_op  # noqa: F401 - a fixture

from arda_amazon_bp.__main__ import main
from arda_amazon_bp.vault_gate import check_vaults

ROOT = Path(__file__).resolve().parent.parent
ALL = ["Dev", "Stage", "Demo", "Prod"]


@pytest.fixture(params=list(OP_VERSIONS.values()), ids=list(OP_VERSIONS))
def fake_op(plain_fake_op: FakeOp, request: pytest.FixtureRequest) -> FakeOp:
    """The fake op in each emulated version, with the item in all four partition vaults."""
    plain_fake_op.use_version(request.param)
    plain_fake_op.add_partition_vaults()
    return plain_fake_op


@pytest.fixture(autouse=True)
def no_app_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate runs in CI without the BFF: no FLASK_APP, no AMAZON_* setting."""
    for name in list(os.environ):
        if name.startswith(("AMAZON_", "FLASK_")):
            monkeypatch.delenv(name)


def gate(*args: str) -> Result:
    result = CliRunner().invoke(main, ["check-vaults", *args])
    assert_no_secret(result.output, result.stdout, result.stderr)
    return result


def body(result: Result) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def test_all_four_partitions_ok(fake_op: FakeOp) -> None:
    result = gate()
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[:3] for line in lines[:4]] == [[p, f"Arda-{p}OAM", "OK"] for p in ALL]
    assert f"partner tag {KNOWN_TAG}, credential id …ID42" in lines[0]
    assert lines[4] == "OK: 4 of 4 partitions' vaults are ready"
    assert len(fake_op.item_runs) == 4
    assert {argv[4] for argv in fake_op.item_runs} == {f"Arda-{p}OAM" for p in ALL}


def test_json_shape(fake_op: FakeOp) -> None:
    result = gate("--json")
    assert result.exit_code == 0
    data = body(result)
    assert set(data) == {"ok", "partitions"}
    assert data["ok"] is True
    assert data["partitions"][0] == {
        "partition": "Dev",
        "vault": "Arda-DevOAM",
        "item": "Amazon Creators API",
        "ok": True,
        "problem": None,
        "version": KNOWN_FIELDS["version"],
        "region": "NA",
        "partnerTag": KNOWN_TAG,
        "credentialId": "…ID42",
    }
    assert [p["partition"] for p in data["partitions"]] == ALL


@pytest.mark.parametrize(
    ("break_it", "problem"),
    [
        (
            lambda f: f.update(granted=["Arda-DevOAM", "Arda-DemoOAM", "Arda-ProdOAM"]),
            "cannot access it",
        ),
        (lambda f: f.partition_fields("Stage").pop("partner-tag"), "field labelled partner-tag"),
        (lambda f: f.partition_fields("Stage").update(version="4.1"), "'4.1', not one of"),
        (
            lambda f: f.partition_fields("Stage").update({"partner-tag": "not a tag"}),
            "not shaped like",
        ),
        (lambda f: f.partition_fields("Stage").update(version="3.2"), "serves region EU, but"),
    ],
    ids=["not-granted", "field-missing", "bad-version", "bad-tag", "wrong-region"],
)
def test_one_broken_vault_among_four_fails_and_lists_all(
    fake_op: FakeOp, break_it: Any, problem: str
) -> None:
    break_it(fake_op)
    fake_op.save()
    result = gate("--json")
    assert result.exit_code == 1
    data = body(result)
    assert data["ok"] is False
    assert [(p["partition"], p["ok"]) for p in data["partitions"]] == [
        ("Dev", True),
        ("Stage", False),
        ("Demo", True),
        ("Prod", True),
    ]
    stage = data["partitions"][1]
    assert problem in stage["problem"]
    assert all(p["problem"] is None for p in data["partitions"] if p["ok"])

    text = gate()
    assert text.exit_code == 1
    assert [line.split()[2] for line in text.stdout.splitlines()] == ["OK", "FAIL", "OK", "OK"]
    assert problem in text.stdout.splitlines()[1]
    assert text.stderr == "FAIL: 1 of 4 partitions not ready: Stage\n"


def test_partition_restricts_the_check(fake_op: FakeOp) -> None:
    fake_op.partition_fields("Prod").pop("credential-secret")
    fake_op.save()
    result = gate("--partition", "dev", "--partition", "Stage", "--partition", "DEV", "--json")
    assert result.exit_code == 0
    assert [p["vault"] for p in body(result)["partitions"]] == ["Arda-DevOAM", "Arda-StageOAM"]
    assert {argv[4] for argv in fake_op.item_runs} == {"Arda-DevOAM", "Arda-StageOAM"}
    assert gate("--partition", "Prod").exit_code == 1


def test_item_overrides_the_title(fake_op: FakeOp) -> None:
    result = gate("--item", "Amazon Creators API 2026", "--partition", "Dev", "--json")
    assert result.exit_code == 1
    partition = body(result)["partitions"][0]
    assert partition["item"] == "Amazon Creators API 2026"
    assert "item 'Amazon Creators API 2026' was not found" in partition["problem"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--partition", "Production"], "'Production' is not a partition"),
        (["--marketplace", "www.amazon.zz"], "not a known Amazon marketplace"),
    ],
)
def test_usage_errors_exit_2(fake_op: FakeOp, args: list[str], message: str) -> None:
    result = gate(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert fake_op.runs == []


def test_a_missing_token_fails_every_partition(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OP_SERVICE_ACCOUNT_TOKEN")
    data = body(gate("--json"))
    assert data["ok"] is False
    assert all("OP_SERVICE_ACCOUNT_TOKEN is not set" in p["problem"] for p in data["partitions"])


def test_nothing_secret_is_printed_even_when_op_quotes_it(fake_op: FakeOp) -> None:
    # An op failure that quotes the token and the secret: both are scrubbed.
    fake_op.update(stderr=f"odd {KNOWN_OP_TOKEN} {KNOWN_FIELDS['credential_secret']}", exit=1)
    for args in ([], ["--json"]):
        result = gate(*args)  # gate() asserts no secret, token fragment or full id
        assert result.exit_code == 1
    fake_op.update(stderr=None, exit=None)
    seen: list[Any] = []
    results = check_vaults(seen=seen)
    assert len(seen) == 4
    assert_no_secret(*[repr(r) for r in results], *[json.dumps(r.as_json()) for r in results])


def test_python_m_and_the_console_script_need_no_flask_app(fake_op: FakeOp, tmp_path: Path) -> None:
    fake_op.partition_fields("Demo").pop("version")
    fake_op.save()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMAZON_", "FLASK_"))}
    script = shutil.which("arda-amazon", path=str(Path(sys.executable).parent))
    assert script is not None, "pip install -e . installs the arda-amazon console script"
    for command in ([sys.executable, "-m", "arda_amazon_bp"], [script]):
        done = subprocess.run(
            [*command, "check-vaults", "--json"],
            env=env,
            # Not the checkout: `-m` puts the working directory first on sys.path, and the
            # source tree's arda_amazon_bp has no backends/ (setup.cfg maps it in).
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 1, done.stderr
        data = json.loads(done.stdout)
        assert [p["ok"] for p in data["partitions"]] == [True, True, False, True]
        assert_no_secret(done.stdout, done.stderr)


def test_every_served_store_is_checked_with_its_own_item(
    fake_op: FakeOp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dev has a UK item with an EU credential; Stage has none, so its NA default set is
    # checked for the UK and refused for its region.
    items = fake_op.state["vaults"]["Arda-DevOAM"]
    items.append(
        {
            **items[0],
            "id": "devgbxxxxxxxxxxxxxxxxxxxxx",
            "title": "Amazon Creators API (GB)",
            "fields": {**items[0]["fields"], "version": "3.2"},
        }
    )
    fake_op.save()
    monkeypatch.setenv("AMAZON_MARKETPLACES", "www.amazon.com,www.amazon.co.uk")

    result = gate("--partition", "Dev", "--partition", "Stage", "--json")

    data = body(result)
    assert result.exit_code == 1
    assert [
        (p["partition"], p["marketplace"], p["ok"], p["version"]) for p in data["partitions"]
    ] == [
        ("Dev", "www.amazon.com", True, KNOWN_FIELDS["version"]),
        ("Dev", "www.amazon.co.uk", True, "3.2"),
        ("Stage", "www.amazon.com", True, KNOWN_FIELDS["version"]),
        ("Stage", "www.amazon.co.uk", False, KNOWN_FIELDS["version"]),
    ]
    assert "marketplace www.amazon.co.uk is in region EU" in data["partitions"][3]["problem"]
