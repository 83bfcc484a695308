"""Documentation that cannot drift: the docs are checked against the code, and run.

Markers in the Markdown (HTML comments, invisible when rendered) say what to check:

``<!-- docs-check: table NAME -->``
    the table that follows is the documentation of a registry (``errors``,
    ``upstream-reasons``, ``config``) and is compared with it;
``<!-- docs-check: schema SCHEMA -->``
    the table that follows documents every field of marshmallow schema ``SCHEMA`` in
    :mod:`arda_amazon_bp.schemas` (name, type, nullability);
``<!-- docs-check: include PATH -->``
    the fenced block that follows is byte-identical to file ``PATH`` of the repository;
``<!-- docs-check: run [expect=TEXT …] [exit=N] -->``
    the ``sh`` block that follows is run with bash, exactly as written, and must exit
    ``N`` (default 0) with every ``TEXT`` in its output;
``<!-- docs-check: skip reason=TEXT -->``
    the ``sh`` block that follows is deliberately not run (every other ``sh`` block
    must be marked ``run``);
``<!-- docs-check: file NAME -->``
    the ``python`` block that follows is file ``NAME`` of a host project: the files of
    one document are written into an empty directory and its ``test_*.py`` files are run
    there with pytest, as a host would run them (every ``python`` block of
    docs/testing-your-integration.md must be one).

Runnable blocks run against the sandbox Creators API (over loopback HTTP), the example
BFF and a fake ``op``: ``flask`` commands in a shell with ``FLASK_APP`` naming the
example BFF (as an operator's shell names theirs) and the sandbox's credentials in the
environment; ``curl`` commands against a loopback example BFF, the documented demo
address ``http://127.0.0.1:5000`` replaced by the test server's.

Each registry check is a function taking the registry, so the drift tests at the end
can feed it a mutated copy and prove it reports what is undocumented.
"""

from __future__ import annotations

import configparser
import fnmatch
import inspect
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import test_faults
from arda_amazon_bp.backends.op_cli import MINIMUM_VERSION as MINIMUM_OP
from arda_amazon_bp.backends.op_cli import REVEAL_VERSION as REVEAL_OP
from fixtures_credentials import FAKE_OP, make_op_token
from fixtures_demo import READY, RunningDemo
from fixtures_sandbox import SandboxHandle
from flask import Flask
from marshmallow import Schema, fields

from arda_amazon_bp import hookspecs, products, schemas
from arda_amazon_bp.config import DEFAULTS
from arda_amazon_bp.errors import ERROR_STATUSES, ErrorCode, UpstreamReason
from arda_amazon_bp.links import SHORT_LINK_HOSTS, parse_product_link
from arda_amazon_bp.marketplaces import MARKETPLACES, UNSUPPORTED_STORES
from arda_amazon_bp.testing import sandbox as cs
from arda_amazon_bp.tokens import TOKEN_SCOPES, TOKEN_URLS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_MD = DOCS / "api.md"
CONFIG_MD = DOCS / "configuration.md"
RUNBOOK_MD = DOCS / "runbook.md"
PLUGINS_MD = DOCS / "plugins.md"
RELIABILITY_MD = DOCS / "reliability.md"
PERFORMANCE_MD = DOCS / "performance.md"
SUITE_MD = DOCS / "testing.md"
TESTING_MD = DOCS / "testing-your-integration.md"
METRICS_MD = DOCS / "metrics.md"
SECURITY_MD = DOCS / "security.md"
DOC_FILES = (
    API_MD,
    CONFIG_MD,
    RUNBOOK_MD,
    PLUGINS_MD,
    RELIABILITY_MD,
    PERFORMANCE_MD,
    SUITE_MD,
    TESTING_MD,
    METRICS_MD,
    SECURITY_MD,
)
README = ROOT / "README.md"
PLUGIN_EXAMPLE = ROOT / "examples" / "plugin_example"

#: The address the docs show for the demo BFF; replaced by the test server's.
DEMO_BASE = "http://127.0.0.1:5000"
#: A sandbox catalog item with every core field, used by the smoke command.
SANDBOX_ASIN = "B0C7NTRL01"
COMMAND_TIMEOUT = 60

# --- Markdown: marked blocks and tables ---------------------------------------------------

_MARKER = re.compile(r"^<!--\s*docs-check:\s*(?P<kind>[a-z-]+)\s*(?P<args>.*?)\s*-->$")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass
class Block:
    """A marked fenced block or table of a Markdown file."""

    path: Path
    line: int  # 1-based line of the marker
    kind: str
    args: list[str]
    lang: str | None = None  # fenced blocks only
    body: str = ""  # the fenced content (exact) or the table's lines
    sample: str | None = None  # a ```text block right after a fenced block: its output

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def options(self, name: str) -> list[str]:
        """Values of ``name=…`` arguments, in order."""
        prefix = name + "="
        return [arg[len(prefix) :] for arg in self.args if arg.startswith(prefix)]


def marked_blocks(path: Path) -> list[Block]:
    """Every ``docs-check`` marker of ``path`` with the fenced block or table after it."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        match = _MARKER.match(line.strip())
        if not match:
            continue
        block = Block(path, index + 1, match["kind"], shlex.split(match["args"]))
        following = lines[index + 1] if index + 1 < len(lines) else ""
        fence = _FENCE.match(following.strip())
        if fence:
            end = next(
                (j for j in range(index + 2, len(lines)) if lines[j].rstrip("\n") == "```"),
                None,
            )
            assert end is not None, f"{block.where}: unclosed fence"
            block.lang = fence["lang"]
            block.body = "".join(lines[index + 2 : end])
            rest = lines[end + 1 : end + 3]
            if rest and not rest[0].strip() and len(rest) > 1 and rest[1].strip() == "```text":
                close = next(j for j in range(end + 3, len(lines)) if lines[j].strip() == "```")
                block.sample = "".join(lines[end + 3 : close])
        elif following.startswith("|"):
            table = []
            for row in lines[index + 1 :]:
                if not row.startswith("|"):
                    break
                table.append(row)
            block.body = "".join(table)
        blocks.append(block)
    return blocks


def fenced_blocks(path: Path, lang: str) -> list[tuple[int, str]]:
    """(line of the opening fence, content) of every ``lang`` block of ``path``."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    found: list[tuple[int, str]] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index].strip())
        if fence:
            end = next(j for j in range(index + 1, len(lines)) if lines[j].strip() == "```")
            if fence["lang"] == lang:
                found.append((index + 1, "".join(lines[index + 1 : end])))
            index = end
        index += 1
    return found


def split_row(row: str) -> list[str]:
    cells = row.strip().strip("|").split("|")
    return [cell.strip() for cell in cells]


def parse_table(text: str) -> list[dict[str, str]]:
    """The Markdown table ``text`` starts with, as dicts keyed by lowercased header cells."""
    rows = []
    for line in text.splitlines():
        if not line.lstrip().startswith("|"):
            break
        rows.append(line)
    assert len(rows) >= 2, f"not a table: {text!r}"
    header = [cell.lower() for cell in split_row(rows[0])]
    return [dict(zip(header, split_row(row), strict=True)) for row in rows[2:]]


def code_value(cell: str) -> str:
    """The first `code span` of a cell, or the cell itself."""
    match = re.search(r"`([^`]*)`", cell)
    return match.group(1) if match else cell


def doc_table(path: Path, kind: str, name: str) -> list[dict[str, str]]:
    blocks = [b for b in marked_blocks(path) if b.kind == kind and b.args[:1] == [name]]
    assert len(blocks) == 1, f"{path.name}: expected one `docs-check: {kind} {name}` table"
    assert blocks[0].body, f"{blocks[0].where}: the marker is not followed by a table"
    return parse_table(blocks[0].body)


# --- the checkers (each takes the registry, so a test can feed it a mutated copy) ---------


def error_table_problems(statuses: Mapping[str, int], rows: list[dict[str, str]]) -> list[str]:
    """Codes missing from the error table, documented with another status, or stale."""
    documented: dict[str, str] = {code_value(row["code"]): row["status"] for row in rows}
    problems = []
    for code, status in statuses.items():
        if code not in documented:
            problems.append(f"error code {code} ({status}) is not in the error table")
        elif not re.match(rf"^{status}\b", documented[code]):
            problems.append(
                f"error code {code}: documented {documented[code]!r}, code says {status}"
            )
    problems += [
        f"error table lists {code}, which the code does not have"
        for code in documented
        if code not in statuses
    ]
    return problems


def value_table_problems(
    values: Iterable[str], rows: list[dict[str, str]], column: str, what: str
) -> list[str]:
    """Values missing from a one-value-per-row table, or listed there but unknown."""
    wanted = list(values)
    documented = [code_value(row[column]) for row in rows]
    problems = [
        f"{what} {value!r} is not documented" for value in wanted if value not in documented
    ]
    problems += [
        f"{what} {value!r} is documented but unknown to the code"
        for value in documented
        if value not in wanted
    ]
    return problems


#: marshmallow field class -> the word its type cell must contain.
_TYPE_WORDS: tuple[tuple[type[fields.Field], str], ...] = (
    (fields.Nested, "object"),
    (fields.Dict, "object"),
    (fields.List, "array"),
    (fields.Integer, "integer"),
    (fields.Float, "number"),
    (fields.Boolean, "boolean"),
    (fields.String, "string"),
)


def schema_fields(schema: type[Schema]) -> dict[str, fields.Field]:
    declared: dict[str, fields.Field] = schema._declared_fields
    return dict(declared)


def schema_table_problems(schema: type[Schema], rows: list[dict[str, str]]) -> list[str]:
    """Fields of ``schema`` missing from its table, with a wrong type or nullability."""
    name = schema.__name__
    documented = {code_value(row["field"]): row for row in rows}
    problems = []
    for field_name, declared in schema_fields(schema).items():
        row = documented.get(field_name)
        if row is None:
            problems.append(f"{name}.{field_name} is not in its field table")
            continue
        nullable = row.get("nullable", "").lower()
        if nullable not in ("yes", "no"):
            problems.append(f"{name}.{field_name}: nullable must be yes or no, not {nullable!r}")
        elif (nullable == "yes") != declared.allow_none:
            problems.append(
                f"{name}.{field_name}: documented nullable={nullable}, "
                f"schema allow_none={declared.allow_none}"
            )
        word = next((w for cls, w in _TYPE_WORDS if isinstance(declared, cls)), None)
        if word is not None and word not in row.get("type", ""):
            problems.append(f"{name}.{field_name}: type {row.get('type')!r} should say {word}")
    problems += [
        f"{name}: the table lists {field_name}, which the schema does not have"
        for field_name in documented
        if field_name not in schema_fields(schema)
    ]
    return problems


def render_default(value: Any) -> str:
    """How configuration.md writes a default: `value`, or — for none."""
    return "—" if value is None else f"`{value}`"


def config_table_problems(defaults: Mapping[str, Any], rows: list[dict[str, str]]) -> list[str]:
    """Keys missing from the config table, shown with another default, or stale."""
    documented = {code_value(row["key"]): row["default"] for row in rows}
    problems = []
    for key, value in defaults.items():
        if key not in documented:
            problems.append(f"config key {key} is not in the configuration table")
        elif not documented[key].startswith(render_default(value)):
            problems.append(
                f"config key {key}: documented default {documented[key]!r}, "
                f"code says {render_default(value)}"
            )
    problems += [
        f"configuration table lists {key}, which DEFAULTS does not have"
        for key in documented
        if key not in defaults
    ]
    return problems


def hookspecs_of(module: Any) -> dict[str, Callable[..., Any]]:
    """Every function of ``module`` marked as an ``arda_amazon_bp`` hookspec."""
    marker = f"{hookspecs.PROJECT_NAME}_spec"
    return {
        name: function
        for name, function in vars(module).items()
        if callable(function) and hasattr(function, marker)
    }


def hook_problems(hooks: Mapping[str, Callable[..., Any]], plugins_md: str) -> list[str]:
    """Hooks without a docstring or without a ``### `name(args)` `` section."""
    problems = []
    for name, function in hooks.items():
        if not inspect.getdoc(function):
            problems.append(f"hookspec {name} has no docstring")
        arguments = ", ".join(inspect.signature(function).parameters)
        heading = f"### `{name}({arguments})`"
        if heading not in plugins_md.splitlines():
            problems.append(f"hook {name} has no section {heading!r} in plugins.md")
    return problems


def cli_problems(commands: Iterable[str], blocks: list[Block]) -> list[str]:
    """CLI commands no runnable block of the runbook runs."""
    ran = "\n".join(block.body for block in blocks if block.kind == "run")
    return [
        f"`flask amazon {name}` is not in a runnable block of runbook.md"
        for name in commands
        if not re.search(rf"\bflask amazon {re.escape(name)}\b", ran)
    ]


#: How the runbook may run a console command (``arda-amazon NAME``); both forms must appear.
CONSOLE_FORMS = ("arda-amazon", "python -m arda_amazon_bp")


def console_problems(commands: Mapping[str, Any], blocks: list[Block]) -> list[str]:
    """Console commands (``arda_amazon_bp.__main__.main``) no runnable block of the
    runbook runs, in each of :data:`CONSOLE_FORMS`."""
    ran = "\n".join(block.body for block in blocks if block.kind == "run")
    return [
        f"`{form} {name}` is not in a runnable block of runbook.md"
        for name in commands
        for form in CONSOLE_FORMS
        if not re.search(rf"(?<![\w-]){re.escape(form)} {re.escape(name)}\b", ran)
    ]


def option_problems(prefix: str, commands: Mapping[str, Any], text: str) -> list[str]:
    """Long options of click ``commands`` that ``text`` (the runbook) never names."""
    return [
        f"option {option} of `{prefix} {name}` is not documented in runbook.md"
        for name, command in commands.items()
        for param in command.params
        for option in param.opts
        if option.startswith("--")
        and not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text)
    ]


def config_keys_in_code(sources: Iterable[Path]) -> set[str]:
    """``AMAZON_*`` names the package reads, besides DEFAULTS (error codes excluded)."""
    codes = {code.value for code in ErrorCode}
    found: set[str] = set()
    for source in sources:
        found.update(
            re.findall(r"\b(AMAZON_[A-Z0-9_]*[A-Z0-9])\b", source.read_text(encoding="utf-8"))
        )
    return {name for name in found if name not in codes}


def _fault_cells(row: test_faults.Row) -> dict[str, str]:
    """How reliability.md writes a matrix row's status, code, details and calls."""
    return {
        "status": str(row.status),
        "code": row.code or "—",
        "details": ", ".join(f"{k}={v}" for k, v in row.details.items()) or "—",
        "calls": " → ".join(f"{kind}:{outcome}" for kind, outcome in row.calls),
    }


def _documented_fault_cells(doc_row: dict[str, str]) -> dict[str, str]:
    status = re.match(r"\**(\d{3})", doc_row["status"])
    return {
        "status": status.group(1) if status else doc_row["status"],
        # "—" (maybe with a remark) where the answer is a product, not an error
        "code": "—" if doc_row["code"].startswith("—") else code_value(doc_row["code"]),
        "details": "—"
        if doc_row["`details`"].startswith("—")
        else code_value(doc_row["`details`"]),
        # a remark in parentheses may follow the calls
        "calls": doc_row["upstream calls logged"].split(" (", 1)[0].strip(),
    }


def fault_table_problems(
    rows: Iterable[test_faults.Row], doc_rows: list[dict[str, str]], test_names: set[str]
) -> list[str]:
    """Matrix rows missing from reliability.md's fault table, shown differently, or stale."""
    documented: dict[str, dict[str, str]] = {}
    problems = []
    for doc_row in doc_rows:
        ids = re.findall(r"`test_fault_matrix\[([^\]]+)\]`", doc_row["test"])
        for name in ids:
            documented[name] = doc_row
        if not ids:  # a row backed by its own test function
            for name in re.findall(r"`(test_\w+)`", doc_row["test"]) or [doc_row["test"]]:
                if name not in test_names:
                    problems.append(f"fault table names {name}, which tests/test_faults.py lacks")
    wanted = {row.name: row for row in rows}
    for name, row in wanted.items():
        if name not in documented:
            problems.append(f"fault {name!r} of test_faults.ROWS is not in the fault table")
            continue
        shown, expected = _documented_fault_cells(documented[name]), _fault_cells(row)
        problems += [
            f"fault {name!r}: {column} documented {shown[column]!r}, ROWS says {value!r}"
            for column, value in expected.items()
            if shown[column] != value
        ]
    problems += [
        f"fault table lists test_fault_matrix[{name}], which test_faults.ROWS does not have"
        for name in documented
        if name not in wanted
    ]
    return problems


def op_version(version: tuple[int, int, int]) -> str:
    """``(2, 18, 0)`` → ``"2.18"``: how the runbook names a minimum op version."""
    return f"{version[0]}.{version[1]}"


# --- registries against the docs ------------------------------------------------------------


def test_every_error_code_is_in_the_error_table_with_its_status() -> None:
    assert set(ERROR_STATUSES) == set(ErrorCode)
    statuses = {code.value: status for code, status in ERROR_STATUSES.items()}
    assert error_table_problems(statuses, doc_table(API_MD, "table", "errors")) == []


def test_every_upstream_reason_is_documented() -> None:
    rows = doc_table(API_MD, "table", "upstream-reasons")
    problems = value_table_problems((r.value for r in UpstreamReason), rows, "reason", "reason")
    assert problems == []


def _schemas() -> list[type[Schema]]:
    return [
        obj
        for name, obj in vars(schemas).items()
        if inspect.isclass(obj) and issubclass(obj, Schema) and name.startswith("AmazonImport")
    ]


@pytest.mark.parametrize("schema", _schemas(), ids=lambda s: s.__name__)
def test_every_schema_field_is_documented(schema: type[Schema]) -> None:
    rows = doc_table(API_MD, "schema", schema.__name__)
    assert schema_table_problems(schema, rows) == []


def test_the_product_schema_is_documented_field_by_field() -> None:
    # The contract's response: every field present; only the core fields decide 206.
    rows = doc_table(API_MD, "schema", "AmazonImportProductSchema")
    documented = [code_value(row["field"]) for row in rows]
    assert documented == list(schema_fields(schemas.AmazonImportProductSchema))
    core = [
        name
        for name in documented
        if "**Core.**" in next(r for r in rows if code_value(r["field"]) == name)["meaning"]
    ]
    assert core == list(products.CORE_FIELDS)


def test_reliability_fault_table_matches_the_fault_matrix() -> None:
    tests = {name for name in vars(test_faults) if name.startswith("test_")}
    rows = doc_table(RELIABILITY_MD, "table", "faults")
    assert fault_table_problems(test_faults.ROWS, rows, tests) == []


def test_reliability_md_counts_the_secret_scenarios_and_names_no_open_leak() -> None:
    import test_secrets

    text = RELIABILITY_MD.read_text(encoding="utf-8")
    counted = re.search(r"^(\d+) scenarios, each run with", text, re.MULTILINE)
    assert counted, "reliability.md, section Secrets: '<n> scenarios, each run with …'"
    assert int(counted.group(1)) == len(test_secrets.SCENARIOS)
    known = [s for s in test_secrets.SCENARIOS if s.known_leak]
    # An open leak is a strict xfail in test_secrets.py and an **Open:** note here.
    assert ("**Open:**" in text.split("## 5. Secrets")[1].split("\n## ")[0]) == bool(known)


def test_every_config_key_is_in_the_configuration_table_with_its_default() -> None:
    assert config_table_problems(DEFAULTS, doc_table(CONFIG_MD, "table", "config")) == []


def test_every_amazon_setting_the_code_reads_is_documented() -> None:
    sources = [*(ROOT / "arda_amazon_bp").glob("*.py"), *(ROOT / "backends").glob("*.py")]
    text = CONFIG_MD.read_text(encoding="utf-8")
    missing = sorted(name for name in config_keys_in_code(sources) if f"`{name}" not in text)
    assert missing == []


def test_every_hookspec_has_a_docstring_and_a_section_in_plugins_md() -> None:
    hooks = hookspecs_of(hookspecs)
    assert {"arda_amazon_authenticate", "arda_amazon_credential_backends"} <= set(hooks)
    assert hook_problems(hooks, PLUGINS_MD.read_text(encoding="utf-8")) == []


def test_every_cli_command_is_run_by_the_runbook() -> None:
    from arda_amazon_bp.cli import amazon_cli

    assert {"check-credentials", "smoke", "quota"} <= set(amazon_cli.commands)
    assert cli_problems(amazon_cli.commands, marked_blocks(RUNBOOK_MD)) == []


def test_every_console_command_and_option_is_in_the_runbook() -> None:
    from arda_amazon_bp.__main__ import main
    from arda_amazon_bp.cli import amazon_cli

    assert "check-vaults" in main.commands
    runbook = RUNBOOK_MD.read_text(encoding="utf-8")
    assert console_problems(main.commands, marked_blocks(RUNBOOK_MD)) == []
    assert option_problems("arda-amazon", main.commands, runbook) == []
    assert option_problems("flask amazon", amazon_cli.commands, runbook) == []


def test_the_console_script_is_the_documented_entry_point() -> None:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    scripts = parser["options.entry_points"]["console_scripts"].split("\n")
    assert "arda-amazon = arda_amazon_bp.__main__:main" in [s.strip() for s in scripts]


def test_drift_an_unrun_console_command_or_undocumented_option_is_reported() -> None:
    import click

    from arda_amazon_bp.__main__ import main

    blocks = marked_blocks(RUNBOOK_MD)
    commands = {**main.commands, "rotate-token": click.Command("rotate-token")}
    assert console_problems(commands, blocks) == [
        "`arda-amazon rotate-token` is not in a runnable block of runbook.md",
        "`python -m arda_amazon_bp rotate-token` is not in a runnable block of runbook.md",
    ]
    gate = main.commands["check-vaults"]
    extended = click.Command(
        "check-vaults", params=[*gate.params, click.Option(["--vault-prefix"])]
    )
    text = RUNBOOK_MD.read_text(encoding="utf-8")
    assert option_problems("arda-amazon", {"check-vaults": extended}, text) == [
        "option --vault-prefix of `arda-amazon check-vaults` is not documented in runbook.md"
    ]
    # "--partition" inside "--partitions" is not a mention of it.
    assert option_problems("arda-amazon", {"check-vaults": gate}, "--partitions --item") == [
        "option --partition of `arda-amazon check-vaults` is not documented in runbook.md",
        "option --marketplace of `arda-amazon check-vaults` is not documented in runbook.md",
        "option --json of `arda-amazon check-vaults` is not documented in runbook.md",
    ]


_TEST_REFERENCE = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)(?:\[[^\]`]*\])?`")


def named_tests(markdown: str) -> list[tuple[str, str]]:
    """Every ``tests/<file>.py::<test>`` a page names (parametrize ids dropped)."""
    return _TEST_REFERENCE.findall(markdown)


def missing_tests(references: Iterable[tuple[str, str]], root: Path = ROOT) -> list[str]:
    """References to a test file or a top-level test function that does not exist."""
    import ast

    defined: dict[str, set[str]] = {}
    problems = []
    for path, name in references:
        if path not in defined:
            source = root / path
            tree = ast.parse(source.read_text(encoding="utf-8")) if source.exists() else None
            defined[path] = {
                node.name
                for node in (tree.body if tree is not None else [])
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            }
        if name not in defined[path]:
            problems.append(f"{path}::{name} is named in security.md but does not exist")
    return problems


def test_every_test_named_in_security_md_exists() -> None:
    references = named_tests(SECURITY_MD.read_text(encoding="utf-8"))
    assert len(references) >= 40
    # Each actor of the threat model has its controls, each with a test.
    text = SECURITY_MD.read_text(encoding="utf-8")
    for actor in ("Anonymous caller", "Signed-in user", "Operator", "Amazon", "1Password"):
        assert f"### {actor}" in text, actor
    for suite in ("test_ssrf.py", "test_secrets.py", "test_hostile_input.py"):
        assert any(path == f"tests/{suite}" for path, _ in references), suite
    assert missing_tests(references) == []


def test_drift_a_test_named_in_security_md_that_is_gone_is_reported() -> None:
    references = named_tests(
        "`tests/test_blueprint.py::test_every_falsy_principal_is_401[False]` and "
        "`tests/test_blueprint.py::test_a_control_nobody_wrote` and "
        "`tests/test_nowhere.py::test_x`"
    )
    assert references[0] == ("tests/test_blueprint.py", "test_every_falsy_principal_is_401")
    assert missing_tests(references) == [
        "tests/test_blueprint.py::test_a_control_nobody_wrote is named in security.md but "
        "does not exist",
        "tests/test_nowhere.py::test_x is named in security.md but does not exist",
    ]


def test_headers_details_and_the_vault_layout_are_documented() -> None:
    api = API_MD.read_text(encoding="utf-8")
    for name in (
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "X-Request-ID",
        "Retry-After",
        "WWW-Authenticate",
    ):
        assert f"`{name}`" in api
    for key in ("requestId", "source", "retryAfter", "limit", "reason", "fields"):
        assert f"`{key}`" in api
    runbook = RUNBOOK_MD.read_text(encoding="utf-8")
    from arda_amazon_bp.backends import onepassword

    for partition in onepassword.PARTITIONS:
        assert f"`{onepassword.VAULT_TEMPLATE.format(partition=partition)}`" in runbook
    for label in onepassword.LABELS:
        assert f"`{label}`" in runbook
    assert f"**`{onepassword.DEFAULT_ITEM}`**" in runbook
    assert "`OP_SERVICE_ACCOUNT_TOKEN`" in runbook
    assert "amazon_upstream_event event=associate_not_eligible" in runbook
    # The deploy story: where the token lives, what it reads, the gate, the supported op.
    for text in (
        "GitHub organisation secret",
        "`amm.yml`",
        "`Arda-SystemsOAM`",
        "Gate 1c",
        "us-east-2",
        "`amm.sh --region us-east-2 …`",
        "### 3.3 Rotating `OP_SERVICE_ACCOUNT_TOKEN`",
        "**Annual sales requirement**",
        "**Sponsored-affiliate-content rule**",
        f"1Password CLI {op_version(MINIMUM_OP)} or later",
        f"passes `--reveal` exactly from {op_version(REVEAL_OP)} on",
    ):
        assert text in runbook, text


def test_the_link_forms_match_the_parser() -> None:
    api = API_MD.read_text(encoding="utf-8")
    section = api[api.index("## Link forms") : api.index("## OpenAPI")]
    for host in MARKETPLACES:
        assert f"`{host}`" in section, host
    refused = {
        code_value(row["code"]): row["links"]
        for row in parse_table(section[section.index("| code | links |") :])
    }
    for host in SHORT_LINK_HOSTS:
        assert f"`{host}`" in refused["UNSUPPORTED_SHORT_LINK"], host
    for store in UNSUPPORTED_STORES:
        assert f"`{store}`" in refused["UNSUPPORTED_AMAZON_LOCALE"], store
    shapes = parse_table(section[section.index("| shape | example |") :])
    assert len(shapes) >= 10
    for row in shapes:
        url = code_value(row["example"])
        ref = parse_product_link(url)
        assert ref.asin in url.upper(), url


# --- includes and the rule that every sh block is run or knowingly skipped ---------------------


def test_every_marker_is_understood() -> None:
    # A typo in a marker would silently drop a check.
    tables = {
        "errors": API_MD,
        "upstream-reasons": API_MD,
        "config": CONFIG_MD,
        "faults": RELIABILITY_MD,
    }
    schema_names = {schema.__name__ for schema in _schemas()}
    for path in DOC_FILES:
        for block in marked_blocks(path):
            assert block.kind in ("table", "schema", "include", "run", "skip", "file"), block.where
            if block.kind == "file":
                assert block.lang == "python" and len(block.args) == 1, block.where
            if block.kind == "table":
                assert tables.get(block.args[0]) == path, block.where
            if block.kind == "schema":
                assert block.args[0] in schema_names, block.where
            if block.kind in ("table", "schema"):
                assert block.body.startswith("|"), f"{block.where}: no table after the marker"
            else:
                assert block.lang is not None, f"{block.where}: no fenced block after the marker"


def test_included_files_are_byte_identical() -> None:
    includes = [b for path in DOC_FILES for b in marked_blocks(path) if b.kind == "include"]
    assert {b.args[0] for b in includes} >= {
        "examples/plugin_example/arda_example_plugin.py",
        "examples/plugin_example/setup.cfg",
        "examples/plugin_example/pyproject.toml",
    }
    for block in includes:
        assert block.body == (ROOT / block.args[0]).read_text(encoding="utf-8"), block.where


def test_every_sh_block_is_run_or_knowingly_skipped() -> None:
    for path in DOC_FILES:
        marked = {b.line + 1: b for b in marked_blocks(path) if b.lang is not None}
        for line, _ in fenced_blocks(path, "sh"):
            block = marked.get(line)
            assert block is not None and block.kind in ("run", "skip"), (
                f"{path.name}:{line}: mark this sh block "
                "`docs-check: run` or `docs-check: skip reason=…`"
            )
            if block.kind == "skip":
                assert block.options("reason"), f"{block.where}: say why it is skipped"


# --- drift: the checkers report a mutated copy of each registry -------------------------------


def test_drift_an_undocumented_error_code_or_status_is_reported() -> None:
    rows = doc_table(API_MD, "table", "errors")
    statuses = {code.value: status for code, status in ERROR_STATUSES.items()}
    added = {**statuses, "AMAZON_ITEM_RECALLED": 410}
    assert error_table_problems(added, rows) == [
        "error code AMAZON_ITEM_RECALLED (410) is not in the error table"
    ]
    moved = {**statuses, "UNSUPPORTED_SHORT_LINK": 400}
    assert error_table_problems(moved, rows) == [
        "error code UNSUPPORTED_SHORT_LINK: documented '422', code says 400"
    ]
    removed = {code: status for code, status in statuses.items() if code != "INTERNAL_ERROR"}
    assert error_table_problems(removed, rows) == [
        "error table lists INTERNAL_ERROR, which the code does not have"
    ]


def test_drift_an_undocumented_upstream_reason_is_reported() -> None:
    rows = doc_table(API_MD, "table", "upstream-reasons")
    values = [r.value for r in UpstreamReason] + ["region_mismatch"]
    assert value_table_problems(values, rows, "reason", "reason") == [
        "reason 'region_mismatch' is not documented"
    ]


def test_drift_a_changed_or_new_fault_row_is_reported() -> None:
    import dataclasses

    rows = doc_table(RELIABILITY_MD, "table", "faults")
    tests = {name for name in vars(test_faults) if name.startswith("test_")}
    first, *rest = test_faults.ROWS
    changed = [
        dataclasses.replace(first, status=504),
        dataclasses.replace(rest[0], details={"reason": "other"}),
        dataclasses.replace(rest[1], calls=(("token", "ok"),)),
        dataclasses.replace(rest[2], code="AMAZON_RATE_LIMITED"),
        *rest[3:],
        dataclasses.replace(first, name="a brand-new fault"),
    ]
    problems = fault_table_problems(changed, rows, tests)
    assert len(problems) == 5, problems
    assert any("status documented '502', ROWS says '504'" in p for p in problems)
    assert any("'a brand-new fault'" in p and "not in the fault table" in p for p in problems)
    assert fault_table_problems(test_faults.ROWS[:-1], rows, tests) == [
        f"fault table lists test_fault_matrix[{test_faults.ROWS[-1].name}], "
        "which test_faults.ROWS does not have"
    ]
    assert fault_table_problems(
        test_faults.ROWS, rows, tests - {"test_other_4xx_is_request_rejected"}
    )


def test_drift_an_undocumented_response_field_or_nullability_is_reported() -> None:
    rows = doc_table(API_MD, "schema", "AmazonImportProductSchema")

    class WithColor(schemas.AmazonImportProductSchema):
        color = fields.String(allow_none=True)

    assert schema_table_problems(WithColor, rows) == ["WithColor.color is not in its field table"]

    class NonNullBrand(schemas.AmazonImportProductSchema):
        brand = fields.String(required=True)

    assert schema_table_problems(NonNullBrand, rows) == [
        "NonNullBrand.brand: documented nullable=yes, schema allow_none=False"
    ]

    class IntegerUpc(schemas.AmazonImportProductSchema):
        upc = fields.Integer(allow_none=True)

    assert schema_table_problems(IntegerUpc, rows) == [
        "IntegerUpc.upc: type 'string' should say integer"
    ]


def test_drift_an_undocumented_config_key_or_default_is_reported() -> None:
    rows = doc_table(CONFIG_MD, "table", "config")
    added = {**DEFAULTS, "AMAZON_COFFEE_BREAK_SECONDS": 30}
    assert config_table_problems(added, rows) == [
        "config key AMAZON_COFFEE_BREAK_SECONDS is not in the configuration table"
    ]
    changed = {**DEFAULTS, "AMAZON_CACHE_TTL_SECONDS": 7200}
    assert config_table_problems(changed, rows) == [
        "config key AMAZON_CACHE_TTL_SECONDS: documented default '`3600`', code says `7200`"
    ]
    dropped = {k: v for k, v in DEFAULTS.items() if k != "AMAZON_BATCH_MAX_URLS"}
    assert config_table_problems(dropped, rows) == [
        "configuration table lists AMAZON_BATCH_MAX_URLS, which DEFAULTS does not have"
    ]


def test_drift_a_new_setting_read_in_code_is_reported(tmp_path: Path) -> None:
    module = tmp_path / "feature.py"
    module.write_text(
        'limit = config.read(app.config, "AMAZON_SHINY_NEW_SETTING")\n', encoding="utf-8"
    )
    assert config_keys_in_code([module]) == {"AMAZON_SHINY_NEW_SETTING"}


def test_drift_an_undocumented_or_docstringless_hook_is_reported() -> None:
    text = PLUGINS_MD.read_text(encoding="utf-8")

    def arda_amazon_product_imported(product: Any, principal: Any) -> None:
        """Called after each import."""

    def arda_amazon_authenticate(request: Any) -> Any:
        pass

    hooks = {
        **hookspecs_of(hookspecs),
        "arda_amazon_product_imported": arda_amazon_product_imported,
    }
    assert hook_problems(hooks, text) == [
        "hook arda_amazon_product_imported has no section "
        "'### `arda_amazon_product_imported(product, principal)`' in plugins.md"
    ]
    hooks = {**hookspecs_of(hookspecs), "arda_amazon_authenticate": arda_amazon_authenticate}
    assert hook_problems(hooks, text) == ["hookspec arda_amazon_authenticate has no docstring"]


def test_drift_an_unrun_cli_command_is_reported() -> None:
    blocks = marked_blocks(RUNBOOK_MD)
    assert cli_problems(["check-credentials", "smoke", "quota", "rotate"], blocks) == [
        "`flask amazon rotate` is not in a runnable block of runbook.md"
    ]


# --- the commands of the docs, run ------------------------------------------------------------


@dataclass
class DocsEnv:
    """What the runnable blocks run against."""

    environ: dict[str, str]
    bff_url: str
    sandbox: SandboxHandle
    op_state: Path
    bff: Flask

    def ready(self) -> DocsEnv:
        # Another test's full sandbox reset restores 1 call/second; the docs run quickly.
        self.sandbox.configure(rate=50)
        return self


def _sandbox_fields_by_name() -> dict[str, str]:
    """The sandbox credential as ``credentials.validate`` takes it (Python field names)."""
    return {name.replace("-", "_"): value for name, value in _sandbox_fields().items()}


def _sandbox_fields() -> dict[str, str]:
    return {
        "credential-id": cs.DEMO_CREDENTIAL_ID,
        "credential-secret": cs.DEMO_CREDENTIAL_SECRET,
        "version": "3.1",
        "partner-tag": cs.DEMO_PARTNER_TAG,
    }


@pytest.fixture(scope="module")
def docs_env(
    sandbox_server: SandboxHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DocsEnv]:
    """The sandbox (fast), a fake op holding the sandbox credential in the four partition
    vaults, a loopback example BFF, and the environment of an operator's shell."""
    import example_bff

    sandbox_server.reset(full=True)
    sandbox_server.configure(rate=50)
    base = tmp_path_factory.mktemp("docs-env")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    (bin_dir / "op").symlink_to(FAKE_OP)
    (bin_dir / "python3").symlink_to(sys.executable)
    token = make_op_token("docs-check@1passwordserviceaccounts.com")
    op_state = base / "op-state.json"
    vaults = {
        f"Arda-{p}OAM": [
            {"id": f"docs{p.lower()}", "title": "Amazon Creators API", "fields": _sandbox_fields()}
        ]
        for p in ("Dev", "Stage", "Demo", "Prod")
    }
    op_state.write_text(json.dumps({"token": token, "vaults": vaults}), encoding="utf-8")

    upstream = {
        "AMAZON_CREATORS_API_HOST": sandbox_server.url,
        "AMAZON_TOKEN_URL": sandbox_server.token_url("3.1"),
    }
    credentials = {
        "AMAZON_CREATORS_CREDENTIAL_ID": cs.DEMO_CREDENTIAL_ID,
        "AMAZON_CREATORS_CREDENTIAL_SECRET": cs.DEMO_CREDENTIAL_SECRET,
        "AMAZON_CREATORS_VERSION": "3.1",
        "AMAZON_CREATORS_PARTNER_TAG": cs.DEMO_PARTNER_TAG,
    }
    environ = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AMAZON_", "OP_", "FLASK_", "EXAMPLE_BFF_"))
    }
    environ.update(
        upstream,
        **credentials,
        PATH=os.pathsep.join(
            (str(Path(sys.executable).parent), str(bin_dir), environ.get("PATH", ""))
        ),
        FLASK_APP=f"{ROOT / 'examples' / 'example_bff.py'}:create_app",
        AMAZON_SMOKE_ASIN=SANDBOX_ASIN,
        FAKE_OP_STATE=str(op_state),
        OP_SERVICE_ACCOUNT_TOKEN=token,
        PYTHONDONTWRITEBYTECODE="1",
    )

    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith(("AMAZON_", "EXAMPLE_BFF_")):
                mp.delenv(name)
        for name, value in credentials.items():
            mp.setenv(name, value)  # the env backend of the in-process BFF reads them
        bff = example_bff.create_app(
            {
                **upstream,
                "AMAZON_RATE_LIMITS": "50/second;8640/day",
                "AMAZON_RATE_MARGIN_SECONDS": 0,
            }
        )
        bff_url, stop = cs.serve_in_thread(bff)
        try:
            yield DocsEnv(environ, bff_url, sandbox_server, op_state, bff)
        finally:
            stop()
            bff.extensions["arda_amazon_bp"].close()
            sandbox_server.reset(full=True)


#: Values of sample output that differ from run to run, and what they are compared as.
_VOLATILE = (
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b"), "<UTC time>"),
    (re.compile(r"\b\d+\.\d+ s\b"), "<seconds> s"),
)


def normalize_sample(text: str) -> list[str]:
    """Lines of command output with the run-dependent values replaced by placeholders."""
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return [line.rstrip() for line in text.strip("\n").splitlines()]


def run_block(block: Block, env: DocsEnv, cwd: Path) -> None:
    """Run one ``docs-check: run`` block with bash and check its exit status and output."""
    assert block.lang == "sh", f"{block.where}: only sh blocks are run"
    script = block.body.replace(DEMO_BASE, env.bff_url)
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env.environ,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    expected_exit = int((block.options("exit") or ["0"])[0])
    assert done.returncode == expected_exit, (
        f"{block.where}: exit {done.returncode}\n{output[-3000:]}"
    )
    for text in block.options("expect"):
        assert text in output, f"{block.where}: {text!r} not in the output\n{output[-3000:]}"
    if block.sample is not None:
        # The sample output shown after the command is exactly what it prints, except for
        # the values that change from run to run (times, latencies).
        shown, printed = normalize_sample(block.sample), normalize_sample(done.stdout)
        assert shown == printed, (
            f"{block.where}: the sample output differs from what the command prints\n"
            f"sample:\n{block.sample}\nprinted:\n{done.stdout}"
        )
    assert cs.DEMO_CREDENTIAL_SECRET not in output, f"{block.where}: the secret was printed"


@pytest.mark.parametrize("doc", [API_MD, CONFIG_MD, RUNBOOK_MD, METRICS_MD], ids=lambda p: p.name)
def test_the_commands_in_the_docs_run(doc: Path, docs_env: DocsEnv, tmp_path: Path) -> None:
    """Every runnable block of ``doc``, in order, in one fresh working directory."""
    blocks = [b for b in marked_blocks(doc) if b.kind == "run"]
    assert blocks, f"{doc.name} has no runnable block"
    for block in blocks:
        run_block(block, docs_env.ready(), tmp_path)


def test_the_runbook_shows_sample_output_of_every_operator_command() -> None:
    samples = [b for b in marked_blocks(RUNBOOK_MD) if b.kind == "run" and b.sample]
    assert len(samples) >= 3  # check-credentials, smoke, quota


def test_drift_a_block_that_stops_working_fails(docs_env: DocsEnv, tmp_path: Path) -> None:
    failing = Block(RUNBOOK_MD, 1, "run", [], lang="sh", body="echo 'FAIL: nope' >&2; exit 1\n")
    with pytest.raises(AssertionError, match="exit 1"):
        run_block(failing, docs_env, tmp_path)
    changed = Block(
        RUNBOOK_MD, 1, "run", ["expect=OK: getItems answered"], lang="sh", body="echo OK\n"
    )
    with pytest.raises(AssertionError, match="not in the output"):
        run_block(changed, docs_env, tmp_path)
    stale = Block(RUNBOOK_MD, 1, "run", [], lang="sh", body="echo 'OK: done'\n")
    stale.sample = "OK: done\nquota:        8640 left\n"
    with pytest.raises(AssertionError, match="sample output differs"):
        run_block(stale, docs_env, tmp_path)
    # a value far into the line counts too; times and latencies do not
    body = "echo 'partner tag: ardademo-20, latency 0.04 s at 2026-12-02T17:17:13Z'\n"
    changed_value = Block(RUNBOOK_MD, 1, "run", [], lang="sh", body=body)
    changed_value.sample = "partner tag: ardademo-21, latency 0.04 s at 2026-12-02T17:17:13Z\n"
    with pytest.raises(AssertionError, match="sample output differs"):
        run_block(changed_value, docs_env, tmp_path)
    changed_value.sample = "partner tag: ardademo-20, latency 1.30 s at 2026-11-27T21:10:44Z\n"
    run_block(changed_value, docs_env, tmp_path)


def test_the_runbook_failure_example_is_what_check_credentials_prints(
    docs_env: DocsEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The runbook quotes the message for a vault the service account cannot read; the
    # same command, in process, with the Dev vault not granted to the service account.
    import example_bff

    text = " ".join(RUNBOOK_MD.read_text(encoding="utf-8").split())
    quoted = text[text.index("`FAIL: credentials could not be loaded") + 1 :]
    quoted = quoted[: quoted.index(" …`")]
    state = json.loads(docs_env.op_state.read_text(encoding="utf-8"))
    not_granted = docs_env.op_state.with_name("op-state-prod-only.json")
    not_granted.write_text(json.dumps({**state, "granted": ["Arda-ProdOAM"]}), encoding="utf-8")
    for name in ("PATH", "OP_SERVICE_ACCOUNT_TOKEN"):
        monkeypatch.setenv(name, docs_env.environ[name])
    monkeypatch.setenv("FAKE_OP_STATE", str(not_granted))
    app = example_bff.create_app(
        {"AMAZON_CREDENTIALS_BACKEND": "onepassword", "AMAZON_PARTITION": "Dev"}
    )
    try:
        result = app.test_cli_runner().invoke(args=["amazon", "check-credentials"])
    finally:
        app.extensions["arda_amazon_bp"].close()
    assert result.exit_code == 1
    assert quoted in " ".join(result.output.split()), result.output


def test_the_runbook_eligibility_signals_are_what_the_code_emits(
    docs_env: DocsEnv, caplog: pytest.LogCaptureFixture
) -> None:
    import ast

    from arda_amazon_bp import hookimpl

    sample = next(
        line.strip()
        for _, block in fenced_blocks(RUNBOOK_MD, "text")
        for line in block.splitlines()
        if "event=associate_not_eligible" in line
    )
    prefix, _, shown = sample.partition(" details=")
    seen: list[tuple[str, dict[str, Any]]] = []

    class Pager:
        @hookimpl
        def arda_amazon_upstream_event(self, name: str, details: dict[str, Any]) -> None:
            seen.append((name, details))

    state = docs_env.ready().bff.extensions["arda_amazon_bp"]
    pager = state.plugin_manager.register(Pager())
    try:
        docs_env.sandbox.fault("associate_not_eligible", count=5)
        client = docs_env.bff.test_client()
        with caplog.at_level("ERROR", logger="arda_amazon_bp.extension"):
            answer = client.post(
                "/api/amazon/import",
                json={"url": "https://www.amazon.com/dp/B0DZIPT1E8"},
                headers={"Authorization": "Bearer demo-token"},
            )
        smoke = docs_env.bff.test_cli_runner().invoke(
            args=["amazon", "smoke", "--asin", "B0HSOAP1GL"]
        )
    finally:
        state.plugin_manager.unregister(name=pager)
        docs_env.sandbox.clear_faults()
    assert answer.status_code == 502
    assert answer.get_json()["error"]["details"]["reason"] == "associate_not_eligible"
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix + " ")]
    assert len(logged) == 1, caplog.text
    assert [name for name, _ in seen] == ["associate_not_eligible"]
    assert set(seen[0][1]) == set(ast.literal_eval(shown)), "the runbook's sample details"
    assert smoke.exit_code == 1
    documented = "FAIL: getItems failed: AMAZON_UPSTREAM_UNAVAILABLE (associate_not_eligible)"
    assert documented in smoke.output and documented in RUNBOOK_MD.read_text(encoding="utf-8")
    assert "hint: " in smoke.output


# --- README, tox and CI: the long-running commands are the same strings everywhere ------------


def _readme_commands() -> list[str]:
    first = fenced_blocks(README, "sh")[0][1]
    return [
        line.strip()
        for line in first.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _tox_envs() -> dict[str, configparser.SectionProxy]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    return {
        name.removeprefix("testenv:"): parser[name]
        for name in parser.sections()
        if name.startswith("testenv:")
    }


def test_the_readme_commands_are_what_ci_and_tox_run() -> None:
    demo, tests = _readme_commands()[:2]
    assert demo == "python3 -m pip install tox && python3 -m tox -e demo"
    assert tests == "python3 -m pip install tox && python3 -m tox"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    # .ci/run installs tox (pinned) and then runs exactly the README's test command.
    assert tests.split(" && ")[1] in [line.strip() for line in ci]
    assert _tox_envs()["demo"]["commands"].strip() == "python examples/demo.py {posargs}"
    for line, block in fenced_blocks(README, "sh"):
        for env_list in re.findall(r"tox -e ([\w,]+)", block):
            for name in env_list.split(","):
                assert name in _tox_envs(), f"README.md:{line}: tox env {name} does not exist"


def test_the_demo_prints_the_readme_curl_and_it_answers_a_product(
    running_demo: RunningDemo,
) -> None:
    printed = running_demo.printed
    curl = printed[printed.index("curl") : printed.index(READY)].strip()
    port = re.search(r"http://127\.0\.0\.1:(\d+)/", curl)
    assert port, printed
    done = subprocess.run(
        ["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=False
    )
    product = json.loads(done.stdout)
    assert product["missingFields"] == [] and product["title"], product
    readme_curl = next(
        block for _, block in fenced_blocks(README, "sh") if block.lstrip().startswith("curl")
    )
    shown = curl.replace(f"127.0.0.1:{port.group(1)}", "127.0.0.1:5000")
    assert " ".join(readme_curl.split()) == " ".join(shown.split())


# --- OpenAPI document and Swagger UI of the example app -----------------------------------------


@pytest.fixture
def example_app(creators_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    import example_bff

    monkeypatch.delenv("EXAMPLE_BFF_TOKEN", raising=False)
    app = example_bff.create_app()
    yield app
    app.extensions["arda_amazon_bp"].close()


def test_the_openapi_document_is_valid_and_has_the_routes(example_app: Flask) -> None:
    from openapi_spec_validator import validate

    spec = example_app.test_client().get("/openapi.json").get_json()
    validate(spec)
    assert {"/api/amazon/import", "/api/amazon/import/batch"} <= set(spec["paths"])
    responses = spec["paths"]["/api/amazon/import"]["post"]["responses"]
    assert {"200", "206"} <= set(responses)
    described = " ".join(r.get("description", "") for r in responses.values())
    for code, status in ERROR_STATUSES.items():
        assert str(status) in responses and code.value in described, code
    for schema in _schemas():
        assert schema.__name__.removesuffix("Schema") in spec["components"]["schemas"]


def test_the_swagger_ui_and_its_assets_are_served_locally(example_app: Flask) -> None:
    import example_bff

    client = example_app.test_client()
    page = client.get(example_bff.SWAGGER_UI_PATH)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "://" not in html, "the Swagger UI page names an outside host"
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(references) >= 3
    for reference in references:
        assert reference.startswith("/") and not reference.startswith("//"), reference
        asset = client.get(reference)
        assert asset.status_code == 200 and len(asset.data) > 1000, reference
        asset.close()
    assert '"/openapi.json"' in html
    assert '"validatorUrl": null' in html


# --- the snippets of plugins.md, run ----------------------------------------------------------


def plugins_md_snippets(lang: str) -> list[str]:
    """The ``lang`` blocks of plugins.md that are not byte-checked includes."""
    included = {b.line + 1 for b in marked_blocks(PLUGINS_MD) if b.kind == "include"}
    return [body for line, body in fenced_blocks(PLUGINS_MD, lang) if line not in included]


def plugins_md_snippet(phrase: str) -> str:
    (snippet,) = [body for body in plugins_md_snippets("python") if phrase in body]
    return snippet


def run_snippet(code: str, namespace: dict[str, Any]) -> None:
    """Run a Python snippet of the docs in ``namespace`` (the names it assumes exist)."""
    exec(compile(code, str(PLUGINS_MD), "exec"), namespace)  # noqa: S102 - our own docs


def test_every_python_and_ini_block_of_plugins_md_is_run() -> None:
    # Each phrase names one snippet that a test below (or the plugin-example test) runs;
    # a new snippet must get a test too.
    phrases = [
        "amazon.init_app(app, api)                     #",
        "def create_app()",
        "class BySubject",
        "def arda_amazon_credential_backends(marketplace)",
        "class Pager",
        "app.config.update(",
    ]
    snippets = plugins_md_snippets("python")
    assert len(snippets) == len(phrases)
    assert all(sum(phrase in body for body in snippets) == 1 for phrase in phrases)
    assert len(plugins_md_snippets("ini")) == 1  # the dist-info entry_points.txt


def _snippet_host(monkeypatch: pytest.MonkeyPatch, **config: Any) -> Flask:
    """A bare host app for a plugins.md snippet: no AMAZON_* from the environment."""
    for name in [n for n in os.environ if n.startswith("AMAZON_")]:
        monkeypatch.delenv(name)
    app = Flask("snippet-host")
    app.config.update(API_TITLE="Host", API_VERSION="1", OPENAPI_VERSION="3.0.3", **config)
    return app


def test_plugins_md_migration_snippet_gives_each_store_its_own_backend(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from flask_smorest import Api

    from arda_amazon_bp import AmazonImport, hookimpl
    from arda_amazon_bp.credentials import validate

    built_for: list[str | None] = []

    class VaultBackend:
        def __init__(self, config: Any, store: str | None) -> None:
            built_for.append(store)
            self.version = "3.2" if store == "www.amazon.co.uk" else "3.1"

        def load(self) -> Any:
            return validate({**_sandbox_fields_by_name(), "version": self.version}, "vault")

    plugin = types.ModuleType("vault_plugin")
    plugin.__dict__.update(hookimpl=hookimpl, VaultBackend=VaultBackend)
    run_snippet(
        plugins_md_snippet("def arda_amazon_credential_backends(marketplace)"), plugin.__dict__
    )
    app = _snippet_host(
        monkeypatch,
        AMAZON_CREDENTIALS_BACKEND="vault",
        AMAZON_MARKETPLACES="www.amazon.com,www.amazon.co.uk",
    )
    amazon = AmazonImport()
    amazon.plugin_manager.register(plugin)
    amazon.init_app(app, Api(app))
    state = app.extensions["arda_amazon_bp"]
    try:
        assert sorted(built_for, key=str) == ["www.amazon.co.uk", "www.amazon.com"]
        assert state.store("www.amazon.co.uk").credentials.get().version == "3.2"
        assert state.store("www.amazon.com").credentials.get().version == "3.1"
    finally:
        state.close()


def test_plugins_md_registering_a_backend_plugin_before_init_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask_smorest import Api

    from arda_amazon_bp import AmazonImport, hookimpl
    from arda_amazon_bp.credentials import validate

    loads: list[str] = []

    class MyVaultBackend:
        def load(self) -> Any:
            loads.append("my-vault")
            return validate(_sandbox_fields_by_name(), "my vault")

    class MyVaultPlugin:
        @hookimpl
        def arda_amazon_credential_backends(self) -> dict[str, Any]:
            return {"my-vault": lambda config: MyVaultBackend()}

    app = _snippet_host(monkeypatch, AMAZON_CREDENTIALS_BACKEND="my-vault")
    namespace: dict[str, Any] = {
        "AmazonImport": AmazonImport,
        "MyVaultPlugin": MyVaultPlugin,
        "app": app,
        "api": Api(app),
    }
    run_snippet(plugins_md_snippet("amazon.init_app(app, api)                     #"), namespace)
    try:
        checked = app.test_cli_runner().invoke(args=["amazon", "check-credentials"])
        assert checked.exit_code == 0, checked.output
        assert "backend:       my-vault" in checked.output
        assert loads == ["my-vault"]
    finally:
        app.extensions["arda_amazon_bp"].close()


def test_plugins_md_pager_pages_on_eligibility_loss_only() -> None:
    from arda_amazon_bp import AmazonImport, hookimpl

    paged: list[tuple[str, dict[str, Any]]] = []
    namespace: dict[str, Any] = {
        "hookimpl": hookimpl,
        "page_on_call": lambda text, details: paged.append((text, details)),
        "amazon": AmazonImport(),
    }
    # registering validates the hookimpl's name and arguments against the hookspec
    run_snippet(plugins_md_snippet("class Pager"), namespace)
    hook = namespace["amazon"].plugin_manager.hook.arda_amazon_upstream_event
    hook(name="credentials_rejected", details={"status": 401})
    hook(name="associate_not_eligible", details={"status": 403})
    assert paged == [("Amazon Creators API access lost", {"status": 403})]


def test_plugins_md_app_factory_registers_a_plugin_for_its_app() -> None:
    from flask_smorest import Api

    from arda_amazon_bp import AmazonImport, hookimpl

    class BffAuth:
        @hookimpl
        def arda_amazon_authenticate(self, request: Any) -> Any:
            return {"sub": "u1"} if request.headers.get("X-User") else None

    namespace: dict[str, Any] = {"AmazonImport": AmazonImport, "Api": Api, "BffAuth": BffAuth}
    namespace["__name__"] = __name__  # Flask(__name__) finds the app's root from it

    class ConfiguredFlask(Flask):
        """Flask with the Api settings the snippet's host keeps elsewhere."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.config.update(API_TITLE="Host", API_VERSION="1", OPENAPI_VERSION="3.0.3")

    namespace["Flask"] = ConfiguredFlask
    run_snippet(plugins_md_snippet("def create_app()"), namespace)
    app = namespace["create_app"]()
    try:
        refused = app.test_client().post("/api/amazon/import", json={"url": "x"})
        assert refused.status_code == 401  # BffAuth is this app's authenticator
    finally:
        namespace["amazon"].close(app)


def test_plugins_md_principal_key_plugin_keys_by_subject() -> None:
    from arda_amazon_bp import AmazonImport, hookimpl

    namespace: dict[str, Any] = {"hookimpl": hookimpl, "amazon": AmazonImport()}
    run_snippet(plugins_md_snippet("class BySubject"), namespace)
    hook = namespace["amazon"].plugin_manager.hook.arda_amazon_principal_key
    assert hook(principal={"sub": "user-7", "name": "Ann"}) == "user-7"


# --- the plugin example, installed through a real entry point ------------------------------------


def _install_plugin_example(site: Path) -> str:
    """Install examples/plugin_example the way pip lays it out: module + dist-info."""
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(PLUGIN_EXAMPLE / "setup.cfg", encoding="utf-8")
    name, version = setup["metadata"]["name"], setup["metadata"]["version"]
    module = setup["options"]["py_modules"].strip()
    shutil.copy(PLUGIN_EXAMPLE / f"{module}.py", site / f"{module}.py")
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    entry_points = configparser.ConfigParser(interpolation=None)
    for group, text in setup["options.entry_points"].items():
        entry_points[group] = dict(
            (part.strip() for part in line.split("=", 1)) for line in text.strip().splitlines()
        )
    with (info / "entry_points.txt").open("w", encoding="utf-8") as handle:
        entry_points.write(handle)
    return module


@pytest.fixture
def plugin_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    import importlib

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    module = _install_plugin_example(site)
    monkeypatch.delitem(sys.modules, module, raising=False)
    importlib.invalidate_caches()
    yield module
    sys.modules.pop(module, None)


def test_plugins_md_dist_info_is_what_the_example_install_writes(tmp_path: Path) -> None:
    (documented,) = plugins_md_snippets("ini")
    _install_plugin_example(tmp_path)
    (written,) = tmp_path.glob("*.dist-info/entry_points.txt")
    assert written.read_text(encoding="utf-8").strip() == documented.strip()


def test_the_plugin_example_declares_its_entry_point() -> None:
    setup = configparser.ConfigParser(interpolation=None)
    setup.read(PLUGIN_EXAMPLE / "setup.cfg", encoding="utf-8")
    assert "example = arda_example_plugin" in setup["options.entry_points"]["arda_amazon_bp"]
    assert "build-backend" in (PLUGIN_EXAMPLE / "pyproject.toml").read_text(encoding="utf-8")


def test_the_plugin_example_backend_and_auth_work_through_the_entry_point(
    plugin_example: str, sandbox: SandboxHandle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_smorest import Api

    from arda_amazon_bp import AmazonImport

    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    for filename, value in _sandbox_fields().items():
        (secret_dir / filename).write_text(value + "\n", encoding="utf-8")
    for name in [n for n in os.environ if n.startswith("AMAZON_")]:
        monkeypatch.delenv(name)

    app = Flask("plugin-host")
    # plugins.md's configuration snippet, with the secret directory of this test
    run_snippet(plugins_md_snippet("app.config.update("), {"app": app})
    documented_dir = app.config["MOUNTED_SECRET_DIR"]
    app.config.update(
        API_TITLE="Host",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        MOUNTED_SECRET_DIR=str(secret_dir),
        AMAZON_CREATORS_API_HOST=sandbox.url,
        AMAZON_TOKEN_URL=sandbox.token_url("3.1"),
        AMAZON_RATE_MARGIN_SECONDS=0,
    )
    amazon = AmazonImport(app, Api(app))
    try:
        assert amazon.plugin_manager.get_plugin("example") is sys.modules[plugin_example]
        client = app.test_client()
        url = {"url": f"https://www.amazon.com/dp/{SANDBOX_ASIN}"}
        refused = client.post("/api/amazon/import", json=url, headers={"X-Api-Key": "wrong"})
        assert refused.status_code == 401
        answer = client.post(
            "/api/amazon/import", json=url, headers={"X-Api-Key": "k3y-from-your-secret-store"}
        )
        assert answer.status_code == 200, answer.get_json()
        assert answer.get_json()["detailPageUrl"].endswith(f"tag={cs.DEMO_PARTNER_TAG}")

        runner = app.test_cli_runner()
        checked = runner.invoke(args=["amazon", "check-credentials"])
        assert checked.exit_code == 0, checked.output
        assert f"mounted-secret (MountedSecretBackend({str(secret_dir)!r}))" in checked.output
        # what plugins.md says the command shows for its own directory
        documented = " ".join(PLUGINS_MD.read_text(encoding="utf-8").split())
        assert f"`backend: mounted-secret (MountedSecretBackend({documented_dir!r}))`" in documented
        (secret_dir / "partner-tag").unlink()
        failed = runner.invoke(args=["amazon", "check-credentials"])
        assert failed.exit_code == 1
        assert (
            "partner_tag MISSING" in failed.output
            and cs.DEMO_CREDENTIAL_SECRET not in failed.output
        )
    finally:
        app.extensions["arda_amazon_bp"].close()


def test_the_plugin_example_is_a_valid_setuptools_project() -> None:
    from setuptools.config import setupcfg  # setuptools is in the dev extra

    options = setupcfg.read_configuration(str(PLUGIN_EXAMPLE / "setup.cfg"))
    assert options["metadata"]["name"] == "arda-example-plugin"
    assert options["options"]["py_modules"] == ["arda_example_plugin"]
    assert options["options"]["entry_points"] == {
        "arda_amazon_bp": ["example = arda_example_plugin"]
    }


# --- architecture.md: the module map, the token table, nothing cited outside the repo ---------

ARCHITECTURE_MD = DOCS / "architecture.md"
#: What docs and comments once cited outside the repository; spelled in two parts so that
#: this file does not match itself.
_OUTSIDE_REFERENCE = re.compile(r"DESIGN" + r"\.md|\.\./" + r"shared")


def _section(text: str, heading: str) -> str:
    """The body of the Markdown section ``heading`` (a whole line), up to the next one
    of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    body = text.split("\n" + heading + "\n", 1)[1]
    return re.split(rf"\n#{{1,{len(level)}}} ", body, maxsplit=1)[0]


def _first_table(section: str) -> list[dict[str, str]]:
    return parse_table(section[section.index("\n|") + 1 :])


def package_modules() -> set[str]:
    return {
        path.relative_to(ROOT).as_posix()
        for package in ("arda_amazon_bp", "backends")
        for path in (ROOT / package).rglob("*.py")
    }


def module_map_problems(modules: Iterable[str], architecture_md: str) -> list[str]:
    rows = _first_table(_section(architecture_md, "## Module map"))
    listed = [code_value(row["module"]) for row in rows]
    problems = [f"{m}: not in the module map" for m in sorted(set(modules) - set(listed))]
    problems += [f"{m}: in the module map but not a module" for m in listed if m not in modules]
    problems += [f"{row['module']}: no job" for row in rows if not row["job"].strip()]
    return problems


def outside_references(root: Path) -> list[str]:
    """``path:line`` of every mention of a file outside the repository, in every file
    git would track (``.git`` and what ``.gitignore`` names are skipped)."""
    patterns = [".git"] + [
        line.strip().rstrip("/")
        for line in (root / ".gitignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    found: list[str] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if not any(fnmatch.fnmatch(d, p) for p in patterns)]
        for name in files:
            if any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            path = Path(directory, name)
            text = path.read_bytes().decode("utf-8", errors="replace")
            for number, line in enumerate(text.splitlines(), 1):
                if _OUTSIDE_REFERENCE.search(line):
                    found.append(f"{path.relative_to(root).as_posix()}:{number}")
    return found


def test_the_module_map_names_every_module_with_its_job() -> None:
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    assert module_map_problems(package_modules(), text) == []


def test_drift_a_module_missing_from_the_map_is_reported() -> None:
    text = ARCHITECTURE_MD.read_text(encoding="utf-8")
    modules = package_modules()
    assert module_map_problems({*modules, "arda_amazon_bp/new.py"}, text) == [
        "arda_amazon_bp/new.py: not in the module map"
    ]
    assert module_map_problems(modules - {"arda_amazon_bp/tokens.py"}, text) == [
        "arda_amazon_bp/tokens.py: in the module map but not a module"
    ]


def test_the_token_endpoints_in_architecture_md_are_the_code_s() -> None:
    section = _section(ARCHITECTURE_MD.read_text(encoding="utf-8"), "### Credentials and tokens")
    rows = {code_value(row["version"]): row for row in _first_table(section)}
    assert {v: code_value(row["token endpoint"]) for v, row in rows.items()} == TOKEN_URLS
    for version, row in rows.items():
        family = "cognito" if version.startswith("2.") else "lwa"
        assert code_value(row["scope"]) == TOKEN_SCOPES[family], version
        assert row["body"] == ("form-encoded" if family == "cognito" else "JSON"), version


def test_the_architecture_doc_is_linked_from_the_readme() -> None:
    assert "(docs/architecture.md)" in README.read_text(encoding="utf-8")


def test_nothing_in_the_repo_cites_a_file_outside_it() -> None:
    assert outside_references(ROOT) == []


def test_drift_a_reference_outside_the_repo_is_reported(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text(".venv/\n", encoding="utf-8")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n# see DESIGN" + ".md §6\n")
    (tmp_path / "README.md").write_text("Read ../" + "shared first.\n")
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "other.py").write_text("# DESIGN" + ".md of a dependency\n")
    assert sorted(outside_references(tmp_path)) == ["README.md:1", "pkg/mod.py:2"]


# --- docs/testing-your-integration.md: the host tests run, as a host runs them ---------------


def host_files(path: Path) -> dict[str, str]:
    """The ``docs-check: file NAME`` blocks of ``path``: file name -> content."""
    files = {b.args[0]: b.body for b in marked_blocks(path) if b.kind == "file"}
    assert len(files) == len([b for b in marked_blocks(path) if b.kind == "file"]), "same name"
    return files


def run_host_tests(files: Mapping[str, str], cwd: Path) -> str:
    """Write ``files`` into ``cwd`` and run pytest there; fail unless every test passed.

    A fresh interpreter in a directory of its own: the fixture can only come from the
    installed package's ``pytest11`` entry point, not from this repository's conftest.
    """
    for name, content in files.items():
        (cwd / name).write_text(content, encoding="utf-8")
    (cwd / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")  # rootdir: here
    tests = sum(
        len(re.findall(r"^def test_", content, flags=re.MULTILINE))
        for name, content in files.items()
        if name.startswith("test_")
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMAZON_", "PYTEST_"))}
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT * 2,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert re.search(rf"\b{tests} passed\b", output), output[-4000:]
    return output


def test_every_python_block_of_the_testing_guide_is_a_host_file() -> None:
    marked = {b.line + 1 for b in marked_blocks(TESTING_MD) if b.kind == "file"}
    for line, _ in fenced_blocks(TESTING_MD, "python"):
        assert line in marked, f"{TESTING_MD.name}:{line}: mark it `docs-check: file NAME`"
    files = host_files(TESTING_MD)
    assert "bff.py" in files
    sandbox_tests = files["test_amazon_import_sandbox.py"]
    assert (
        "amazon_sandbox.config" in sandbox_tests and "amazon_sandbox.example_url" in sandbox_tests
    )
    assert "requests_mock" in files["test_amazon_import_requests_mock.py"]


def test_the_testing_guide_host_tests_pass(tmp_path: Path) -> None:
    output = run_host_tests(host_files(TESTING_MD), tmp_path)
    assert "3 passed" in output


def test_drift_a_host_test_that_stops_passing_fails(tmp_path: Path) -> None:
    files = host_files(TESTING_MD)
    files["test_amazon_import_sandbox.py"] = files["test_amazon_import_sandbox.py"].replace(
        'assert product["missingFields"] == []', 'assert product["missingFields"] == ["title"]'
    )
    with pytest.raises(AssertionError, match="1 failed"):
        run_host_tests(files, tmp_path)


def test_the_guide_shows_the_shape_the_products_module_reads() -> None:
    # Each Amazon path the requests-mock section names is one products.py reads.
    from arda_amazon_bp import products

    text = TESTING_MD.read_text(encoding="utf-8")
    source = Path(products.__file__).read_text(encoding="utf-8")
    for key in (
        "itemInfo",
        "byLineInfo",
        "productInfo",
        "unitCount",
        "offersV2",
        "listings",
        "pricePerUnit",
        "displayValue",
        "displayAmount",
        "externalIds",
        "isBuyBoxWinner",
    ):
        assert f"{key}" in text and f'"{key}"' in source, key
    assert TOKEN_URLS["3.1"] in text  # the endpoint the requests-mock example mocks
    assert "/catalog/v1/getItems" in text


def test_the_readme_links_the_testing_guide() -> None:
    assert "(docs/testing-your-integration.md)" in README.read_text(encoding="utf-8")
