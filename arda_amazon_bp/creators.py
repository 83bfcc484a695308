"""Creators API client on ``requests``: the facade and the one HTTP exchange every call uses.

One :class:`CreatorsClient` per extension instance. It

- looks up 1..10 ASINs per call with a token from its :class:`~.tokens.Tokens` (cached
  per credential set, refreshed single-flight, credentials re-read after
  ``invalid_client``), and retries a getItems once after a 401 with a fresh token;
- sends everything through one origin-restricted session (:mod:`.transport`), created
  lazily per process so a gunicorn ``--preload`` fork never shares sockets, reads each
  body within the time budget and reports every call exactly once (log line, observer);
- hands each answer to its mapping — :mod:`.get_items` for getItems, :mod:`.tokens` for
  the token endpoint — which returns a result or an :class:`AmazonImportError` whose
  message is our own words, never Amazon's body, a token or a secret (:mod:`.upstream`);
- tells ``on_event`` of account-level events (credentials rejected, account not eligible).

It never waits for quota itself: the caller's ``before_call`` hook runs right before each
getItems attempt (token requests do not count against the Creators API quota).
docs/architecture.md shows where the client sits in the path of one request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import requests
import urllib3.exceptions

from .config import Settings
from .credentials import CredentialProvider, Credentials
from .errors import AmazonImportError, ErrorCode, UpstreamReason, upstream_unavailable
from .forks import reset_in_child
from .get_items import (
    GET_ITEMS_PATH,
    GET_ITEMS_RESOURCES,
    ITEM_NOT_RETURNED,
    MAX_ITEMS_PER_CALL,
    GetItemsResult,
    ItemError,
    Unauthorized,
    interpret_items,
    normalize_asins,
)
from .tokens import (
    DEFAULT_TOKEN_LIFETIME,
    TOKEN_REFRESH_MARGIN,
    TOKEN_SCOPES,
    TOKEN_URLS,
    Tokens,
    token_url_for,
)
from .transport import DisallowedHostError, make_session
from .upstream import LOG_TEXT_LIMIT, _Call, _event_details, _fail

# The public names this module had before token handling and the getItems mapping moved
# out (docs/architecture.md, "Module map") are still importable from here.
__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "GET_ITEMS_PATH",
    "GET_ITEMS_RESOURCES",
    "ITEM_NOT_RETURNED",
    "LOG_TEXT_LIMIT",
    "MAX_BODY_BYTES",
    "MAX_ITEMS_PER_CALL",
    "TOKEN_REFRESH_MARGIN",
    "TOKEN_SCOPES",
    "TOKEN_URLS",
    "CreatorsClient",
    "GetItemsResult",
    "ItemError",
]

logger = logging.getLogger(__name__)

#: Bodies above this are not Amazon's (10 items with every resource stay far below).
MAX_BODY_BYTES = 4 * 1024 * 1024

_MARKETPLACE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")

_T = TypeVar("_T")


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
            *{token_url_for(settings.token_url, version) for version in TOKEN_URLS},
        )
        self._tokens = Tokens(
            settings, credentials, exchange=self._exchange, emit=self._emit, clock=clock
        )
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
        self._state_lock = threading.Lock()

    def _reset_for_new_process(self) -> None:
        # Runs in a forked child: a lock held by a parent thread would never be released,
        # and the parent's pooled sockets must not be shared. Tokens reset their own lock.
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
        ids = normalize_asins(asins)
        credentials = self._tokens.load_credentials()
        credentials, token = self._tokens.access_token(credentials, marketplace)
        try:
            return self._get_items_once(credentials, token, marketplace, ids, before_call)
        except Unauthorized:
            credentials, token = self._tokens.access_token(credentials, marketplace, stale=token)
        try:
            return self._get_items_once(credentials, token, marketplace, ids, before_call)
        except Unauthorized:
            self._tokens.drop_token(credentials, token)
            self._emit(
                "credentials_rejected",
                _event_details(credentials, marketplace, "getItems", 401),
            )
            raise upstream_unavailable(
                UpstreamReason.CREDENTIALS_REJECTED,
                "Amazon refused the access token issued for the configured Creators API "
                "credentials twice in a row.",
                status=401,
            ) from None

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
            return interpret_items(response, call, data, credentials, asins, self._emit)

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
            except ValueError:
                # requests parses a 3xx Location even with allow_redirects=False (to
                # prepare Response.next) and raises a bare ValueError on a malformed one.
                call.failure = "ValueError"
                raise _fail(
                    call, UpstreamReason.INVALID_RESPONSE, "Amazon's answer could not be read."
                ) from None
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
                raise _fail(
                    call,
                    UpstreamReason.INVALID_RESPONSE,
                    "Amazon's answer was implausibly large.",
                    status=call.status,
                )
            if self._clock() > deadline:
                raise _fail(
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
            return _fail(call, UpstreamReason.TIMEOUT, f"Amazon ({where}) did not answer in time.")
        if isinstance(
            exc,
            (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError),
        ):
            return _fail(
                call,
                UpstreamReason.INVALID_RESPONSE,
                f"Amazon's answer ({where}) was cut off or could not be decoded.",
                status=call.status,
            )
        return _fail(
            call, UpstreamReason.CONNECTION_ERROR, f"Could not connect to Amazon ({where})."
        )

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


def _outcome_of(exc: AmazonImportError) -> str:
    if exc.code is ErrorCode.AMAZON_RATE_LIMITED:
        return "rate_limited"
    return str(exc.details.get("reason", exc.code.value.lower()))
