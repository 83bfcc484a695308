"""Creators API client on ``requests``: tokens, getItems, and every upstream outcome mapped.

One :class:`CreatorsClient` per extension instance. It

- loads credentials from a :class:`~.credentials.CredentialProvider` for each call;
- caches an OAuth token per credential fingerprint until shortly before it expires and
  refreshes it single-flight (N concurrent calls → one token request);
- retries a getItems once after a 401 with a fresh token, and a token request once after
  ``invalid_client`` with freshly re-read credentials (secret rotation);
- maps every answer — or lack of one — to a result or an :class:`AmazonImportError`
  whose message is our own words, never Amazon's body, a token or a secret;
- sends everything through one origin-restricted session (:mod:`.transport`), created
  lazily per process so a gunicorn ``--preload`` fork never shares sockets.

It never waits for quota itself: the caller's ``before_call`` hook runs right before each
getItems attempt (token requests do not count against the Creators API quota).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, TypeVar

import requests
import urllib3.exceptions

from .config import Settings
from .credentials import CredentialProvider, Credentials, CredentialsError
from .errors import (
    AmazonImportError,
    ErrorCode,
    UpstreamReason,
    credentials_unavailable,
    rate_limited,
    upstream_unavailable,
)
from .forks import reset_in_child
from .transport import DisallowedHostError, make_session

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

#: Scope by credential family.
TOKEN_SCOPES: dict[str, str] = {"cognito": "creatorsapi/default", "lwa": "creatorsapi::default"}

#: Resources requested for an import (DESIGN.md §6).
GET_ITEMS_RESOURCES: tuple[str, ...] = (
    "itemInfo.title",
    "itemInfo.byLineInfo",
    "itemInfo.externalIds",
    "itemInfo.features",
    "itemInfo.productInfo",
    "images.primary.large",
    "images.variants.large",
    "offersV2.listings.price",
    "offersV2.listings.availability",
)

GET_ITEMS_PATH = "/catalog/v1/getItems"
MAX_ITEMS_PER_CALL = 10
#: Used when the token answer has no usable ``expires_in``.
DEFAULT_TOKEN_LIFETIME = 3600.0
#: Refresh this long before expiry: the smaller of 60 s and 10 % of the lifetime.
TOKEN_REFRESH_MARGIN = 60.0
#: Bodies above this are not Amazon's (10 items with every resource stay far below).
MAX_BODY_BYTES = 4 * 1024 * 1024
#: Upstream text that may reach a log line (never a caller) is cut to this length.
LOG_TEXT_LIMIT = 200

_ASIN = re.compile(r"^[A-Z0-9]{10}$")
_ASIN_IN_TEXT = re.compile(r"\b[A-Za-z0-9]{10}\b")
_MARKETPLACE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_BEARER = re.compile(r"(?i)bearer\s+[^\s,\"']+")

_PARTNER_TAG_CODES = frozenset({"invalidpartnertag", "invalidassociate"})
_NOT_ELIGIBLE_CODES = frozenset({"associatenoteligible"})
_NOT_FOUND_CODES = frozenset({"itemnotaccessible", "itemnotfound", "noresults"})

#: Our own words for per-item codes (``{asin}`` filled in); callers see these, never
#: Amazon's message.
_ITEM_MESSAGES: dict[str, str] = {
    "itemnotaccessible": "Amazon reports that item {asin} is not available through the "
    "Creators API.",
    "itemnotfound": "Amazon does not know ASIN {asin} in this marketplace.",
    "noresults": "Amazon does not know ASIN {asin} in this marketplace.",
    "invalidparametervalue": "Amazon did not accept ASIN {asin}.",
    "fieldvalidationfailed": "Amazon did not accept ASIN {asin}.",
    "itemnotreturned": "Amazon returned no data for item {asin}.",
}
_ITEM_DEFAULT_MESSAGE = "Amazon could not return data for item {asin}."
ITEM_NOT_RETURNED = "ItemNotReturned"

_T = TypeVar("_T")


@dataclass(frozen=True)
class ItemError:
    """Why Amazon gave no data for one ASIN. ``code`` is Amazon's (sanitized) or
    ``ItemNotReturned``; ``message`` is our own wording, safe to show a caller."""

    code: str
    message: str


@dataclass(frozen=True)
class GetItemsResult:
    """One getItems answer: every requested ASIN is in exactly one of the two dicts."""

    items: dict[str, Mapping[str, Any]]
    errors: dict[str, ItemError]
    credentials: Credentials  # the set used; its partner tag belongs in the links
    #: ASINs of ``errors`` that Amazon named in an error entry; the others got a fallback
    #: (Amazon said nothing about them, e.g. a call refused over another ASIN): only
    #: named ones may be cached as "not accessible".
    named: frozenset[str] = frozenset()


@dataclass
class _Token:
    value: str = field(repr=False)
    refresh_at: float


class _Unauthorized(Exception):
    """getItems answered 401: the caller refreshes the token and retries once."""


class _InvalidClient(Exception):
    """The token endpoint refused the client id/secret: re-read credentials once."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Call:
    """Bookkeeping for one upstream HTTP call: status, outcome, the words for the log."""

    def __init__(
        self,
        kind: str,
        marketplace: str,
        asins: Sequence[str],
        started: float,
        secrets: Sequence[str],
    ) -> None:
        self.kind = kind
        self.marketplace = marketplace
        self.asins = list(asins)
        self.started = started
        self.status: int | None = None
        self.outcome = "ok"
        self.upstream_code: str | None = None
        self.upstream_message: str | None = None
        self.failure: str | None = None  # exception class name for transport failures
        self.level = logging.INFO
        self._secrets = tuple(s for s in secrets if s)

    def loggable(self, text: str | None) -> str | None:
        """Upstream text fit for a log line: secrets removed first, then cut short."""
        return _truncate(_redact(text, self._secrets))


def _lower_code(code: str | None) -> str:
    return (code or "").lower()


class CreatorsClient:
    """Thread-safe Creators API client; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        credentials: CredentialProvider,
        *,
        observer: Callable[[Mapping[str, Any]], None] | None = None,
        on_event: Callable[[str, Mapping[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._observer = observer
        self._on_event = on_event
        self._clock = clock
        self._api_url = settings.creators_api_host.rstrip("/") + GET_ITEMS_PATH
        self._allowed_urls = (
            settings.creators_api_host,
            *((settings.token_url,) if settings.token_url else TOKEN_URLS.values()),
        )
        self._tokens: dict[str, _Token] = {}  # by credential fingerprint
        self._replaced: dict[str, Credentials] = {}  # stale fingerprint -> re-read set
        self._session: requests.Session | None = None
        self._pid = os.getpid()
        self._make_locks()
        reset_in_child(self._reset_for_new_process)  # fresh locks, no parent socket

    def __repr__(self) -> str:
        return (
            f"CreatorsClient(api_host={self._settings.creators_api_host!r}, "
            f"cached_tokens={len(self._tokens)})"
        )

    # --- process and session ----------------------------------------------------------

    def _make_locks(self) -> None:
        self._token_lock = threading.Lock()
        self._state_lock = threading.Lock()

    def _reset_for_new_process(self) -> None:
        # Runs in a forked child: a lock held by a parent thread would never be released,
        # and the parent's pooled sockets must not be shared. Tokens stay valid.
        self._make_locks()
        self._session = None
        self._pid = os.getpid()

    def _http(self) -> requests.Session:
        if self._pid != os.getpid():  # belt and braces where register_at_fork is missing
            self._reset_for_new_process()
        session = self._session
        if session is None:
            with self._state_lock:
                session = self._session
                if session is None:
                    session = self._session = make_session(self._allowed_urls)
        return session

    def close(self) -> None:
        """Close pooled connections and forget cached tokens; the client stays usable."""
        with self._state_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()
        with self._token_lock:
            self._tokens.clear()

    # --- public API -------------------------------------------------------------------

    def get_items(
        self,
        marketplace: str,
        asins: Sequence[str],
        *,
        before_call: Callable[[Credentials], None] | None = None,
    ) -> GetItemsResult:
        """Look up 1..10 ASINs in ``marketplace``; raises :class:`AmazonImportError`.

        ``before_call(credentials)`` runs right before each getItems HTTP attempt (the
        quota layer takes a slot there); whatever it raises propagates unchanged.
        """
        marketplace = marketplace.strip().lower()
        if not _MARKETPLACE.match(marketplace):
            raise ValueError(f"not a marketplace host: {marketplace!r}")
        ids = _normalize_asins(asins)
        credentials = self._load_credentials()
        credentials, token = self._access_token(credentials, marketplace)
        try:
            return self._get_items_once(credentials, token, marketplace, ids, before_call)
        except _Unauthorized:
            credentials, token = self._access_token(credentials, marketplace, stale=token)
        try:
            return self._get_items_once(credentials, token, marketplace, ids, before_call)
        except _Unauthorized:
            self._drop_token(credentials, token)
            self._emit(
                "credentials_rejected",
                self._event_details(credentials, marketplace, "getItems", 401),
            )
            raise upstream_unavailable(
                UpstreamReason.CREDENTIALS_REJECTED,
                "Amazon refused the access token issued for the configured Creators API "
                "credentials twice in a row.",
                status=401,
            ) from None

    # --- credentials and tokens -------------------------------------------------------

    def _load_credentials(self) -> Credentials:
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
        return self._settings.token_url or TOKEN_URLS[credentials.version]

    def _cached(self, credentials: Credentials, stale: str | None) -> str | None:
        token = self._tokens.get(credentials.fingerprint)
        if token is None or token.value == stale or self._clock() >= token.refresh_at:
            return None
        return token.value

    def _access_token(
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
        self._emit(
            "credentials_rejected", self._event_details(credentials, marketplace, kind, status)
        )
        raise upstream_unavailable(
            UpstreamReason.CREDENTIALS_REJECTED,
            "Amazon's token endpoint refused the configured Creators API credentials "
            f"(version {credentials.version}); check the credential id and secret.",
            status=status,
        )

    def _drop_token(self, credentials: Credentials, value: str) -> None:
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
                raise self._fail(
                    call,
                    UpstreamReason.INVALID_RESPONSE,
                    "Amazon's token endpoint answered without an access token.",
                )
            lifetime = _lifetime(payload.get("expires_in") if isinstance(payload, dict) else None)
            margin = min(TOKEN_REFRESH_MARGIN, lifetime * 0.1)
            return _Token(access.strip(), started + lifetime - margin)
        code, _ = self._read_error(call, data)
        if status == 429:
            raise self._throttled(call, response)
        if status >= 500:
            raise self._server_error(call, status)
        if status in (400, 401) and _lower_code(code) == "invalid_client":
            call.outcome = UpstreamReason.CREDENTIALS_REJECTED.value
            call.level = logging.WARNING
            raise _InvalidClient(status)
        if status in (400, 401, 403):
            call.outcome = UpstreamReason.CREDENTIALS_REJECTED.value
            call.level = logging.ERROR
            self._credentials_rejected(credentials, call.marketplace, "token", status)
        if 400 <= status < 500:
            raise self._fail(
                call,
                UpstreamReason.REQUEST_REJECTED,
                f"Amazon's token endpoint refused the request (HTTP {status}).",
                status=status,
            )
        raise self._fail(
            call,
            UpstreamReason.INVALID_RESPONSE,
            f"Amazon's token endpoint answered with unexpected HTTP status {status}.",
            status=status,
        )

    # --- getItems ---------------------------------------------------------------------

    def _get_items_once(
        self,
        credentials: Credentials,
        token: str,
        marketplace: str,
        asins: list[str],
        before_call: Callable[[Credentials], None] | None,
    ) -> GetItemsResult:
        authorization = f"Bearer {token}"
        if credentials.family == "cognito":
            authorization += f", Version {credentials.version}"
        headers = {
            "Authorization": authorization,
            "x-marketplace": marketplace,
            "Content-Type": "application/json",
        }
        body = {
            "partnerTag": credentials.partner_tag,
            "itemIds": asins,
            "resources": list(GET_ITEMS_RESOURCES),
        }
        if before_call is not None:
            before_call(credentials)

        def interpret(response: requests.Response, call: _Call, data: bytes) -> GetItemsResult:
            return self._interpret_items(response, call, data, credentials, asins)

        return self._exchange(
            "getItems",
            self._api_url,
            marketplace,
            asins,
            (credentials.credential_secret, token, credentials.credential_id),
            interpret,
            headers=headers,
            data=json.dumps(body).encode(),
        )

    def _interpret_items(
        self,
        response: requests.Response,
        call: _Call,
        data: bytes,
        credentials: Credentials,
        asins: list[str],
    ) -> GetItemsResult:
        status = response.status_code
        if 200 <= status < 300:
            payload = _json(data)
            if payload is None:
                raise self._fail(
                    call,
                    UpstreamReason.INVALID_RESPONSE,
                    "Amazon answered getItems with a body that is not JSON.",
                    status=status,
                )
            return self._items_result(call, payload, credentials, asins, strict=True)
        code, _ = self._read_error(call, data)
        lowered = _lower_code(code)
        if status == 401:
            # Not yet a verdict on the credentials: the caller refreshes and retries once.
            call.outcome = "token_rejected"
            call.level = logging.WARNING
            raise _Unauthorized()
        if status == 429:
            raise self._throttled(call, response)
        if status >= 500:
            raise self._server_error(call, status)
        if status == 403:
            details = self._event_details(credentials, call.marketplace, "getItems", status)
            if lowered in _NOT_ELIGIBLE_CODES:
                self._emit("associate_not_eligible", details)
                raise self._fail(
                    call,
                    UpstreamReason.ASSOCIATE_NOT_ELIGIBLE,
                    "Amazon reports that the Associates account behind the configured "
                    "credentials is not eligible for the Creators API.",
                    level=logging.ERROR,
                    status=status,
                    upstreamCode=code,
                )
            self._emit("credentials_rejected", details)
            raise self._fail(
                call,
                UpstreamReason.CREDENTIALS_REJECTED,
                "Amazon refused access for the configured Creators API credentials.",
                level=logging.ERROR,
                status=status,
                upstreamCode=code,
            )
        if status == 400 and lowered in _PARTNER_TAG_CODES:
            raise self._fail(
                call,
                UpstreamReason.INVALID_PARTNER_TAG,
                f"Amazon refused the configured partner tag {credentials.partner_tag!r} "
                "for these credentials.",
                level=logging.ERROR,
                status=status,
                upstreamCode=code,
            )
        if status in (400, 404):
            # "No such item" may come as a 4xx that only lists per-item errors; the
            # contract answers that as a 206 with a notice, not as an upstream failure.
            payload = _json(data)
            if isinstance(payload, dict) and _only_item_errors(payload, asins, status):
                call.outcome = "ok"
                return self._items_result(call, payload, credentials, asins, strict=False)
        if 400 <= status < 500:
            raise self._fail(
                call,
                UpstreamReason.REQUEST_REJECTED,
                f"Amazon refused the getItems request (HTTP {status}).",
                status=status,
                upstreamCode=code,
            )
        raise self._fail(
            call,
            UpstreamReason.INVALID_RESPONSE,
            f"Amazon answered getItems with unexpected HTTP status {status}.",
            status=status,
        )

    def _items_result(
        self,
        call: _Call,
        payload: Any,
        credentials: Credentials,
        asins: list[str],
        *,
        strict: bool,
    ) -> GetItemsResult:
        def invalid(why: str) -> AmazonImportError:
            return self._fail(
                call,
                UpstreamReason.INVALID_RESPONSE,
                f"Amazon answered getItems with an unexpected shape ({why}).",
                status=call.status,
            )

        if not isinstance(payload, dict):
            raise invalid("not an object")
        result = payload.get("itemsResult")
        entries = payload.get("errors", payload.get("Errors"))
        if result is None and entries is None and strict:
            raise invalid("neither items nor errors")
        if result is not None and not isinstance(result, dict):
            raise invalid("itemsResult is not an object")
        raw_items = (result or {}).get("items", [])
        if not isinstance(raw_items, list):
            raise invalid("items is not a list")
        if entries is not None and not isinstance(entries, list):
            raise invalid("errors is not a list")
        requested = set(asins)
        items: dict[str, Mapping[str, Any]] = {}
        for raw in raw_items:
            asin = raw.get("asin") if isinstance(raw, dict) else None
            if not isinstance(asin, str) or not asin.strip():
                raise invalid("an item has no asin")
            asin = asin.strip().upper()
            if asin not in requested:
                logger.warning("amazon getItems returned unrequested ASIN %r; ignored", asin[:16])
                continue
            items.setdefault(asin, raw)
        errors, named = self._item_errors(call, entries or [], asins, items)
        return GetItemsResult(items=items, errors=errors, credentials=credentials, named=named)

    def _item_errors(
        self, call: _Call, entries: list[Any], asins: list[str], items: Mapping[str, Any]
    ) -> tuple[dict[str, ItemError], frozenset[str]]:
        errors: dict[str, ItemError] = {}
        unmapped: list[str | None] = []  # codes of errors naming no requested ASIN
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            code, message = _error_fields(entry)
            asin = _asin_of(entry, message, asins)
            logger.debug(
                "amazon getItems item error asin=%s code=%r message=%r",
                asin,
                call.loggable(code),
                call.loggable(message),
            )
            if asin is None:
                unmapped.append(code)
            elif asin not in items:
                errors.setdefault(asin, _item_error(code, asin))
        named = frozenset(errors)
        fallback = unmapped[0] if unmapped else ITEM_NOT_RETURNED
        for asin in asins:
            if asin not in items and asin not in errors:
                errors[asin] = _item_error(fallback, asin)
        return errors, named

    # --- one HTTP exchange ------------------------------------------------------------

    def _exchange(
        self,
        kind: str,
        url: str,
        marketplace: str,
        asins: Sequence[str],
        secrets: Sequence[str],
        interpret: Callable[[requests.Response, _Call, bytes], _T],
        **kwargs: Any,
    ) -> _T:
        """POST once, read the body within the time budget, interpret, then report.

        Exactly one log line and one observer event per call, whatever happens.
        """
        call = _Call(kind, marketplace, asins, self._clock(), secrets)
        connect, read = self._settings.http_timeout
        deadline = call.started + connect + read
        try:
            try:
                response = self._http().post(
                    url,
                    timeout=self._settings.http_timeout,
                    allow_redirects=False,
                    stream=True,
                    **kwargs,
                )
            except DisallowedHostError:
                call.outcome, call.failure = "disallowed_host", "DisallowedHostError"
                call.level = logging.ERROR
                raise  # a bug, not an upstream condition: let it surface as a 500
            except requests.exceptions.RequestException as exc:
                raise self._transport_failure(call, exc) from None
            with response:
                call.status = response.status_code
                try:
                    data = self._read_body(call, response, deadline)
                except requests.exceptions.RequestException as exc:
                    raise self._transport_failure(call, exc) from None
                return interpret(response, call, data)
        except AmazonImportError as exc:
            if call.outcome == "ok":
                call.outcome = _outcome_of(exc)
            raise
        finally:
            self._report(call)

    def _read_body(self, call: _Call, response: requests.Response, deadline: float) -> bytes:
        # A read timeout bounds each socket read, not the whole body: a trickling answer
        # could otherwise hold a worker far past AMAZON_HTTP_TIMEOUT.
        body = bytearray()
        for chunk in response.iter_content(chunk_size=64 * 1024):
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise self._fail(
                    call,
                    UpstreamReason.INVALID_RESPONSE,
                    "Amazon's answer was implausibly large.",
                    status=call.status,
                )
            if self._clock() > deadline:
                raise self._fail(
                    call,
                    UpstreamReason.TIMEOUT,
                    "Amazon did not finish answering in time.",
                    status=call.status,
                )
        return bytes(body)

    def _transport_failure(
        self, call: _Call, exc: requests.exceptions.RequestException
    ) -> AmazonImportError:
        call.failure = type(exc).__name__
        where = "the token endpoint" if call.kind == "token" else "the Creators API"
        if _is_timeout(exc):
            return self._fail(
                call, UpstreamReason.TIMEOUT, f"Amazon ({where}) did not answer in time."
            )
        if isinstance(
            exc,
            (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError),
        ):
            return self._fail(
                call,
                UpstreamReason.INVALID_RESPONSE,
                f"Amazon's answer ({where}) was cut off or could not be decoded.",
                status=call.status,
            )
        return self._fail(
            call, UpstreamReason.CONNECTION_ERROR, f"Could not connect to Amazon ({where})."
        )

    def _fail(
        self,
        call: _Call,
        reason: UpstreamReason,
        message: str,
        *,
        level: int = logging.WARNING,
        **details: Any,
    ) -> AmazonImportError:
        call.outcome = reason.value
        call.level = max(call.level, level)
        return upstream_unavailable(
            reason, message, **{k: v for k, v in details.items() if v is not None}
        )

    def _server_error(self, call: _Call, status: int) -> AmazonImportError:
        where = "token endpoint" if call.kind == "token" else "Creators API"
        return self._fail(
            call,
            UpstreamReason.SERVER_ERROR,
            f"Amazon's {where} failed (HTTP {status}).",
            status=status,
        )

    def _throttled(self, call: _Call, response: requests.Response) -> AmazonImportError:
        call.outcome = "rate_limited"
        call.level = max(call.level, logging.WARNING)
        retry_after = _retry_after(response.headers.get("Retry-After"))
        return rate_limited(
            retry_after,
            source="amazon",
            message="Amazon is throttling requests for the configured credentials; "
            "try again later.",
        )

    def _read_error(self, call: _Call, data: bytes) -> tuple[str | None, str | None]:
        code, message = _error_fields(_json(data))
        call.upstream_code = code if code and _CODE.match(code) else None
        call.upstream_message = message
        if code is None and message is None and data:
            call.upstream_message = f"(non-JSON body, {len(data)} bytes)"
        return call.upstream_code, message

    def _report(self, call: _Call) -> None:
        elapsed = max(0.0, self._clock() - call.started)
        level = call.level if call.outcome != "ok" else logging.INFO
        message = call.loggable(call.upstream_message)
        logger.log(
            level,
            "amazon upstream call kind=%s marketplace=%s asins=%d status=%s outcome=%s "
            "elapsed_ms=%d%s%s%s",
            call.kind,
            call.marketplace,
            len(call.asins),
            call.status,
            call.outcome,
            round(elapsed * 1000),
            f" code={call.upstream_code}" if call.upstream_code else "",
            f" error={call.failure}" if call.failure else "",
            f" message={message!r}" if message else "",
            extra={
                "amazon_call": {
                    "kind": call.kind,
                    "marketplace": call.marketplace,
                    "asin_count": len(call.asins),
                    "status": call.status,
                    "outcome": call.outcome,
                    "elapsed_ms": round(elapsed * 1000),
                }
            },
        )
        if self._observer is None:
            return
        event = {
            "kind": call.kind,
            "marketplace": call.marketplace,
            "asins": list(call.asins),
            "status": call.status,
            "outcome": call.outcome,
            "elapsed": elapsed,
        }
        try:
            self._observer(event)
        except Exception:
            logger.warning("amazon upstream-call observer failed; ignored", exc_info=True)

    # --- account-level events ---------------------------------------------------------

    def _event_details(
        self, credentials: Credentials, marketplace: str, kind: str, status: int | None
    ) -> dict[str, Any]:
        return {
            "kind": kind,
            "status": status,
            "marketplace": marketplace,
            "version": credentials.version,
            "credentialKey": credentials.quota_key,
            "partnerTag": credentials.partner_tag,
        }

    def _emit(self, name: str, details: Mapping[str, Any]) -> None:
        """Tell ``on_event`` of an account-level event (it logs and throttles the hook)."""
        if self._on_event is None:
            logger.error("amazon account event %s (no handler)", name)
            return
        try:
            self._on_event(name, dict(details))
        except Exception:
            logger.warning("amazon upstream-event handler failed; ignored", exc_info=True)


# --- pure helpers ---------------------------------------------------------------------


def _normalize_asins(asins: Sequence[str]) -> list[str]:
    if isinstance(asins, str):
        raise TypeError("asins must be a sequence of ASINs, not one string")
    ids: list[str] = []
    for asin in asins:
        value = asin.strip().upper() if isinstance(asin, str) else ""
        if not _ASIN.match(value):
            raise ValueError(f"not an ASIN: {asin!r}")
        if value not in ids:
            ids.append(value)
    if not 1 <= len(ids) <= MAX_ITEMS_PER_CALL:
        raise ValueError(f"getItems takes 1..{MAX_ITEMS_PER_CALL} distinct ASINs, got {len(ids)}")
    return ids


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


def _lifetime(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return DEFAULT_TOKEN_LIFETIME
    try:
        seconds = float(value)
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME
    return seconds if math.isfinite(seconds) and seconds > 0 else DEFAULT_TOKEN_LIFETIME


def _text(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _error_fields(payload: Any) -> tuple[str | None, str | None]:
    """(code, message) from any of the error shapes Amazon uses.

    Creators API ``{"type", "message", "reason"}``, OAuth ``{"error",
    "error_description"}``, PA-API 5 ``{"Errors": [{"Code", "Message"}]}`` and
    ``{"errors": [{"code", "message"}]}``; the first entry of a list wins.
    """
    if not isinstance(payload, dict):
        return None, None
    for key in ("errors", "Errors"):
        entries = payload.get(key)
        if isinstance(entries, list) and entries and isinstance(entries[0], dict):
            code, message = _error_fields(entries[0])
            if code or message:
                return code, message
    code = None
    for key in ("reason", "code", "Code", "error", "__type", "type"):
        candidate = _text(payload.get(key))
        if candidate:
            # "com.amazon.paapi5#InvalidPartnerTag" → "InvalidPartnerTag"
            code = re.split(r"[#:/]", candidate)[-1] or None
            break
    message = None
    for key in ("message", "Message", "error_description"):
        message = _text(payload.get(key))
        if message:
            break
    return code, message


def _item_error(code: str | None, asin: str) -> ItemError:
    safe = code if code and _CODE.match(code) else "Unknown"
    template = _ITEM_MESSAGES.get(safe.lower(), _ITEM_DEFAULT_MESSAGE)
    return ItemError(safe, template.format(asin=asin))


def _asin_of(entry: Mapping[str, Any], message: str | None, asins: Sequence[str]) -> str | None:
    for key in ("itemId", "asin", "ItemId", "ASIN"):
        value = entry.get(key)
        if isinstance(value, str) and value.strip().upper() in asins:
            return value.strip().upper()
    for match in _ASIN_IN_TEXT.finditer(message or ""):
        word = match.group(0).upper()
        if word in asins:
            return word
    return None


def _only_item_errors(payload: Mapping[str, Any], asins: Sequence[str], status: int) -> bool:
    """Whether a 400/404 body is just per-item "no such item" errors."""
    if payload.get("itemsResult") is not None:
        return False
    entries = payload.get("errors", payload.get("Errors"))
    if not isinstance(entries, list) or not entries:
        return False
    for entry in entries:
        if not isinstance(entry, dict):
            return False
        code, message = _error_fields(entry)
        named = _asin_of(entry, message, asins) is not None
        if _lower_code(code) in _PARTNER_TAG_CODES or not (
            named or (status == 404 and _lower_code(code) in _NOT_FOUND_CODES)
        ):
            return False
    return True


def _is_timeout(exc: BaseException) -> bool:
    # requests turns a read timeout *while streaming the body* into a ConnectionError
    # wrapping urllib3's ReadTimeoutError; it is still a timeout.
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, urllib3.exceptions.NewConnectionError):
            # urllib3 2 derives it from ConnectTimeoutError for backwards compatibility,
            # but it means the connect *failed* (refused, unreachable), as requests knows.
            return False
        if isinstance(
            current,
            (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError),
        ):
            return True
        nested = next((a for a in current.args if isinstance(a, BaseException)), None)
        current = nested or current.__cause__ or current.__context__
    return False


def _retry_after(value: str | None, now: Callable[[], float] = time.time) -> int:
    """Seconds from a ``Retry-After`` header (seconds or HTTP date); 1 when absent/odd."""
    if not value or not value.strip():
        return 1
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return 1
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.fromtimestamp(now(), timezone.utc)).total_seconds()
    if not math.isfinite(seconds) or seconds < 1:
        return 1
    return min(math.ceil(seconds), 86_400)


def _outcome_of(exc: AmazonImportError) -> str:
    if exc.code is ErrorCode.AMAZON_RATE_LIMITED:
        return "rate_limited"
    return str(exc.details.get("reason", exc.code.value.lower()))


def _truncate(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= LOG_TEXT_LIMIT else text[: LOG_TEXT_LIMIT - 1] + "…"


def _redact(text: str | None, secrets: Sequence[str]) -> str | None:
    """Remove anything secret an upstream message might echo (before truncating it)."""
    if not text:
        return text
    for secret in sorted(secrets, key=len, reverse=True):  # a longer one may hold a shorter
        text = text.replace(secret, "[redacted]")
    return _BEARER.sub("Bearer [redacted]", text)
