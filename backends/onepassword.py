"""``onepassword`` backend: one 1Password CLI run per load, as a service account.

Runs ``op item get "<item>" --vault "<vault>" --format json --reveal`` (an argv list, no
shell, :data:`OP_TIMEOUT_SECONDS`), authenticated by ``OP_SERVICE_ACCOUNT_TOKEN``, and
reads the fields labelled ``credential-id``, ``credential-secret``, ``version`` and
``partner-tag``. The vault is ``AMAZON_ONEPASSWORD_VAULT`` or ``Arda-{AMAZON_PARTITION}OAM``.

``--reveal`` is passed to op 2.30 and later, which conceal values without it; op 2.18 to
2.29 print values anyway and refuse the flag, so it is left out there. The version comes
from ``op --version``, once per op executable and process (:mod:`op_cli`, which also
holds everything else about running op).

Every failure becomes a :class:`CredentialsError` that says what to fix. ``op``'s stderr
is matched against the messages the real CLI (v2) prints; anything unknown is reported
as its first line, with the token, token-shaped strings and long opaque strings removed.
Neither a field value nor the token ever reaches a message.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from arda_amazon_bp import config
from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import Credentials, CredentialsError, validate
from arda_amazon_bp.hookspecs import hookimpl
from arda_amazon_bp.partitions import DEFAULT_ITEM, PARTITIONS, VAULT_TEMPLATE, canonical_partition

from . import op_cli
from .op_cli import OP_EXECUTABLE, OP_TIMEOUT_SECONDS, TOKEN_VARIABLE, Failure

__all__ = [
    "DEFAULT_ITEM",
    "LABELS",
    "OP_EXECUTABLE",
    "OP_TIMEOUT_SECONDS",
    "PARTITIONS",
    "TOKEN_VARIABLE",
    "VAULT_TEMPLATE",
    "OnePasswordBackend",
    "from_config",
    "vault_from_config",
]


#: 1Password field label -> credential field.
LABELS: dict[str, str] = {
    "credential-id": "credential_id",
    "credential-secret": "credential_secret",
    "version": "version",
    "partner-tag": "partner_tag",
}

# The placeholder op >= 2.30 prints instead of a concealed value when not told --reveal.
_CONCEALED_PLACEHOLDER = re.compile(r"^\[use 'op item get .*--reveal' to reveal\]$")

#: What to fix for failures that depend on the vault and item read; {vault} and {item}
#: are filled in (op's own text is not quoted for known failures: it echoes its input).
_ITEM_FIXES: dict[Failure, str] = {
    Failure.NO_VAULT: (
        "vault {vault!r} does not exist or the service account cannot access it; grant the "
        "service account read access to that vault (or fix AMAZON_ONEPASSWORD_VAULT / "
        "AMAZON_PARTITION)"
    ),
    Failure.AMBIGUOUS_ITEM: (
        "more than one item in vault {vault!r} is titled {item!r}; rename or archive the "
        "duplicate, or set AMAZON_ONEPASSWORD_ITEM to the item's id"
    ),
    Failure.NO_ITEM: (
        "item {item!r} was not found in vault {vault!r}; create it there or set "
        "AMAZON_ONEPASSWORD_ITEM to its title"
    ),
    Failure.FORBIDDEN: (
        "the service account may not read item {item!r} in vault {vault!r}; give it "
        "read_items on that vault"
    ),
    Failure.UNKNOWN_FLAG: (
        "the installed op does not understand {argv!r}; install 1Password CLI "
        f"{op_cli.version_text(op_cli.MINIMUM_VERSION)} or later (2.30 or later recommended)"
    ),
}


class OnePasswordBackend:
    """Loads the credential item through the 1Password CLI at every :meth:`load`."""

    name = "onepassword"

    def __init__(
        self,
        vault: str,
        item: str = DEFAULT_ITEM,
        *,
        timeout: float | None = None,
        executable: str = OP_EXECUTABLE,
        environ: Mapping[str, str] | None = None,
        store_item: str | None = None,
    ) -> None:
        self.vault = vault
        self.item = item
        #: The store's own item (``store_item_title``), read first; ``None``: default only.
        self.store_item = store_item
        self._timeout = timeout
        self._executable = executable
        self._environ = environ

    @property
    def timeout(self) -> float:
        """The per-run timeout; this module's :data:`OP_TIMEOUT_SECONDS` unless given."""
        return OP_TIMEOUT_SECONDS if self._timeout is None else self._timeout

    def argv(self, version: op_cli.Version, item: str | None = None) -> list[str]:
        """The one ``op`` command run per load (after ``op``), for op ``version``."""
        return op_cli.item_get_argv(item or self.item, self.vault, version)

    def op_version(self) -> str:
        """``op --version`` of the op this backend runs (``flask amazon check-credentials``)."""
        op = op_cli.prepare(self._environ, executable=self._executable, timeout=self.timeout)
        return op_cli.version_text(op.version())

    def load(self) -> Credentials:
        """Run ``op`` once and validate the four fields; see the module doc for failures."""
        op = op_cli.prepare(self._environ, executable=self._executable, timeout=self.timeout)
        version = op.version()
        item = self.item
        if self.store_item is not None:
            # The store's own item when it exists (one run), else the default item.
            argv = self.argv(version, self.store_item)
            outcome = op.run(argv, "op item get")
            if outcome.returncode == 0:
                return self._parse(outcome.stdout, self.store_item)
            if outcome.failure is not Failure.NO_ITEM:
                raise CredentialsError(
                    self._explain(op, argv, outcome, op_cli.version_text(version), self.store_item)
                )
        argv = self.argv(version, item)
        outcome = op.run(argv, "op item get")
        if outcome.returncode != 0:
            raise CredentialsError(self._explain(op, argv, outcome, op_cli.version_text(version)))
        return self._parse(outcome.stdout)

    def _explain(
        self,
        op: op_cli.Op,
        argv: list[str],
        outcome: op_cli.Outcome,
        version: str,
        item: str | None = None,
    ) -> str:
        item = item or self.item
        where = f"op item get {item!r} --vault {self.vault!r} failed (exit {outcome.returncode})"
        failure = outcome.failure
        if failure is Failure.UNKNOWN_FLAG and "--reveal" in outcome.stderr:
            return (
                f"{where}: op refused --reveal although `op --version` said {version}, "
                "which has it (2.30 and later); check that the op on PATH is the 1Password "
                "CLI it claims to be"
            )
        if failure in _ITEM_FIXES:
            flags = " ".join(arg for arg in argv if arg.startswith("--"))
            fix = _ITEM_FIXES[failure].format(
                vault=self.vault, item=item, argv=f"op item get {flags}"
            )
            return f"{where}: {fix}"
        if failure in op_cli.COMMON_FIXES:
            return f"{where}: {op_cli.COMMON_FIXES[failure]}"
        detail = op.detail(outcome)
        return f"{where}: {detail}" if detail else f"{where} without a message"

    def _parse(self, stdout: bytes, item: str | None = None) -> Credentials:
        where = f"item {item or self.item!r} in vault {self.vault!r}"
        try:
            data = json.loads(stdout.decode("utf-8"))
        except ValueError:
            data = None
        # No parser detail: it would quote the output, i.e. the secret.
        if not isinstance(data, dict):
            raise CredentialsError(
                "op item get did not print the JSON item it should have "
                f"(for {where}); check that op is the 1Password CLI 2"
            )
        fields = data.get("fields")
        found: dict[str, object] = {}
        concealed: list[str] = []
        for entry in fields if isinstance(fields, list) else []:
            if not isinstance(entry, dict):
                continue
            label = entry.get("label")
            if label not in LABELS or LABELS[label] in found:
                continue  # the first field with a label wins, like `op read` by label
            value = entry.get("value")
            if isinstance(value, str) and _CONCEALED_PLACEHOLDER.match(value):
                concealed.append(str(label))
                continue
            found[LABELS[label]] = value
        if concealed:
            raise CredentialsError(
                f"op printed field(s) {', '.join(concealed)} of {where} concealed; op 2.30 "
                "and later need --reveal, which is passed when `op --version` says 2.30 or "
                "later: check that the op on PATH is the version it claims"
            )
        missing = [label for label, name in LABELS.items() if not _has_text(found.get(name))]
        if missing:
            names = [LABELS[label] for label in missing]
            raise CredentialsError(
                f"{where} has no (or an empty) field labelled {', '.join(missing)}; add it "
                f"(expected labels: {', '.join(LABELS)})",
                missing=names,
            )
        return validate(found, f"1Password {where}")

    def __repr__(self) -> str:
        store = f", store_item={self.store_item!r}" if self.store_item else ""
        return f"OnePasswordBackend(vault={self.vault!r}, item={self.item!r}{store})"


def store_item_title(item: str, marketplace: str | None) -> str | None:
    """The title of a store's own item: the default item's title and the store's ISO
    country code, ``Amazon Creators API (GB)`` for ``www.amazon.co.uk``; ``None`` for the
    default set."""
    from arda_amazon_bp.marketplaces import MARKETPLACES

    store = MARKETPLACES.get(marketplace) if marketplace else None
    return f"{item} ({store.country})" if store is not None else None


def _has_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def vault_from_config(app_config: Mapping[str, Any]) -> str:
    """``AMAZON_ONEPASSWORD_VAULT``, else ``Arda-{AMAZON_PARTITION}OAM``; ``ConfigError`` else.

    The partition is matched case-insensitively (``prod`` → ``Prod``): deploy pipelines
    spell environment names in many ways, the vault name has one.
    """
    partition = _name(app_config, "AMAZON_PARTITION")
    canonical = None
    if partition is not None:
        canonical = canonical_partition(partition)
        if canonical is None:
            raise ConfigError(
                f"AMAZON_PARTITION must be one of {', '.join(PARTITIONS)}, got {partition!r}"
            )
    vault = _name(app_config, "AMAZON_ONEPASSWORD_VAULT")
    if vault is not None:
        return vault
    if canonical is None:
        raise ConfigError(
            "the onepassword credential backend needs AMAZON_PARTITION (one of "
            f"{', '.join(PARTITIONS)}, for vault {VAULT_TEMPLATE.format(partition='<Partition>')}) "
            "or AMAZON_ONEPASSWORD_VAULT"
        )
    return VAULT_TEMPLATE.format(partition=canonical)


def _name(app_config: Mapping[str, Any], key: str) -> str | None:
    value = config.read(app_config, key)
    if value is None:
        return None
    # An environment value that parses as JSON arrives as a number ("2024" → 2024).
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {type(value).__name__}")
    return value.strip() or None


def from_config(
    app_config: Mapping[str, Any], marketplace: str | None = None
) -> OnePasswordBackend:
    """A backend for the configured vault and item (and ``marketplace``'s own item);
    raises ``ConfigError`` when unset."""
    vault = vault_from_config(app_config)
    item = _name(app_config, "AMAZON_ONEPASSWORD_ITEM") or DEFAULT_ITEM
    # Stores' own items are looked for only when several stores are configured: a
    # single-store app keeps one op run per load.
    several = config.read(app_config, "AMAZON_MARKETPLACES")
    store_item = store_item_title(item, marketplace) if several else None
    return OnePasswordBackend(vault, item, store_item=store_item)


@hookimpl
def arda_amazon_credential_backends(
    marketplace: str | None,
) -> dict[str, Callable[[Mapping[str, Any]], OnePasswordBackend]]:
    """Offer ``onepassword``."""
    return {"onepassword": lambda app_config: from_config(app_config, marketplace)}
