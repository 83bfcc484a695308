"""Creators API item JSON → our product record (docs/api.md): pure functions, no Flask.

Amazon's item JSON is read defensively: every sub-tree may be missing or of an odd type,
and an odd type yields ``None`` for the field it feeds, never an exception. Every record
has every field of :data:`PRODUCT_FIELDS`, in that order.

Decisions the docs repeat:

- ``imageUrl`` is the primary large image; when Amazon sends no primary image but does
  send variants, the first large variant stands in (a card with some picture beats none).
- ``images`` lists the large URLs, primary first, without duplicates; ``None`` (not
  ``[]``) when Amazon gave no image at all, like every other absent value. Only
  ``http(s)`` URLs are kept, since the frontend renders them.
- ``price`` comes from the buy-box winner listing when Amazon marks one, else from the
  first listing that has a usable amount. ``availability`` and ``minOrderQuantity`` come
  from that same listing (else from the first listing that has them).
- ``unitPrice`` is Amazon's ``pricePerUnit`` when given; otherwise ``price.amount /
  unitCount`` rounded to 2 decimals, in the price's currency (``None`` when either is
  missing). Amazon's per-unit price may be per unit of measure (ounce, kg) rather than per
  counted item; it is passed through as Amazon computed it.
- ``unitCount`` is the positive integer in ``productInfo.unitCount.displayValue``
  (``6``, ``"6"``, ``"6.0"``, ``"6 Count"``); ``None`` when not a whole positive number.
- Amounts are floats rounded to 2 decimals, never strings.
- ``detailPageUrl`` is always rebuilt from marketplace, ASIN and *our* partner tag; the
  item's own ``detailPageURL`` and the pasted link are never used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

#: Fields whose absence makes the answer a ``206``.
CORE_FIELDS: tuple[str, ...] = ("title", "imageUrl", "price")

#: Every field of the record, in the order of docs/api.md's product table.
PRODUCT_FIELDS: tuple[str, ...] = (
    "asin",
    "marketplace",
    "detailPageUrl",
    "title",
    "brand",
    "manufacturer",
    "imageUrl",
    "images",
    "price",
    "unitCount",
    "unitPrice",
    "upc",
    "ean",
    "features",
    "availability",
    "minOrderQuantity",
    "missingFields",
    "notices",
    "retrievedAt",
)

_CURRENCY = re.compile(r"^[A-Z]{3}$")
# "6", "6.0", "6 Count" — but not "1,000" or "6.5": those are not a whole count we trust.
_LEADING_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:$|[^\d.,\s])")


def detail_page_url(marketplace: str, asin: str, partner_tag: str) -> str:
    """``https://{marketplace}/dp/{ASIN}?tag={partner_tag}``, built from scratch."""
    return (
        f"https://{marketplace.lower()}/dp/{quote(asin.upper(), safe='')}"
        f"?tag={quote(partner_tag, safe='')}"
    )


def to_product(
    item: Mapping[str, Any], *, marketplace: str, partner_tag: str, retrieved_at: datetime
) -> dict[str, Any]:
    """Map one Creators API item to our record; never raises on an odd item."""
    item = item if isinstance(item, Mapping) else {}
    asin = _text(item.get("asin"))
    asin = asin.upper() if asin else None
    info = _get(item, "itemInfo")
    by_line = _get(info, "byLineInfo")
    listing = _chosen_listing(_get(item, "offersV2", "listings"))
    price = _money(_get(listing, "price", "money"))
    unit_count = _positive_int(_get(info, "productInfo", "unitCount", "displayValue"))
    images = _images(_get(item, "images"))
    availability = _availability(_get(item, "offersV2", "listings"), listing)

    record: dict[str, Any] = {
        "asin": asin,
        "marketplace": marketplace,
        "detailPageUrl": detail_page_url(marketplace, asin, partner_tag) if asin else None,
        "title": _text(_get(info, "title", "displayValue")),
        "brand": _text(_get(by_line, "brand", "displayValue")),
        "manufacturer": _text(_get(by_line, "manufacturer", "displayValue")),
        "imageUrl": images[0] if images else None,
        "images": images,
        "price": price,
        "unitCount": unit_count,
        "unitPrice": _unit_price(_get(listing, "price", "pricePerUnit"), price, unit_count),
        "upc": _first_text(_get(info, "externalIds", "upcs", "displayValues")),
        "ean": _first_text(_get(info, "externalIds", "eans", "displayValues")),
        "features": _texts(_get(info, "features", "displayValues")),
        "availability": _text(_get(availability, "message")),
        "minOrderQuantity": _positive_int(_get(availability, "minOrderQuantity")),
        "missingFields": [],
        "notices": [],
        "retrievedAt": _iso_utc(retrieved_at),
    }
    record["missingFields"] = [name for name in CORE_FIELDS if record[name] is None]
    return record


def unavailable_product(
    asin: str,
    *,
    marketplace: str,
    partner_tag: str,
    retrieved_at: datetime,
    notice: Mapping[str, str],
) -> dict[str, Any]:
    """The record for an ASIN Amazon would not describe: identity only, plus a notice.

    ``asin``, ``marketplace`` and ``detailPageUrl`` stay filled so the frontend can still
    make a card from the link; every product field is ``None``.
    """
    record: dict[str, Any] = dict.fromkeys(PRODUCT_FIELDS)
    record.update(
        asin=asin.upper(),
        marketplace=marketplace,
        detailPageUrl=detail_page_url(marketplace, asin, partner_tag),
        missingFields=list(CORE_FIELDS),
        notices=[{"code": str(notice.get("code", "")), "message": str(notice.get("message", ""))}],
        retrievedAt=_iso_utc(retrieved_at),
    )
    return record


def product_status(product: Mapping[str, Any]) -> int:
    """``200`` when every core field is present, else ``206``."""
    return 200 if all(product.get(name) is not None for name in CORE_FIELDS) else 206


# --- helpers: each returns None for anything it does not understand -----------------


def _get(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _text(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _texts(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    texts = [text for text in (_text(v) for v in value) if text is not None]
    return texts or None


def _first_text(value: Any) -> str | None:
    texts = _texts(value)
    return texts[0] if texts else None


def _url(value: Any) -> str | None:
    text = _text(value)
    if text is None or not text.lower().startswith(("https://", "http://")):
        return None
    return text


def _images(images: Any) -> list[str] | None:
    urls: list[str] = []
    candidates = [_get(images, "primary", "large", "url")]
    variants = _get(images, "variants")
    if isinstance(variants, list):
        candidates.extend(_get(variant, "large", "url") for variant in variants)
    for candidate in candidates:
        url = _url(candidate)
        if url is not None and url not in urls:
            urls.append(url)
    return urls or None


def _decimal(value: Any) -> Decimal | None:
    # Parsed from its text: True reads "True", not 1 (bool is an int subclass); Decimal
    # ignores surrounding whitespace and refuses whatever is not a number (None, a list…).
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _amount(value: Any) -> float | None:
    number = _decimal(value)
    if number is None or number < 0:
        return None
    amount = round(float(number), 2)
    return amount if math.isfinite(amount) else None


def _currency(value: Any) -> str | None:
    text = _text(value)
    return text.upper() if text and _CURRENCY.match(text.upper()) else None


def _money(money: Any) -> dict[str, Any] | None:
    amount = _amount(_get(money, "amount"))
    if amount is None:
        return None
    return {
        "amount": amount,
        "currency": _currency(_get(money, "currency")),
        "display": _text(_get(money, "displayAmount")),
    }


def _positive_int(value: Any) -> int | None:
    if isinstance(value, str):
        match = _LEADING_NUMBER.match(value)
        value = match.group(1) if match else None
    number = _decimal(value)
    if number is None or number < 1 or number != number.to_integral_value():
        return None
    return int(number)


def _listings(listings: Any) -> list[Mapping[str, Any]]:
    if not isinstance(listings, list):
        return []
    return [listing for listing in listings if isinstance(listing, Mapping)]


def _chosen_listing(listings: Any) -> Mapping[str, Any] | None:
    """The buy-box winner with a price, else the first listing with a price."""
    priced = [x for x in _listings(listings) if _money(_get(x, "price", "money")) is not None]
    for listing in priced:
        if _get(listing, "isBuyBoxWinner") is True:
            return listing
    return priced[0] if priced else None


def _availability(listings: Any, preferred: Mapping[str, Any] | None) -> Any:
    """The chosen listing's availability, else the first listing's that has one."""
    for listing in (preferred, *_listings(listings)):
        availability = _get(listing, "availability")
        if isinstance(availability, Mapping):
            return availability
    return None


def _unit_price(
    per_unit: Any, price: Mapping[str, Any] | None, unit_count: int | None
) -> dict[str, Any] | None:
    # Amazon's shape varies between a bare money object and one wrapped in "money".
    money = _get(per_unit, "money") if isinstance(_get(per_unit, "money"), Mapping) else per_unit
    given = _money(money)
    if given is not None:
        currency = given["currency"] or (price["currency"] if price else None)
        return {"amount": given["amount"], "currency": currency}
    if price is None or unit_count is None:
        return None
    return {"amount": round(price["amount"] / unit_count, 2), "currency": price["currency"]}


def _iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
