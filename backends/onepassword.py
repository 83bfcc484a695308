"""``onepassword`` backend: one 1Password CLI run per load, as a service account.

Runs ``op item get "<item>" --vault "<vault>" --format json`` (an argv list, no shell,
:data:`OP_TIMEOUT_SECONDS`), authenticated by ``OP_SERVICE_ACCOUNT_TOKEN``, and reads
the fields labelled ``credential-id``, ``credential-secret``, ``version`` and
``partner-tag``. The vault is ``AMAZON_ONEPASSWORD_VAULT`` or ``Arda-{AMAZON_PARTITION}OAM``.

Every failure becomes a :class:`CredentialsError` that says what to fix. ``op``'s stderr
is matched against the messages the real CLI (v2) prints; anything unknown is reported
as its first line, with the token, token-shaped strings and long opaque strings removed.
Neither a field value nor the token ever reaches a message.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arda_amazon_bp import config
from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import Credentials, CredentialsError, validate
from arda_amazon_bp.hookspecs import hookimpl

#: Seconds one ``op`` run may take before it is killed (it makes ~3 requests to 1Password).
OP_TIMEOUT_SECONDS = 15.0
#: The executable, looked up on ``PATH``.
OP_EXECUTABLE = "op"
TOKEN_VARIABLE = "OP_SERVICE_ACCOUNT_TOKEN"  # noqa: S105 - the variable name, not a token
#: Connect variables take precedence over a service account token in ``op``; they are
#: removed from op's environment so the documented authentication is the one used.
_CONNECT_VARIABLES = ("OP_CONNECT_HOST", "OP_CONNECT_TOKEN")

PARTITIONS: tuple[str, ...] = ("Dev", "Stage", "Demo", "Prod")
VAULT_TEMPLATE = "Arda-{partition}OAM"
DEFAULT_ITEM = "Amazon Creators API"

#: 1Password field label -> credential field.
LABELS: dict[str, str] = {
    "credential-id": "credential_id",
    "credential-secret": "credential_secret",
    "version": "version",
    "partner-tag": "partner_tag",
}

# The placeholder op >= 2.30 prints instead of a concealed value when not told --reveal.
_CONCEALED_PLACEHOLDER = re.compile(r"^\[use 'op item get .*--reveal' to reveal\]$")
# "[ERROR] 2024/01/01 12:00:00 " in front of each of op's messages.
_OP_PREFIX = re.compile(r"^\[(?:ERROR|WARN|INFO)\]\s+\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\s*")
# Service account tokens are "ops_" + base64url JSON; long opaque runs may be secrets too.
_TOKEN_SHAPED = re.compile(r"ops_[A-Za-z0-9+/=_-]+")
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
_MAX_DETAIL = 160


@dataclass(frozen=True)
class _Rule:
    """A known ``op`` failure: stderr matches ``pattern`` → this message (what to fix)."""

    pattern: re.Pattern[str]
    message: str


def _rule(pattern: str, message: str) -> _Rule:
    return _Rule(re.compile(pattern, re.IGNORECASE), message)


# Order matters: the first match wins. {vault}/{item} are filled in; op's own text is not
# quoted for known failures (it may echo what was passed to it).
_RULES: tuple[_Rule, ...] = (
    _rule(
        r"DecodeSACredentials|DeserializeServiceAccountAuthToken|unrecognized auth type|"
        r"illegal base64|invalid credentials provided",
        f"{TOKEN_VARIABLE} is not a valid 1Password service account token (malformed or "
        "truncated); paste the whole token (it starts with 'ops_')",
    ),
    _rule(
        r"\(401\)|Unauthorized|authorization.*(expired|revoked)|token.*(expired|revoked)",
        f"1Password refused {TOKEN_VARIABLE}: the service account token is invalid, "
        "expired or revoked; issue a new token and update the deployment's secret",
    ),
    _rule(
        r"isn't a vault in this account|vault.*not found|no vault",
        "vault {vault!r} does not exist or the service account cannot access it; grant the "
        "service account read access to that vault (or fix AMAZON_ONEPASSWORD_VAULT / "
        "AMAZON_PARTITION)",
    ),
    _rule(
        r"More than one item matches",
        "more than one item in vault {vault!r} is titled {item!r}; rename or archive the "
        "duplicate, or set AMAZON_ONEPASSWORD_ITEM to the item's id",
    ),
    _rule(
        r"isn't an item|doesn't seem to be an item|item.*not found",
        "item {item!r} was not found in vault {vault!r}; create it there or set "
        "AMAZON_ONEPASSWORD_ITEM to its title",
    ),
    _rule(
        r"\(403\)|Forbidden|not authorized to access|doesn't have permission",
        "the service account may not read item {item!r} in vault {vault!r}; give it "
        "read_items on that vault",
    ),
    _rule(
        r"\(429\)|Too Many Requests|rate limit",
        "1Password rate-limited the service account; wait, or raise its limits "
        "(op service-account ratelimit shows the usage)",
    ),
    _rule(
        r"dial tcp|no such host|connection refused|i/o timeout|could not reach|"
        r"network is unreachable|TLS handshake|context deadline exceeded",
        "op could not reach 1Password (network, DNS or proxy); check outbound HTTPS from this host",
    ),
    _rule(
        r"unknown command|unknown flag|unknown shorthand flag",
        "the installed op does not understand 'op item get --vault --format json'; "
        "install 1Password CLI 2.18 or later (service accounts need it)",
    ),
    _rule(
        r"not currently signed in|no account found|account is not signed in",
        f"op is not signed in: set {TOKEN_VARIABLE} to the service account token",
    ),
)


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
    ) -> None:
        self.vault = vault
        self.item = item
        self._timeout = timeout
        self._executable = executable
        self._environ = environ

    @property
    def timeout(self) -> float:
        """The per-run timeout; :data:`OP_TIMEOUT_SECONDS` unless given."""
        return OP_TIMEOUT_SECONDS if self._timeout is None else self._timeout

    def argv(self, executable: str) -> list[str]:
        """The one command run per load."""
        return [executable, "item", "get", self.item, "--vault", self.vault, "--format", "json"]

    def load(self) -> Credentials:
        """Run ``op`` once and validate the four fields; see the module doc for failures."""
        environ = dict(os.environ if self._environ is None else self._environ)
        token = environ.get(TOKEN_VARIABLE, "")
        if not token.strip():
            raise CredentialsError(
                f"{TOKEN_VARIABLE} is not set in the environment; the onepassword backend "
                "runs op as a 1Password service account and needs its token"
            )
        for variable in _CONNECT_VARIABLES:
            environ.pop(variable, None)
        executable = shutil.which(self._executable, path=environ.get("PATH"))
        if executable is None:
            raise CredentialsError(
                f"the 1Password CLI ({self._executable!r}) is not installed or not on PATH; "
                "install op 2.18 or later on this host"
            )
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell
                self.argv(executable),
                env=environ,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise CredentialsError(
                f"the 1Password CLI ({executable}) disappeared or cannot run; reinstall op"
            ) from None
        except PermissionError:
            raise CredentialsError(
                f"the 1Password CLI ({executable}) is not executable by this process"
            ) from None
        except subprocess.TimeoutExpired:
            # The exception holds op's partial output: never chain it.
            raise CredentialsError(
                f"op item get did not finish within {self.timeout:g} s and was stopped; "
                "check the network path to 1Password"
            ) from None
        if done.returncode != 0:
            raise CredentialsError(self._explain(done.returncode, done.stderr, token))
        return self._parse(done.stdout)

    def _explain(self, returncode: int, stderr: bytes, token: str) -> str:
        text = stderr.decode("utf-8", "replace")
        where = f"op item get {self.item!r} --vault {self.vault!r} failed (exit {returncode})"
        for rule in _RULES:
            if rule.pattern.search(text):
                return f"{where}: " + rule.message.format(vault=self.vault, item=self.item)
        detail = _summarise(text, [token])
        return f"{where}: {detail}" if detail else f"{where} without a message"

    def _parse(self, stdout: bytes) -> Credentials:
        where = f"item {self.item!r} in vault {self.vault!r}"
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
                f"op printed field(s) {', '.join(concealed)} of {where} concealed; "
                "use a 1Password CLI whose JSON output includes values"
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
        return f"OnePasswordBackend(vault={self.vault!r}, item={self.item!r})"


def _has_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _summarise(stderr: str, secrets: Sequence[str]) -> str:
    """op's first meaningful line, without its log prefix, secrets or opaque strings."""
    line = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
    line = _OP_PREFIX.sub("", line)
    for secret in secrets:
        if secret:
            line = line.replace(secret, "<redacted>")
    line = _TOKEN_SHAPED.sub("<redacted>", line)
    line = _OPAQUE.sub("<redacted>", line)
    line = "".join(ch if ch.isprintable() else "?" for ch in line)
    if len(line) > _MAX_DETAIL:
        line = line[: _MAX_DETAIL - 1] + "…"
    return line


def vault_from_config(app_config: Mapping[str, Any]) -> str:
    """``AMAZON_ONEPASSWORD_VAULT``, else ``Arda-{AMAZON_PARTITION}OAM``; ``ConfigError`` else.

    The partition is matched case-insensitively (``prod`` → ``Prod``): deploy pipelines
    spell environment names in many ways, the vault name has one.
    """
    partition = _name(app_config, "AMAZON_PARTITION")
    canonical = None
    if partition is not None:
        canonical = next((p for p in PARTITIONS if p.lower() == partition.lower()), None)
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


def from_config(app_config: Mapping[str, Any]) -> OnePasswordBackend:
    """A backend for the configured vault and item; raises ``ConfigError`` when unset."""
    vault = vault_from_config(app_config)
    item = _name(app_config, "AMAZON_ONEPASSWORD_ITEM") or DEFAULT_ITEM
    return OnePasswordBackend(vault, item)


@hookimpl
def arda_amazon_credential_backends() -> dict[
    str, Callable[[Mapping[str, Any]], OnePasswordBackend]
]:
    """Offer ``onepassword``."""
    return {"onepassword": from_config}
