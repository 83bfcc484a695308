"""OAuth tokens for the Creators API: cached per credential set, refreshed single-flight.

One :class:`Tokens` per :class:`~.creators.CreatorsClient`. It

- loads credentials from the :class:`~.credentials.CredentialProvider`;
- caches an OAuth token per credential fingerprint until shortly before it expires and
  refreshes it single-flight (N concurrent calls → one token request);
- after ``invalid_client`` re-reads the credentials once (secret rotation) and remembers
  which set replaced the refused one, so later calls go straight to the new set;
- maps every token-endpoint answer to a token or an :class:`AmazonImportError`.

It sends nothing itself: each token request goes through the client's exchange (one
session, one log line, one observer event per call). Token requests do not count against
the Creators API quota. Endpoints, scopes and body formats by credential version are in
docs/architecture.md, "Upstream facts".
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import requests

from .config import Settings
from .credentials import CredentialProvider, Credentials, CredentialsError
from .errors import UpstreamReason, credentials_unavailable, upstream_unavailable
from .forks import reset_in_child
from .upstream import (
    Emit,
    Exchange,
    _Call,
    _event_details,
    _fail,
    _json,
    _lower_code,
    _read_error,
    _server_error,
    _throttled,
)

logger = logging.getLogger(__name__)

#: Token endpoint by credential version (2.x Cognito, 3.x Login with Amazon).
TOKEN_URLS: dict[str, str] = {
    "2.1": "https://creatorsapi.auth.us-east-1.amazoncognito.com/oauth2/token",
    "2.2": "https://creatorsapi.auth.eu-south-2.amazoncognito.com/oauth2/token",
    "2.3": "https://creatorsapi.auth.us-west-2.amazoncognito.com/oauth2/token",
    "3.1": "https://api.amazon.com/auth/o2/token",
    "3.2": "https://api.amazon.co.uk/auth/o2/token",
    "3.3": "https://api.amazon.co.jp/auth/o2/token",
}


def token_url_for(override: str | None, version: str) -> str:
    """The token endpoint for ``version``: ``AMAZON_TOKEN_URL`` with ``{version}`` replaced
    by the version (one sandbox override for several versions), else Amazon's own."""
    if override:
        return override.replace("{version}", version)
    return TOKEN_URLS[version]


#: Scope by credential family.
TOKEN_SCOPES: dict[str, str] = {"cognito": "creatorsapi/default", "lwa": "creatorsapi::default"}

#: Used when the token answer has no usable ``expires_in``.
DEFAULT_TOKEN_LIFETIME = 3600.0
#: Refresh this long before expiry: the smaller of 60 s and 10 % of the lifetime.
TOKEN_REFRESH_MARGIN = 60.0


@dataclass
class _Token:
    value: str = field(repr=False)
    refresh_at: float


class _InvalidClient(Exception):
    """The token endpoint refused the client id/secret: re-read credentials once."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class Tokens:
    """Thread-safe token cache for one client; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        credentials: CredentialProvider,
        *,
        exchange: Exchange,
        emit: Emit,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._exchange = exchange
        self._emit = emit
        self._clock = clock
        self._tokens: dict[str, _Token] = {}  # by credential fingerprint
        self._replaced: dict[str, Credentials] = {}  # stale fingerprint -> re-read set
        self._token_lock = threading.Lock()
        reset_in_child(self._reset_for_new_process)

    def __repr__(self) -> str:
        return f"Tokens(cached={len(self._tokens)})"

    def __len__(self) -> int:
        return len(self._tokens)

    def _reset_for_new_process(self) -> None:
        # Runs in a forked child: a lock held by a parent thread would never be released.
        # Tokens stay valid.
        self._token_lock = threading.Lock()

    def clear(self) -> None:
        """Forget every cached token (credential replacements are kept)."""
        with self._token_lock:
            self._tokens.clear()

    def load_credentials(self) -> Credentials:
        """The current set; a backend failure is logged and answered as unavailable."""
        try:
            return self._credentials.get()
        except CredentialsError as exc:
            logger.error("amazon credentials could not be loaded: %s", exc)
            raise credentials_unavailable() from None

    def _reload_credentials(self, stale: Credentials) -> Credentials:
        try:
            return self._credentials.reload(stale)
        except CredentialsError as exc:
            logger.error("amazon credentials could not be re-read: %s", exc)
            raise credentials_unavailable() from None

    def _token_url(self, credentials: Credentials) -> str:
        return token_url_for(self._settings.token_url, credentials.version)

    def _cached(self, credentials: Credentials, stale: str | None) -> str | None:
        token = self._tokens.get(credentials.fingerprint)
        if token is None or token.value == stale or self._clock() >= token.refresh_at:
            return None
        return token.value

    def access_token(
        self, credentials: Credentials, marketplace: str, *, stale: str | None = None
    ) -> tuple[Credentials, str]:
        """A usable token for ``credentials`` (or for the set that replaced them).

        ``stale`` is a token Amazon just refused: it is never handed out again. Callers
        that wait on the lock re-check the cache, so one fetch serves them all.
        """
        credentials = self._replaced.get(credentials.fingerprint, credentials)
        value = self._cached(credentials, stale)
        if value is not None:
            return credentials, value
        with self._token_lock:
            credentials = self._replaced.get(credentials.fingerprint, credentials)
            value = self._cached(credentials, stale)
            if value is not None:
                return credentials, value
            try:
                token = self._fetch_token(credentials, marketplace)
            except _InvalidClient as refused:
                credentials = self._rotate(credentials, marketplace, refused.status)
                value = self._cached(credentials, stale)
                if value is not None:
                    return credentials, value
                try:
                    token = self._fetch_token(credentials, marketplace)
                except _InvalidClient as again:
                    self._credentials_rejected(credentials, marketplace, "token", again.status)
            self._tokens = {fp: t for fp, t in self._tokens.items() if self._clock() < t.refresh_at}
            self._tokens[credentials.fingerprint] = token
            return credentials, token.value

    def _rotate(self, stale: Credentials, marketplace: str, status: int) -> Credentials:
        """Re-read credentials once after ``invalid_client``; unchanged → rejected.

        Retrying with an identical set would only repeat the refusal, so it is skipped.
        """
        fresh = self._reload_credentials(stale)
        if fresh.fingerprint == stale.fingerprint:
            self._credentials_rejected(stale, marketplace, "token", status)
        logger.warning(
            "amazon token endpoint refused the client; re-read credentials (version %s)",
            fresh.version,
        )
        self._replaced[stale.fingerprint] = fresh
        self._tokens.pop(stale.fingerprint, None)
        return fresh

    def _credentials_rejected(
        self, credentials: Credentials, marketplace: str, kind: str, status: int
    ) -> NoReturn:
        self._emit("credentials_rejected", _event_details(credentials, marketplace, kind, status))
        raise upstream_unavailable(
            UpstreamReason.CREDENTIALS_REJECTED,
            "Amazon's token endpoint refused the configured Creators API credentials "
            f"(version {credentials.version}); check the credential id and secret.",
            status=status,
        )

    def drop_token(self, credentials: Credentials, value: str) -> None:
        """Forget ``value`` (a token Amazon refused) unless a newer one replaced it."""
        with self._token_lock:
            token = self._tokens.get(credentials.fingerprint)
            if token is not None and token.value == value:
                del self._tokens[credentials.fingerprint]

    def _fetch_token(self, credentials: Credentials, marketplace: str) -> _Token:
        fields = {
            "grant_type": "client_credentials",
            "client_id": credentials.credential_id,
            "client_secret": credentials.credential_secret,
            "scope": TOKEN_SCOPES[credentials.family],
        }
        # Cognito (2.x) takes a form body, Login with Amazon (3.x) a JSON body.
        body: dict[str, Any] = (
            {"data": fields} if credentials.family == "cognito" else {"json": fields}
        )
        started = self._clock()
        # The id too: only its last characters are ever shown (CLI), never in a log line.
        secrets = (credentials.credential_secret, credentials.credential_id)

        def interpret(response: requests.Response, call: _Call, data: bytes) -> _Token:
            return self._interpret_token(response, call, data, credentials, started)

        return self._exchange(
            "token", self._token_url(credentials), marketplace, (), secrets, interpret, **body
        )

    def _interpret_token(
        self,
        response: requests.Response,
        call: _Call,
        data: bytes,
        credentials: Credentials,
        started: float,
    ) -> _Token:
        status = response.status_code
        if 200 <= status < 300:
            payload = _json(data)
            access = payload.get("access_token") if isinstance(payload, dict) else None
            if not isinstance(access, str) or not access.strip():
                raise _fail(
                    call,
                    UpstreamReason.INVALID_RESPONSE,
                    "Amazon's token endpoint answered without an access token.",
                )
            lifetime = _lifetime(payload.get("expires_in") if isinstance(payload, dict) else None)
            margin = min(TOKEN_REFRESH_MARGIN, lifetime * 0.1)
            return _Token(access.strip(), started + lifetime - margin)
        code, _ = _read_error(call, data)
        if status == 429:
            raise _throttled(call, response)
        if status >= 500:
            raise _server_error(call, status)
        if status in (400, 401) and _lower_code(code) == "invalid_client":
            call.outcome = UpstreamReason.CREDENTIALS_REJECTED.value
            call.level = logging.WARNING
            raise _InvalidClient(status)
        if status in (400, 401, 403):
            call.outcome = UpstreamReason.CREDENTIALS_REJECTED.value
            call.level = logging.ERROR
            self._credentials_rejected(credentials, call.marketplace, "token", status)
        if 400 <= status < 500:
            raise _fail(
                call,
                UpstreamReason.REQUEST_REJECTED,
                f"Amazon's token endpoint refused the request (HTTP {status}).",
                status=status,
            )
        raise _fail(
            call,
            UpstreamReason.INVALID_RESPONSE,
            f"Amazon's token endpoint answered with unexpected HTTP status {status}.",
            status=status,
        )


def _lifetime(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_TOKEN_LIFETIME
