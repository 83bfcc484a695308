"""The one place that runs the 1Password CLI (``op``): for the ``onepassword`` backend and
for ``op://`` secret references in the ``env`` and ``file`` backends.

Everything about ``op`` lives here: finding it on ``PATH``, its environment (the service
account token, without Connect variables), the per-run timeout, its version (probed once
per executable and process), and recognising the failures it prints. Callers turn a
recognised failure (a :class:`Failure` key) into a message that says what to fix in
*their* terms; nothing here ever quotes a field value or the token.

Supported versions (docs/runbook.md, 2.2): ``op`` 2.18 or later, the first with service
accounts. Since 2.30 ``op item get`` conceals concealed fields, in JSON output too, unless
``--reveal`` is passed; :func:`item_get_argv` passes it exactly when the probed version is
2.30 or later, because older versions refuse the unknown flag.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from arda_amazon_bp.credentials import CredentialsError

#: Seconds one ``op`` run may take before it is killed (it makes ~3 requests to 1Password).
OP_TIMEOUT_SECONDS = 15.0
#: The executable, looked up on ``PATH``.
OP_EXECUTABLE = "op"
TOKEN_VARIABLE = "OP_SERVICE_ACCOUNT_TOKEN"  # noqa: S105 - the variable name, not a token
#: Connect variables take precedence over a service account token in ``op``; they are
#: removed from op's environment so the documented authentication is the one used.
CONNECT_VARIABLES = ("OP_CONNECT_HOST", "OP_CONNECT_TOKEN")

Version = tuple[int, int, int]
#: Service accounts exist from op 2.18 on (1Password CLI release notes, 2.18.0).
MINIMUM_VERSION: Version = (2, 18, 0)
#: From 2.30 on ``op item get`` conceals values unless ``--reveal`` (release notes, 2.30.0).
REVEAL_VERSION: Version = (2, 30, 0)
#: A 1Password secret reference: ``op://<vault>/<item>[/<section>]/<field>``.
REFERENCE_PREFIX = "op://"

_VERSION = re.compile(r"\b(\d+)\.(\d+)\.(\d+)\b")
# "[ERROR] 2024/01/01 12:00:00 " in front of each of op's messages.
_OP_PREFIX = re.compile(r"^\[(?:ERROR|WARN|INFO)\]\s+\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}\s*")
# Service account tokens are "ops_" + base64url JSON; long opaque runs may be secrets too.
_TOKEN_SHAPED = re.compile(r"ops_[A-Za-z0-9+/=_-]+")
_OPAQUE = re.compile(r"[A-Za-z0-9+/=_-]{24,}")
_MAX_DETAIL = 160


def version_text(version: Version) -> str:
    return ".".join(map(str, version))


def is_reference(value: object) -> bool:
    """Whether ``value`` is a 1Password secret reference (``op://…``), to be read with op."""
    return isinstance(value, str) and value.strip().startswith(REFERENCE_PREFIX)


class Failure(Enum):
    """A failure ``op`` reports, recognised from its stderr."""

    TOKEN_MALFORMED = "token_malformed"  # noqa: S105 - a failure's name, not a token
    TOKEN_REFUSED = "token_refused"  # noqa: S105 - a failure's name, not a token
    NO_VAULT = "no_vault"
    AMBIGUOUS_ITEM = "ambiguous_item"
    NO_ITEM = "no_item"
    NO_FIELD = "no_field"
    BAD_REFERENCE = "bad_reference"
    FORBIDDEN = "forbidden"
    RATE_LIMITED = "rate_limited"
    OFFLINE = "offline"
    UNKNOWN_FLAG = "unknown_flag"
    NOT_SIGNED_IN = "not_signed_in"


# Order matters: the first match wins. Texts are those op 2.x prints (tests/fake_op/op
# names the source of each).
_PATTERNS: tuple[tuple[re.Pattern[str], Failure], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), failure)
    for pattern, failure in (
        (
            r"DecodeSACredentials|DeserializeServiceAccountAuthToken|unrecognized auth type|"
            r"illegal base64|invalid credentials provided",
            Failure.TOKEN_MALFORMED,
        ),
        (
            r"\(401\)|Unauthorized|authorization.*(expired|revoked)|token.*(expired|revoked)",
            Failure.TOKEN_REFUSED,
        ),
        (r"secret references should match|invalid secret reference", Failure.BAD_REFERENCE),
        (r"isn't a vault in this account|vault.*not found|no vault", Failure.NO_VAULT),
        (r"More than one item matches", Failure.AMBIGUOUS_ITEM),
        (r"isn't an item|doesn't seem to be an item|item.*not found", Failure.NO_ITEM),
        (r"could not find field|isn't a field|field.*not found", Failure.NO_FIELD),
        (r"\(403\)|Forbidden|not authorized to access|doesn't have permission", Failure.FORBIDDEN),
        (r"\(429\)|Too Many Requests|rate limit", Failure.RATE_LIMITED),
        (
            r"dial tcp|no such host|connection refused|i/o timeout|could not reach|"
            r"network is unreachable|TLS handshake|context deadline exceeded",
            Failure.OFFLINE,
        ),
        (r"unknown command|unknown flag|unknown shorthand flag", Failure.UNKNOWN_FLAG),
        (
            r"not currently signed in|no account found|account is not signed in",
            Failure.NOT_SIGNED_IN,
        ),
    )
)

#: What to do, for failures whose fix does not depend on what was read.
COMMON_FIXES: dict[Failure, str] = {
    Failure.TOKEN_MALFORMED: (
        f"{TOKEN_VARIABLE} is not a valid 1Password service account token (malformed or "
        "truncated); paste the whole token (it starts with 'ops_')"
    ),
    Failure.TOKEN_REFUSED: (
        f"1Password refused {TOKEN_VARIABLE}: the service account token is invalid, "
        "expired or revoked; issue a new token and update the deployment's secret"
    ),
    Failure.RATE_LIMITED: (
        "1Password rate-limited the service account; wait, or raise its limits "
        "(op service-account ratelimit shows the usage)"
    ),
    Failure.OFFLINE: (
        "op could not reach 1Password (network, DNS or proxy); check outbound HTTPS from this host"
    ),
    Failure.NOT_SIGNED_IN: (
        f"op is not signed in: set {TOKEN_VARIABLE} to the service account token"
    ),
}


def recognise(stderr: str) -> Failure | None:
    """The known failure op's stderr reports, or ``None``."""
    return next((failure for pattern, failure in _PATTERNS if pattern.search(stderr)), None)


def summarise(stderr: str, secrets: Sequence[str]) -> str:
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


@dataclass(frozen=True)
class Outcome:
    """One finished ``op`` run."""

    returncode: int
    stdout: bytes
    stderr: str

    @property
    def failure(self) -> Failure | None:
        return recognise(self.stderr)


@dataclass(frozen=True)
class Op:
    """A runnable ``op``: its path, its environment (with the token) and its timeout."""

    executable: str
    environ: Mapping[str, str]
    timeout: float

    @property
    def token(self) -> str:
        return self.environ.get(TOKEN_VARIABLE, "")

    def run(self, args: Sequence[str], what: str) -> Outcome:
        """Run ``op args`` (argv list, no shell); ``what`` names the command in errors."""
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell
                [self.executable, *args],
                env=dict(self.environ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise CredentialsError(
                f"the 1Password CLI ({self.executable}) disappeared or cannot run; reinstall op"
            ) from None
        except PermissionError:
            raise CredentialsError(
                f"the 1Password CLI ({self.executable}) is not executable by this process"
            ) from None
        except subprocess.TimeoutExpired:
            # The exception holds op's partial output: never chain it.
            raise CredentialsError(
                f"{what} did not finish within {self.timeout:g} s and was stopped; "
                "check the network path to 1Password"
            ) from None
        return Outcome(done.returncode, done.stdout, done.stderr.decode("utf-8", "replace"))

    def detail(self, outcome: Outcome, *hide: str) -> str:
        """An unknown failure's first line without the token or ``hide``, or ``""``."""
        return summarise(outcome.stderr, [self.token, *hide])

    def version(self) -> Version:
        """``op --version``, probed once per executable file (path, size, mtime) and process.

        Raises :class:`CredentialsError` when op prints no version or one older than
        :data:`MINIMUM_VERSION`.
        """
        try:
            stat = os.stat(self.executable)
            key: tuple[object, ...] = (self.executable, stat.st_size, stat.st_mtime_ns)
        except OSError:
            key = (self.executable,)
        known = _VERSIONS.get(key)
        if known is None:
            outcome = self.run(["--version"], "op --version")
            match = _VERSION.search(outcome.stdout.decode("utf-8", "replace"))
            if outcome.returncode != 0 or match is None:
                raise CredentialsError(
                    f"{self.executable} --version printed no version (exit "
                    f"{outcome.returncode}); check that op on PATH is the 1Password CLI 2"
                )
            known = (int(match[1]), int(match[2]), int(match[3]))
            _VERSIONS[key] = known
        if known < MINIMUM_VERSION:
            raise CredentialsError(
                f"the installed 1Password CLI is {version_text(known)}; service accounts "
                f"need op {version_text(MINIMUM_VERSION)} or later: install a current op"
            )
        return known


#: (executable, size, mtime) -> version: an upgraded op in place is probed again.
_VERSIONS: dict[tuple[object, ...], Version] = {}


def forget_versions() -> None:
    """Forget every probed version (tests that swap the emulated op version)."""
    _VERSIONS.clear()


def prepare(
    environ: Mapping[str, str] | None = None,
    *,
    executable: str = OP_EXECUTABLE,
    timeout: float | None = None,
    needs: str = "the onepassword backend",
) -> Op:
    """An :class:`Op` for ``executable`` on ``environ``'s PATH, authenticated by the token.

    Raises :class:`CredentialsError` when the token is unset or op is not installed;
    ``needs`` says who needs op, for those messages.
    """
    env = dict(os.environ if environ is None else environ)
    if not env.get(TOKEN_VARIABLE, "").strip():
        raise CredentialsError(
            f"{TOKEN_VARIABLE} is not set in the environment; {needs} runs op as a 1Password "
            "service account and needs its token"
        )
    for variable in CONNECT_VARIABLES:
        env.pop(variable, None)
    found = shutil.which(executable, path=env.get("PATH"))
    if found is None:
        raise CredentialsError(
            f"the 1Password CLI ({executable!r}) is not installed or not on PATH; "
            f"install op {version_text(MINIMUM_VERSION)} or later on this host ({needs} needs it)"
        )
    return Op(found, env, OP_TIMEOUT_SECONDS if timeout is None else timeout)


def item_get_argv(item: str, vault: str, version: Version) -> list[str]:
    """``op item get`` for the JSON item, with ``--reveal`` where op conceals without it."""
    argv = ["item", "get", item, "--vault", vault, "--format", "json"]
    if version >= REVEAL_VERSION:
        argv.append("--reveal")
    return argv


#: What to do about a reference op could not read, by failure.
_REFERENCE_FIXES: dict[Failure, str] = {
    Failure.BAD_REFERENCE: (
        "it is not a valid secret reference (op://<vault>/<item>[/<section>]/<field>)"
    ),
    Failure.NO_VAULT: (
        "its vault does not exist or the service account cannot read it; grant the service "
        "account read access to that vault"
    ),
    Failure.NO_ITEM: "its item does not exist in that vault; fix the reference or create the item",
    Failure.AMBIGUOUS_ITEM: (
        "more than one item has its item's title; use the item's id in the reference"
    ),
    Failure.NO_FIELD: "its item has no such field; fix the field name in the reference",
    Failure.FORBIDDEN: "the service account may not read its item; give it read_items on the vault",
    Failure.UNKNOWN_FLAG: (
        f"the installed op does not understand 'op read'; install op "
        f"{version_text(MINIMUM_VERSION)} or later"
    ),
}


def read_reference(
    reference: str,
    source: str,
    *,
    environ: Mapping[str, str] | None = None,
    executable: str = OP_EXECUTABLE,
    timeout: float | None = None,
) -> str:
    """The value ``op read`` prints for ``reference`` (one trailing newline removed).

    ``source`` names where the reference was found (an environment variable, a file's
    field). Errors name ``source`` and say what to fix; they never quote the reference's
    target value, and not the reference either (it is the configured value).
    """
    where = f"{source} holds a 1Password secret reference that op read could not resolve"
    try:
        op = prepare(
            environ, executable=executable, timeout=timeout, needs="resolving op:// references"
        )
        op.version()
        outcome = op.run(["read", reference.strip()], f"op read for {source}")
    except CredentialsError as exc:
        raise CredentialsError(f"{where}: {exc.message}") from None
    if outcome.returncode != 0:
        failure = outcome.failure
        fix = None if failure is None else _REFERENCE_FIXES.get(failure, COMMON_FIXES.get(failure))
        shown = op.detail(outcome, reference.strip())
        detail = fix or f"op exited {outcome.returncode}" + (f": {shown}" if shown else "")
        raise CredentialsError(f"{where}: {detail}")
    value = outcome.stdout.decode("utf-8", "replace")
    return value[:-1] if value.endswith("\n") else value
