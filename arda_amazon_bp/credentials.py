"""Creators API credentials: the validated four fields, and a provider that caches them.

Backends (``backends/``) only know how to *load* a set; :class:`CredentialProvider`
decides *when*: once per ``AMAZON_CREDENTIALS_TTL_SECONDS``, at once after Amazon refused
the client (rotation), and never twice in parallel (single-flight), so a slow ``op`` run
is paid once however many requests arrive.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import pluggy

from .config import ConfigError

if TYPE_CHECKING:
    from .plugins import AppPlugins

logger = logging.getLogger(__name__)

#: Credential versions Amazon issues: 2.x Cognito, 3.x Login with Amazon.
COGNITO_VERSIONS = frozenset({"2.1", "2.2", "2.3"})
LWA_VERSIONS = frozenset({"3.1", "3.2", "3.3"})
VERSIONS = COGNITO_VERSIONS | LWA_VERSIONS

#: The four fields, by their Python names.
FIELDS: tuple[str, ...] = ("credential_id", "credential_secret", "version", "partner_tag")

# Associates tracking ids look like "storename-20" (store-specific numeric suffix).
_VERSION_LIKE = re.compile(r"^\d{1,2}(\.\d{1,2})?$")
_PARTNER_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,126}-\d{2}$")
# Whitespace or control characters inside an id or secret are paste accidents (a wrapped
# line, a trailing "\n" inside quotes); Amazon would only answer "invalid_client".
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")

#: After a failed load (or a forced reload that found the same set), callers within this
#: many seconds share that outcome instead of running the backend again.
DEFAULT_COOLDOWN_SECONDS = 5.0


class CredentialsError(Exception):
    """Credentials could not be loaded or are malformed.

    The message names what to fix (a variable, a file, a vault, a field label) and never
    contains a secret or a token. ``missing`` lists the credential fields (Python names,
    see :data:`FIELDS`) the backend could not find — ``()`` when all four were read but
    one is malformed, ``None`` when the fields could not be read at all — so
    ``flask amazon check-credentials`` can say which were found.
    """

    def __init__(self, message: str, *, missing: Iterable[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.missing: tuple[str, ...] | None = None if missing is None else tuple(missing)

    def __repr__(self) -> str:
        return f"CredentialsError({self.message!r})"


def mask(value: str) -> str:
    """At most the last 4 characters of an identifier, the rest hidden.

    Short values are hidden entirely: 4 of 8 characters would give too much away.
    """
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


def _as_text(value: object) -> str | None:
    # A JSON file may hold the version as a number (2.1); anything else is not a field.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.strip()
    return None


def validate(fields: Mapping[str, object], source: str) -> Credentials:
    """Build :class:`Credentials` from raw fields, or raise naming what is wrong.

    ``source`` says where the fields came from, e.g. ``"environment variables
    AMAZON_CREATORS_*"``, so the error tells an operator exactly what to fix. Messages
    quote the version and the partner tag (not secret) but never the id or the secret.
    """
    values = {name: _as_text(fields.get(name)) for name in FIELDS}
    missing = [name for name, value in values.items() if not value]
    if missing:
        raise CredentialsError(
            f"missing or empty credential field(s) {', '.join(missing)} in {source}",
            missing=missing,
        )
    clean: dict[str, str] = {name: value for name, value in values.items() if value}
    for name in ("credential_id", "credential_secret"):
        if _BAD_CHARS.search(clean[name]):
            raise CredentialsError(
                f"{name} from {source} contains whitespace or control characters "
                "(a paste accident?); store it as one unbroken line",
                missing=(),
            )
    # Rejected values are described, not quoted: a secret pasted into the wrong field
    # would otherwise reach logs, error bodies and CLI output.
    if clean["version"] not in VERSIONS:
        shown = (
            repr(clean["version"])
            if _VERSION_LIKE.match(clean["version"])
            else (f"a {len(clean['version'])}-character value")
        )
        raise CredentialsError(
            f"credential version from {source} is {shown}, not one of "
            f"{', '.join(sorted(VERSIONS))}",
            missing=(),
        )
    if not _PARTNER_TAG.match(clean["partner_tag"]):
        raise CredentialsError(
            f"partner tag from {source} (a {len(clean['partner_tag'])}-character value) is not "
            "shaped like an Associates tracking id (e.g. 'mystore-20')",
            missing=(),
        )
    return Credentials(**clean)


class CredentialBackend(Protocol):
    """What a backend factory returns."""

    def load(self) -> Credentials:
        """Read the current credentials, or raise :class:`CredentialsError`."""
        ...


#: ``factory(config) -> backend``, as returned by ``arda_amazon_credential_backends()``.
BackendFactory = Callable[[Mapping[str, Any]], CredentialBackend]


class RegionMismatchError(CredentialsError):
    """A credential whose version's region does not serve the store it was loaded for."""


def check_region(credentials: Credentials, marketplace: str) -> None:
    """Raise :class:`RegionMismatchError` naming store and regions when the version of
    ``credentials`` cannot serve ``marketplace`` (docs/architecture.md, "Marketplaces")."""
    from .marketplaces import MARKETPLACES, REGION_BY_VERSION

    store = MARKETPLACES.get(marketplace)
    region = REGION_BY_VERSION.get(credentials.version)
    if store is not None and region != store.region:
        raise RegionMismatchError(
            f"the credential for store {marketplace} has version {credentials.version}, "
            f"which serves region {region}; {marketplace} is in region {store.region} "
            f"(use a credential of region {store.region} for it)",
            missing=(),
        )


class StoreBackend:
    """One store's view of a backend: every loaded set is checked against the store's
    region before anyone may use it, so Amazon never sees a call bound to fail."""

    def __init__(self, backend: CredentialBackend, marketplace: str) -> None:
        self.backend = backend
        self.marketplace = marketplace

    def load(self) -> Credentials:
        credentials = self.backend.load()
        check_region(credentials, self.marketplace)
        return credentials

    def __getattr__(self, name: str) -> Any:
        # What operators' commands read off a backend (op_version, path …) stays visible.
        return getattr(self.backend, name)

    def __repr__(self) -> str:
        return repr(self.backend)


def store_fields(
    data: Mapping[str, Any], marketplace: str | None, *, key: str = "stores"
) -> dict[str, Any]:
    """The fields for ``marketplace`` from a mapping holding a default set and per-store
    sets: ``{<four fields>, "stores": {"GB": {...}, "www.amazon.de": {...}}}``.

    A store's entry is found by ISO country code or host (any case); each of its fields
    wins over the default one, so a store may override only its partner tag. Without an
    entry (or with ``marketplace`` ``None``) the default set serves.
    """
    fields = {name: data.get(name) for name in FIELDS if data.get(name) is not None}
    stores = data.get(key)
    if marketplace is None or not isinstance(stores, Mapping):
        return fields
    from .marketplaces import MARKETPLACES

    store = MARKETPLACES.get(marketplace)
    names = {marketplace.lower(), store.country.lower() if store else ""}
    for name, entry in stores.items():
        if str(name).strip().lower() in names and isinstance(entry, Mapping):
            fields.update({f: entry[f] for f in FIELDS if entry.get(f) is not None})
    return fields


def available_backends(
    pm: pluggy.PluginManager | AppPlugins, marketplace: str | None = None
) -> dict[str, tuple[BackendFactory, str]]:
    """Every backend the registered plugins offer: ``{name: (factory, plugin name)}``.

    ``marketplace`` is the store the backends will load for (``None``: the default set);
    an implementation that takes no ``marketplace`` argument is asked without it
    (pluggy's rule: an implementation may take fewer arguments than its spec), and its
    backend serves every store.

    Raises :class:`~arda_amazon_bp.config.ConfigError` when two plugins offer one name
    (naming both): which one would win is an accident of registration order.
    """
    found: dict[str, tuple[BackendFactory, str]] = {}
    arguments = {"marketplace": marketplace}
    # Hookimpls one by one (not the hook call) so each name is traced to its plugin.
    for impl in pm.hook.arda_amazon_credential_backends.get_hookimpls():
        offered = impl.function(**{name: arguments[name] for name in impl.argnames})
        if offered is None:
            continue
        if not isinstance(offered, Mapping):
            raise ConfigError(
                f"plugin {impl.plugin_name!r}: arda_amazon_credential_backends() must return "
                f"a mapping of name to factory, got {type(offered).__name__}"
            )
        for name, factory in offered.items():
            if name in found:
                raise ConfigError(
                    f"credential backend {name!r} is offered by two plugins, "
                    f"{found[name][1]!r} and {impl.plugin_name!r}; uninstall or unregister one"
                )
            if not callable(factory):
                raise ConfigError(
                    f"plugin {impl.plugin_name!r}: factory of credential backend {name!r} "
                    "is not callable"
                )
            found[str(name)] = (factory, impl.plugin_name)
    return found


def backend_from_plugins(
    pm: pluggy.PluginManager | AppPlugins,
    name: str,
    config: Mapping[str, Any],
    marketplace: str | None = None,
) -> CredentialBackend:
    """Build the backend called ``name`` (``AMAZON_CREDENTIALS_BACKEND``) from ``config``.

    An unknown name raises :class:`~arda_amazon_bp.config.ConfigError` listing the
    available names; the factory itself raises ``ConfigError`` for a missing or malformed
    setting (e.g. ``AMAZON_CREDENTIALS_FILE`` unset), so a misconfigured app fails at
    ``init_app`` rather than on its first request.
    """
    backends = available_backends(pm, marketplace)
    if name not in backends:
        names = ", ".join(sorted(backends)) or "none"
        raise ConfigError(
            f"AMAZON_CREDENTIALS_BACKEND={name!r} is not a known credential backend; "
            f"available: {names}"
        )
    factory, plugin_name = backends[name]
    backend = factory(config)
    if not callable(getattr(backend, "load", None)):
        raise ConfigError(
            f"credential backend {name!r} (plugin {plugin_name!r}) returned "
            f"{type(backend).__name__}, which has no load() method"
        )
    return backend


class _Flight:
    """One backend load that concurrent callers wait for instead of starting their own."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.outcome: Credentials | CredentialsError = CredentialsError("load did not finish")


class CredentialProvider:
    """Cached, single-flight access to a backend's credentials.

    * :meth:`get` answers from the cache and re-reads after ``ttl_seconds``.
    * :meth:`reload` re-reads at once (Amazon refused the set the caller used).
    * However many threads ask, at most one backend load runs at a time; the others wait
      for it and share its outcome.
    * While a TTL refresh runs, other :meth:`get` callers keep the expiring set rather
      than queue behind a slow ``op`` run; only the caller that started it waits.
    * A failed load is remembered for ``cooldown_seconds``: a pile of requests does not
      run ``op`` once each, one after the other. While remembered, :meth:`get` keeps
      serving the previous set if there is one (a 1Password outage must not take imports
      down while the old set still works); with no previous set it raises the error.
    """

    def __init__(
        self,
        backend: CredentialBackend,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        cooldown_seconds: float = DEFAULT_COOLDOWN_SECONDS,
        on_load: Callable[[bool], None] | None = None,
    ) -> None:
        self._backend = backend
        self._on_load = on_load  # told whether each backend load succeeded (metrics)
        self._ttl = ttl_seconds
        self._clock = clock
        self._cooldown = cooldown_seconds
        self._lock = threading.Lock()
        # (credentials, loaded_at) in one attribute, so a lock-free read sees a pair.
        self._cached: tuple[Credentials, float] | None = None
        self._flight: _Flight | None = None
        self._failure: tuple[CredentialsError, float] | None = None
        self._same_after_reload: tuple[Credentials, float] | None = None
        self._loads = 0

    @property
    def backend(self) -> CredentialBackend:
        return self._backend

    @property
    def loads(self) -> int:
        """How many backend loads this provider has started (for tests and metrics)."""
        return self._loads

    def __repr__(self) -> str:
        cached = self._cached[0] if self._cached else None
        return f"CredentialProvider(backend={self._backend!r}, current={cached!r})"

    def get(self) -> Credentials:
        """The cached set, re-read after the TTL; raises :class:`CredentialsError`."""
        cached = self._cached
        if cached is not None and self._clock() - cached[1] < self._ttl:
            return cached[0]
        return self._load(force=False, stale=None)

    def reload(self, stale: Credentials | None = None) -> Credentials:
        """Re-read now; concurrent callers share one read.

        ``stale`` is the set Amazon just refused. When the cache already holds another
        set, someone reloaded meanwhile and that set is returned without a new read; when
        a reload within the cooldown found ``stale`` again, that answer is shared too.
        ``reload()`` without ``stale`` always reads (operator commands), joining a read
        already in flight.
        """
        return self._load(force=True, stale=stale)

    def _load(self, *, force: bool, stale: Credentials | None) -> Credentials:
        with self._lock:
            now = self._clock()
            cached = self._cached
            if not force and cached is not None and now - cached[1] < self._ttl:
                return cached[0]  # another thread refreshed it while we queued for the lock
            if stale is not None:
                if cached is not None and cached[0] != stale:
                    return cached[0]  # someone reloaded meanwhile
                same = self._same_after_reload
                if same is not None and same[0] == stale and now - same[1] < self._cooldown:
                    return same[0]  # re-read moments ago and still the same set
            flight = self._flight
            if flight is not None and not force and cached is not None:
                return cached[0]  # a refresh is under way: the expiring set serves meanwhile
            leader = flight is None
            if flight is None:
                failure = self._failure
                remembered = failure is not None and now - failure[1] < self._cooldown
                if failure is not None and remembered and not (force and stale is None):
                    if not force and cached is not None:
                        return cached[0]
                    raise _copy(failure[0])
                flight = self._flight = _Flight()
                self._loads += 1
        if leader:
            self._run(flight, stale)
        else:
            flight.done.wait()
        outcome = flight.outcome
        if isinstance(outcome, Credentials):
            return outcome
        cached = self._cached
        if not force and cached is not None:
            return cached[0]
        raise _copy(outcome)

    def _run(self, flight: _Flight, stale: Credentials | None) -> None:
        try:
            flight.outcome = self._backend.load()
        except CredentialsError as exc:
            flight.outcome = exc
        except Exception as exc:  # a backend bug must still release the waiters
            # Type and frames only: an arbitrary exception's text may quote what it parsed.
            logger.error(
                "credential backend %r failed unexpectedly (%s); traceback without message:\n%s",
                self._backend,
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )
            flight.outcome = CredentialsError(
                f"credential backend {type(self._backend).__name__} failed unexpectedly "
                f"({type(exc).__name__}); see the application log"
            )
        finally:
            # Also after a BaseException: the waiters get the default "did not finish".
            self._settle(flight.outcome, stale)
            flight.done.set()
            if self._on_load is not None:  # after set(): a failing observer strands no one
                self._on_load(isinstance(flight.outcome, Credentials))

    def _settle(self, outcome: Credentials | CredentialsError, stale: Credentials | None) -> None:
        with self._lock:
            now = self._clock()
            self._flight = None
            if isinstance(outcome, Credentials):
                previous = self._cached[0] if self._cached else None
                self._cached = (outcome, now)
                self._failure = None
                self._same_after_reload = (outcome, now) if outcome == stale else None
                if previous is not None and previous.fingerprint != outcome.fingerprint:
                    logger.info("amazon credentials rotated: now %r", outcome)
                return
            self._failure = (outcome, now)
            serving = "; serving the previous set meanwhile" if self._cached else ""
        logger.warning("amazon credentials could not be loaded%s: %s", serving, outcome.message)


def _copy(error: CredentialsError) -> CredentialsError:
    # A fresh exception per caller: one object raised in many threads would share (and
    # keep growing) one __traceback__.
    return CredentialsError(error.message, missing=error.missing)
