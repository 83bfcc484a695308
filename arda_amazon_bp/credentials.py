"""Creators API credentials: the validated four fields, and a provider that caches them.

Backends (``backends/``) only know how to *load* a set; :class:`CredentialProvider`
decides *when*: once per ``AMAZON_CREDENTIALS_TTL_SECONDS``, at once after Amazon refused
the client (rotation), and never twice in parallel (single-flight), so a slow ``op`` run
is paid once however many requests arrive.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

#: Credential versions Amazon issues: 2.x Cognito, 3.x Login with Amazon.
COGNITO_VERSIONS = frozenset({"2.1", "2.2", "2.3"})
LWA_VERSIONS = frozenset({"3.1", "3.2", "3.3"})
VERSIONS = COGNITO_VERSIONS | LWA_VERSIONS

#: The four fields, by their Python names.
FIELDS: tuple[str, ...] = ("credential_id", "credential_secret", "version", "partner_tag")

# Associates tracking ids look like "storename-20" (store-specific numeric suffix).
_PARTNER_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}-\d{2}$")


class CredentialsError(Exception):
    """Credentials could not be loaded or are malformed.

    The message names what to fix (a variable, a file, a vault, a field label) and never
    contains a secret or a token.
    """


def mask(value: str) -> str:
    """At most the last 4 characters of an identifier, the rest hidden."""
    return "…" + value[-4:] if len(value) > 8 else "…"


@dataclass(frozen=True)
class Credentials:
    """One credential triple (id, secret, version) and the partner tag it serves."""

    credential_id: str
    credential_secret: str = field(repr=False)
    version: str
    partner_tag: str

    def __repr__(self) -> str:
        return (
            f"Credentials(credential_id={mask(self.credential_id)!r}, version={self.version!r}, "
            f"partner_tag={self.partner_tag!r})"
        )

    __str__ = __repr__

    @property
    def family(self) -> str:
        """``"cognito"`` for 2.x, ``"lwa"`` (Login with Amazon) for 3.x."""
        return "cognito" if self.version in COGNITO_VERSIONS else "lwa"

    @property
    def quota_key(self) -> str:
        """Stable key for quota and caches: a hash of id and version, never the secret."""
        digest = hashlib.sha256(f"{self.credential_id}\x00{self.version}".encode()).hexdigest()
        return digest[:16]

    @property
    def fingerprint(self) -> str:
        """Changes whenever any field changes (secret included) without revealing it."""
        raw = "\x00".join((self.credential_id, self.credential_secret, self.version))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def validate(fields: dict[str, object], source: str) -> Credentials:
    """Build :class:`Credentials` from raw fields, or raise naming what is wrong.

    ``source`` says where the fields came from, e.g. ``"environment variable
    AMAZON_CREATORS_{FIELD}"``, so the error tells an operator exactly what to fix.
    """
    missing = [name for name in FIELDS if not isinstance(fields.get(name), str) or not str(fields[name]).strip()]
    if missing:
        raise CredentialsError(f"missing or empty credential field(s) {', '.join(missing)} in {source}")
    values = {name: str(fields[name]).strip() for name in FIELDS}
    if values["version"] not in VERSIONS:
        raise CredentialsError(
            f"credential version {values['version']!r} from {source} is not one of "
            f"{', '.join(sorted(VERSIONS))}"
        )
    if not _PARTNER_TAG.match(values["partner_tag"]):
        raise CredentialsError(
            f"partner tag {values['partner_tag']!r} from {source} is not shaped like an "
            "Associates tracking id (e.g. 'mystore-20')"
        )
    return Credentials(**values)


class CredentialBackend(Protocol):
    """What a backend factory returns."""

    def load(self) -> Credentials:
        """Read the current credentials, or raise :class:`CredentialsError`."""
        ...


class CredentialProvider:
    """Cached, single-flight access to a backend's credentials."""

    def __init__(
        self,
        backend: CredentialBackend,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._backend = backend
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Credentials | None = None
        self._loaded_at = 0.0
        self._generation = 0

    @property
    def backend(self) -> CredentialBackend:
        return self._backend

    def get(self) -> Credentials:
        """The cached set, re-read after the TTL; raises :class:`CredentialsError`."""
        current = self._current
        if current is not None and self._clock() - self._loaded_at < self._ttl:
            return current
        generation = self._generation
        with self._lock:
            # Another thread reloaded while we waited: use its result.
            if self._current is not None and self._generation != generation:
                return self._current
            if self._current is not None and self._clock() - self._loaded_at < self._ttl:
                return self._current
            return self._reload_locked()

    def reload(self, stale: Credentials | None = None) -> Credentials:
        """Re-read now (Amazon refused ``stale``); concurrent callers share one read."""
        with self._lock:
            if stale is not None and self._current is not None and self._current != stale:
                return self._current
            return self._reload_locked()

    def _reload_locked(self) -> Credentials:
        credentials = self._backend.load()
        self._current = credentials
        self._loaded_at = self._clock()
        self._generation += 1
        return credentials
