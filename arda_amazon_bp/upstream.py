"""One upstream call to Amazon: its record, Amazon's error shapes, our words for failures.

Shared by the three modules that talk to Amazon — the client's HTTP exchange
(:mod:`.creators`), OAuth token handling (:mod:`.tokens`) and the getItems mapping
(:mod:`.get_items`) — so that a token answer and a getItems answer fail in the same
words, are logged the same way and never leak what they echo (docs/architecture.md,
"Upstream facts"). Pure functions and one record class; nothing here sends or logs.

The helpers keep the leading underscore they had in ``creators.py``: they are internal
to the package, not part of its API.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar

import requests

from .credentials import Credentials
from .errors import AmazonImportError, UpstreamReason, rate_limited, upstream_unavailable

#: Upstream text that may reach a log line (never a caller) is cut to this length.
LOG_TEXT_LIMIT = 200

_CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
_BEARER = re.compile(r"(?i)bearer\s+[^\s,\"']+")

_T = TypeVar("_T")

#: Tells the client's ``on_event`` of an account-level event: ``emit(name, details)``.
Emit = Callable[[str, Mapping[str, Any]], None]


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


class Exchange(Protocol):
    """The client's one upstream POST (``CreatorsClient._exchange``), as token handling
    sees it: send, read the body within the time budget, ``interpret``, log once."""

    def __call__(
        self,
        kind: str,
        url: str,
        marketplace: str,
        asins: Sequence[str],
        secrets: Sequence[str],
        interpret: Callable[[requests.Response, _Call, bytes], _T],
        **kwargs: Any,
    ) -> _T: ...


def _lower_code(code: str | None) -> str:
    return (code or "").lower()


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None


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


def _fail(
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


def _server_error(call: _Call, status: int) -> AmazonImportError:
    where = "token endpoint" if call.kind == "token" else "Creators API"
    return _fail(
        call,
        UpstreamReason.SERVER_ERROR,
        f"Amazon's {where} failed (HTTP {status}).",
        status=status,
    )


def _throttled(call: _Call, response: requests.Response) -> AmazonImportError:
    call.outcome = "rate_limited"
    call.level = max(call.level, logging.WARNING)
    retry_after = _retry_after(response.headers.get("Retry-After"))
    return rate_limited(
        retry_after,
        source="amazon",
        message="Amazon is throttling requests for the configured credentials; try again later.",
    )


def _read_error(call: _Call, data: bytes) -> tuple[str | None, str | None]:
    code, message = _error_fields(_json(data))
    call.upstream_code = code if code and _CODE.match(code) else None
    call.upstream_message = message
    if code is None and message is None and data:
        call.upstream_message = f"(non-JSON body, {len(data)} bytes)"
    return call.upstream_code, message


def _event_details(
    credentials: Credentials, marketplace: str, kind: str, status: int | None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "status": status,
        "marketplace": marketplace,
        "version": credentials.version,
        "credentialKey": credentials.quota_key,
        "partnerTag": credentials.partner_tag,
    }


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
