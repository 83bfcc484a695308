"""The getItems operation: what one call may ask for, and every answer mapped.

:func:`interpret_items` turns one getItems HTTP answer into a :class:`GetItemsResult`
(every requested ASIN either has item data or an :class:`ItemError` in our own words) or
an :class:`AmazonImportError`; a 401 raises :class:`Unauthorized` so the client can
refresh its token and retry once. Pure mapping: the request itself goes through the
client's exchange (:mod:`.creators`). Amazon's request and answer shapes are in
docs/architecture.md, "Upstream facts".
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from .credentials import Credentials
from .errors import AmazonImportError, UpstreamReason
from .upstream import (
    _CODE,
    Emit,
    _Call,
    _error_fields,
    _event_details,
    _fail,
    _json,
    _lower_code,
    _read_error,
    _server_error,
    _throttled,
)

logger = logging.getLogger(__name__)

#: Resources requested for an import (docs/architecture.md, "Creators API getItems").
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

_ASIN = re.compile(r"^[A-Z0-9]{10}$")
_ASIN_IN_TEXT = re.compile(r"\b[A-Za-z0-9]{10}\b")

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


class Unauthorized(Exception):
    """getItems answered 401: the caller refreshes the token and retries once."""


def normalize_asins(asins: Sequence[str]) -> list[str]:
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


def interpret_items(
    response: requests.Response,
    call: _Call,
    data: bytes,
    credentials: Credentials,
    asins: list[str],
    emit: Emit,
) -> GetItemsResult:
    status = response.status_code
    if 200 <= status < 300:
        payload = _json(data)
        if payload is None:
            raise _fail(
                call,
                UpstreamReason.INVALID_RESPONSE,
                "Amazon answered getItems with a body that is not JSON.",
                status=status,
            )
        return _items_result(call, payload, credentials, asins, strict=True)
    code, _ = _read_error(call, data)
    lowered = _lower_code(code)
    if status == 401:
        # Not yet a verdict on the credentials: the caller refreshes and retries once.
        call.outcome = "token_rejected"
        call.level = logging.WARNING
        raise Unauthorized()
    if status == 429:
        raise _throttled(call, response)
    if status >= 500:
        raise _server_error(call, status)
    if status == 403:
        details = _event_details(credentials, call.marketplace, "getItems", status)
        if lowered in _NOT_ELIGIBLE_CODES:
            emit("associate_not_eligible", details)
            raise _fail(
                call,
                UpstreamReason.ASSOCIATE_NOT_ELIGIBLE,
                "Amazon reports that the Associates account behind the configured "
                "credentials is not eligible for the Creators API.",
                level=logging.ERROR,
                status=status,
                upstreamCode=code,
            )
        emit("credentials_rejected", details)
        raise _fail(
            call,
            UpstreamReason.CREDENTIALS_REJECTED,
            "Amazon refused access for the configured Creators API credentials.",
            level=logging.ERROR,
            status=status,
            upstreamCode=code,
        )
    if status == 400 and lowered in _PARTNER_TAG_CODES:
        raise _fail(
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
            return _items_result(call, payload, credentials, asins, strict=False)
    if 400 <= status < 500:
        raise _fail(
            call,
            UpstreamReason.REQUEST_REJECTED,
            f"Amazon refused the getItems request (HTTP {status}).",
            status=status,
            upstreamCode=code,
        )
    raise _fail(
        call,
        UpstreamReason.INVALID_RESPONSE,
        f"Amazon answered getItems with unexpected HTTP status {status}.",
        status=status,
    )


def _items_result(
    call: _Call,
    payload: Any,
    credentials: Credentials,
    asins: list[str],
    *,
    strict: bool,
) -> GetItemsResult:
    def invalid(why: str) -> AmazonImportError:
        return _fail(
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
    errors, named = _item_errors(call, entries or [], asins, items)
    return GetItemsResult(items=items, errors=errors, credentials=credentials, named=named)


def _item_errors(
    call: _Call, entries: list[Any], asins: list[str], items: Mapping[str, Any]
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
