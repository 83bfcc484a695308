"""A sandbox Amazon Creators API on loopback, strict enough to catch client mistakes.

It serves the same contract as Amazon — Amazon's Creators API reference
(affiliate-program.amazon.com/creatorsapi/docs/en-us/api-reference) and the official
``amazon-creatorsapi-python-sdk``, whose requests it accepts; docs/architecture.md
("Upstream facts") lists what the plugin relies on, and docs/testing-your-integration.md
sums up the response shape — so the demo, the integration tests, the
multi-process quota tests, the benchmarks, the fault tests and a host's own tests (the
``amazon_sandbox`` pytest fixture) can point ``AMAZON_CREATORS_API_HOST`` and
``AMAZON_TOKEN_URL`` at it:

* ``POST /oauth2/token`` — Cognito (credential versions 2.x): form-encoded
  ``grant_type=client_credentials&client_id=…&client_secret=…&scope=creatorsapi/default``,
  or the client id/secret as HTTP Basic client authentication, as Cognito allows.
* ``POST /auth/o2/token`` — Login with Amazon (3.x): a JSON body with ``grant_type``,
  ``client_id``, ``client_secret`` and ``scope: creatorsapi::default``.
* ``POST /catalog/v1/getItems`` — ``Authorization: Bearer <token>, Version <version>`` for
  2.x tokens, ``Authorization: Bearer <token>`` for 3.x tokens (a matching
  ``, Version 3.x`` suffix is tolerated: Amazon's answer to it is not documented),
  ``x-marketplace``, and a JSON body ``{"partnerTag", "itemIds", "resources"}``.

Checked against the official SDK: tests/test_sandbox_sdk.py drives the sandbox with
``amazon-creatorsapi-python-sdk`` 1.2.0, unpatched. What its source shows and the sandbox
follows: ``auth/oauth2_token_manager.py`` (``refresh_token``) posts a form body to
Cognito and a JSON body to Login with Amazon, both with ``grant_type``, ``client_id``,
``client_secret`` and ``scope`` (``auth/oauth2_config.py``: ``creatorsapi/default`` and
``creatorsapi::default``), and reads ``access_token`` and ``expires_in``;
``api_client.py`` (``call_api``) sends ``Bearer <token>, Version <version>`` for 2.x and
``Bearer <token>`` for 3.x; ``api/default_api.py`` posts to ``/catalog/v1/getItems`` with
``x-marketplace`` and ``Content-Type: application/json``; the response members are the
camelCase aliases of ``models/`` (``itemsResult``, ``detailPageURL``, ``offersV2``,
``displayAmount``, …), which the test compares member by member for every catalog item.

Error bodies
------------
Catalog errors use the shapes of the official ``amazon-creatorsapi-python-sdk``'s
generated models (``ValidationExceptionResponseContent``,
``UnauthorizedExceptionResponseContent``, ``AccessDeniedExceptionResponseContent``,
``ResourceNotFoundExceptionResponseContent``, ``ThrottleExceptionResponseContent``,
``InternalServerExceptionResponseContent``; its ``DefaultApi`` maps them to 400, 401,
403, 404, 429 and 500)::

    {"type": "ValidationException", "message": "…", "reason": "InvalidPartnerTag",
     "fieldList": [{"name": "partnerTag", "message": "…"}]}

``reason`` takes the SDK's enum values (``ValidationExceptionReason``: CannotParse,
FieldValidationFailed, InvalidAssociate, InvalidPartnerTag, …;
``UnauthorizedExceptionReason``: TokenExpired, InvalidToken, MissingCredential, …;
``AccessDeniedReason``: AssociateNotEligible, …); those three models require ``reason``,
so an error without one (an injected ``status`` fault, say) says ``Other``, and an
injected 404 carries the ``resourceId``/``resourceType`` its model requires. The SDK
only calls ``type`` "the
exception type identifier"; the sandbox uses the model name without
``ResponseContent``. Per-item failures inside a 200 are ``errors: [{"code",
"message"}]`` (the SDK's ``ErrorData``); when no requested item is accessible the body
holds ``errors`` only, without ``itemsResult``. Token endpoints answer in OAuth 2.0
shape (RFC 6749 §5.2): ``{"error": "invalid_client", "error_description": "…"}``.

Strictness choices (where Amazon's behaviour is not documented the sandbox is the
stricter of the plausible answers, so a client that passes here passes there):

* the rate limit counts every getItems arrival — throttled, failed and faulted calls
  too — in one sliding window per credential id, checked before authentication; a call
  without a known token is judged by the window of all calls, the strictest reading.
  Source: Amazon's "API Rates" page for PA-API 5.0, which the Creators API replaces and
  whose limits it keeps (docs/architecture.md "Quota"): TPS is "the maximum number of
  API calls you can make in one second", a getItems call with 10 ASINs "counts as a
  single transaction", and an account starts at 1 TPS and 8,640 TPD. The page does not
  say whether a second is a calendar second or any second, so the sandbox judges any
  second (a sliding window): a client spaced for it passes a calendar-second counter too;
* several stores: ``marketplace`` with ``partner_tags``, plus ``stores`` (host → the
  partner tags of the Associates account there; by default ``www.amazon.co.uk`` with
  ``DEMO_UK_PARTNER_TAG``, served by the demo EU credential ``DEMO_EU_CREDENTIAL_ID``,
  version 3.2). A partner tag is accepted only in its own store, as Amazon ties a tag
  to one store (``InvalidPartnerTag`` otherwise); prices come in the store's currency
  (the catalog's amounts, GBP in the UK);
* tokens remember the credential versions they were issued for and expire;
* unknown resources, a wrong ``x-marketplace`` or content type, and 0 or more than 10
  ``itemIds`` are rejected; unknown body members are ignored (as Smithy services do).

Control endpoints (for tests; not part of Amazon's contract) live under ``/_sandbox/``:

* ``GET stats`` (``?calls=0`` drops the per-call log): ``total_calls``,
  ``calls_by_status`` (``"dropped"`` for reset connections), ``throttled_calls``,
  ``max_calls_in_window`` (exact, from the recorded arrivals and ``window_seconds``),
  ``max_calls_in_window_by_credential`` (the same per credential, keyed as ``credential``),
  ``asins_per_call``, ``avg_asins_per_call``, ``asins_in_ok_calls``,
  ``distinct_asins_in_ok_calls``, ``token_requests``, ``token_requests_by_status``,
  ``max_token_requests_in_window``, ``rate``, ``window_seconds`` and ``calls`` (each
  arrival's endpoint, ``monotonic`` and ``wall`` time, ``asins``, ``status``, ``fault``,
  and for getItems ``credential`` (the last 4 characters of the token's credential id),
  ``marketplace`` and ``partner_tag``).
* ``POST reset`` clears the log and rate windows; ``{"full": true}`` (or ``?full=1``)
  also clears faults and restores the starting config and credentials.
* ``POST faults`` ``{"fault", "count": 1, "endpoint": "getItems"|"token", …params}``
  queues a fault for the next ``count`` calls (FIFO); ``GET`` lists, ``DELETE`` clears.
  Faults: ``status`` (``status``, ``reason``, ``message``, ``retryAfter``), ``429``
  (``retryAfter``), ``token_expired``, ``associate_not_eligible``,
  ``invalid_partner_tag``, ``invalid_associate``, ``non_json``, ``html``,
  ``truncated_json``, ``wrong_shape`` (``body``), ``wrong_asin`` (``asin``),
  ``slow_body`` and ``delay`` (``delay`` seconds), ``reset``. The last five wrap the
  normal answer (so authentication and validation still apply); the others replace it.
  ``reset`` closes the connection before any response byte: the client sees "connection
  closed without response" (requests raises ``ConnectionError``).
* ``POST credentials`` ``{"credentials": [[id, secret, version], …], "partner_tags",
  "revoke_tokens"}`` replaces the accepted credentials (rotation tests).
* ``POST /_token/<version>`` is the token endpoint of ``version``'s family (a test seam
  for ``AMAZON_TOKEN_URL = <sandbox>/_token/{version}``).
* ``GET|POST config`` shows or changes ``rate``, ``token_rate``, ``window_seconds``,
  ``token_expires_in``, ``throttle_retry_after``, ``eligible``, ``partner_tags``,
  ``marketplace``, ``synthetic_asins``; ``POST tokens/expire`` expires every token.

Catalog: ``sandbox_catalog.json`` beside this module (household, office and industrial
supplies; some items lack offers, images or a title, one has several listings). Any ASIN
matching ``B0SYN[0-9]{5}`` returns a generated complete item, for load tests.

Run it: ``python -m arda_amazon_bp.testing --port 8099 --rate 1``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import copy
import dataclasses
import ipaddress
import json
import math
import re
import secrets
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

DEFAULT_CATALOG_PATH = Path(__file__).with_name("sandbox_catalog.json")

DEMO_CREDENTIAL_ID = "sandbox-client-id-0001"
DEMO_CREDENTIAL_SECRET = "sandbox-secret-do-not-use"
DEMO_PARTNER_TAG = "ardademo-20"
DEFAULT_MARKETPLACE = "www.amazon.com"
#: Token endpoint by version (a test seam for ``AMAZON_TOKEN_URL`` with ``{version}``).
VERSIONED_TOKEN_PATH = "/_token/<version>"
#: The second store and the EU credential (version 3.2) that serves it.
UK_MARKETPLACE = "www.amazon.co.uk"
DEMO_UK_PARTNER_TAG = "ardademouk-21"
DEMO_EU_CREDENTIAL_ID = "sandbox-client-id-0002"
DEMO_EU_CREDENTIAL_SECRET = "sandbox-eu-secret-do-not-use"

COGNITO_TOKEN_PATH = "/oauth2/token"
LWA_TOKEN_PATH = "/auth/o2/token"
GET_ITEMS_PATH = "/catalog/v1/getItems"
COGNITO_SCOPE = "creatorsapi/default"
LWA_SCOPE = "creatorsapi::default"

COGNITO = "cognito"
LWA = "lwa"
GET_ITEMS = "getItems"
TOKEN = "token"
ENDPOINTS = (GET_ITEMS, TOKEN)

MAX_ITEM_IDS = 10
MAX_RESOURCES = 100
ASIN_PATTERN = re.compile(r"[A-Z0-9]{10}")
SYNTHETIC_ASIN_PATTERN = re.compile(r"B0SYN[0-9]{5}")

# The getItems resources the SDK's ``GetItemsResource`` enum accepts.
GET_ITEMS_RESOURCES = frozenset(
    {
        "browseNodeInfo.browseNodes",
        "browseNodeInfo.browseNodes.ancestor",
        "browseNodeInfo.browseNodes.salesRank",
        "browseNodeInfo.websiteSalesRank",
        "customerReviews.count",
        "customerReviews.starRating",
        "images.primary.small",
        "images.primary.medium",
        "images.primary.large",
        "images.primary.highRes",
        "images.variants.small",
        "images.variants.medium",
        "images.variants.large",
        "images.variants.highRes",
        "itemInfo.byLineInfo",
        "itemInfo.contentInfo",
        "itemInfo.contentRating",
        "itemInfo.classifications",
        "itemInfo.externalIds",
        "itemInfo.features",
        "itemInfo.manufactureInfo",
        "itemInfo.productInfo",
        "itemInfo.technicalInfo",
        "itemInfo.title",
        "itemInfo.tradeInInfo",
        "parentASIN",
        "offersV2.listings.availability",
        "offersV2.listings.condition",
        "offersV2.listings.dealDetails",
        "offersV2.listings.isBuyBoxWinner",
        "offersV2.listings.loyaltyPoints",
        "offersV2.listings.merchantInfo",
        "offersV2.listings.price",
        "offersV2.listings.type",
    }
)

EXCEPTION_TYPES = {
    400: "ValidationException",
    401: "UnauthorizedException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    429: "ThrottleException",
    500: "InternalServerException",
}
# Statuses whose SDK model (Validation/Unauthorized/AccessDenied…ResponseContent) has a
# required ``reason``.
REASON_REQUIRED = frozenset({400, 401, 403})
THROTTLE_MESSAGE = (
    "The request was denied due to request throttling. Please verify the number of "
    "requests made per second to the Amazon Creators API."
)


def credential_family(version: str) -> str:
    """Return ``cognito`` for 2.x versions and ``lwa`` for 3.x; refuse anything else."""
    if re.fullmatch(r"2\.[0-9]+", version):
        return COGNITO
    if re.fullmatch(r"3\.[0-9]+", version):
        return LWA
    raise ValueError(f"unsupported credential version {version!r} (expected 2.x or 3.x)")


@dataclass(frozen=True)
class Credential:
    """One credential triple the sandbox accepts; the secret stays out of ``repr``."""

    credential_id: str
    credential_secret: str = field(repr=False)
    version: str

    def __post_init__(self) -> None:
        credential_family(self.version)

    @property
    def family(self) -> str:
        """``cognito`` (2.x) or ``lwa`` (3.x)."""
        return credential_family(self.version)

    @classmethod
    def parse(cls, value: Any) -> Credential:
        """Accept a ``Credential``, a 3-sequence, or a mapping with the three field names."""
        if isinstance(value, Credential):
            return value
        if isinstance(value, Mapping):
            return cls(
                str(value["credential_id"]),
                str(value["credential_secret"]),
                str(value["version"]),
            )
        credential_id, credential_secret, version = value
        return cls(str(credential_id), str(credential_secret), str(version))


def default_credentials() -> list[Credential]:
    """The demo credential, usable as both a Cognito (2.1) and an LWA (3.1) credential."""
    return [
        Credential(DEMO_CREDENTIAL_ID, DEMO_CREDENTIAL_SECRET, "2.1"),
        Credential(DEMO_CREDENTIAL_ID, DEMO_CREDENTIAL_SECRET, "3.1"),
        Credential(DEMO_EU_CREDENTIAL_ID, DEMO_EU_CREDENTIAL_SECRET, "3.2"),
    ]


@dataclass
class SandboxConfig:
    """Everything that makes one sandbox behave; all of it can change at run time.

    ``rate`` is getItems calls per second (float) counted over a sliding
    ``window_seconds`` window: a call is throttled when the window, counting the call
    itself, holds more than ``rate * window_seconds`` arrivals (a rate below one call per
    window stretches the window to ``1 / rate`` and allows one call in it).
    ``token_rate`` does the same for token requests; ``None`` means unlimited.
    ``throttle_retry_after`` adds a ``Retry-After`` header to natural 429s (Amazon is
    not known to send one, hence ``None``). ``eligible=False`` answers every otherwise
    valid getItems with 403 AssociateNotEligible.
    """

    credentials: list[Credential] = field(default_factory=default_credentials)
    partner_tags: set[str] = field(default_factory=lambda: {DEMO_PARTNER_TAG})
    marketplace: str = DEFAULT_MARKETPLACE
    stores: dict[str, set[str]] = field(
        default_factory=lambda: {UK_MARKETPLACE: {DEMO_UK_PARTNER_TAG}}
    )
    rate: float = 1.0
    token_rate: float | None = None
    window_seconds: float = 1.0
    token_expires_in: float = 3600.0
    throttle_retry_after: int | None = None
    eligible: bool = True
    catalog_path: Path = DEFAULT_CATALOG_PATH
    synthetic_asins: bool = True

    def __post_init__(self) -> None:
        self.credentials = [Credential.parse(c) for c in self.credentials]
        self.partner_tags = {str(tag) for tag in self.partner_tags}
        self.stores = {str(host): {str(t) for t in tags} for host, tags in self.stores.items()}
        self.catalog_path = Path(self.catalog_path)
        if not self.rate > 0:
            raise ValueError("rate must be > 0")
        if self.token_rate is not None and not self.token_rate > 0:
            raise ValueError("token_rate must be > 0 or None")
        if not self.window_seconds > 0:
            raise ValueError("window_seconds must be > 0")
        if not self.token_expires_in > 0:
            raise ValueError("token_expires_in must be > 0")

    def public(self) -> dict[str, Any]:
        """The config as JSON, credentials without their secrets."""
        return {
            "credentials": [
                {"credential_id": c.credential_id, "version": c.version} for c in self.credentials
            ],
            "partner_tags": sorted(self.partner_tags),
            "marketplace": self.marketplace,
            "stores": {host: sorted(tags) for host, tags in self.stores.items()},
            "rate": self.rate,
            "token_rate": self.token_rate,
            "window_seconds": self.window_seconds,
            "token_expires_in": self.token_expires_in,
            "throttle_retry_after": self.throttle_retry_after,
            "eligible": self.eligible,
            "synthetic_asins": self.synthetic_asins,
        }


# Settings ``POST /_sandbox/config`` may change (the catalog is loaded once).
RUNTIME_CONFIG_KEYS = frozenset(
    {
        "partner_tags",
        "marketplace",
        "stores",
        "rate",
        "token_rate",
        "window_seconds",
        "token_expires_in",
        "throttle_retry_after",
        "eligible",
        "synthetic_asins",
    }
)


def limit_for(rate: float, window_seconds: float) -> tuple[float, int]:
    """Return (window, allowed arrivals in it) for a rate in calls per second."""
    window = max(window_seconds, 1.0 / rate)
    return window, max(1, math.floor(rate * window + 1e-9))


def max_in_window(times: Iterable[float], window_seconds: float) -> int:
    """Most arrivals in any window of ``window_seconds`` (arrivals less than it apart)."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


# ---------------------------------------------------------------------------- catalog


def _sized_image(image: Mapping[str, Any], pixels: int) -> dict[str, Any]:
    """Derive a smaller rendition the way Amazon's image URLs encode size (``._SL500_.``)."""
    scale = pixels / max(int(image["height"]), int(image["width"]))
    return {
        "url": re.sub(r"\._SL\d+_\.", f"._SL{pixels}_.", str(image["url"])),
        "height": round(int(image["height"]) * scale),
        "width": round(int(image["width"]) * scale),
    }


def _with_image_sizes(item: dict[str, Any]) -> dict[str, Any]:
    """Fill small/medium renditions from ``large`` so every image resource has data."""
    images = item.get("images")
    if not isinstance(images, dict):
        return item
    renditions = [images.get("primary"), *(images.get("variants") or [])]
    for rendition in renditions:
        if isinstance(rendition, dict) and "large" in rendition:
            rendition.setdefault("medium", _sized_image(rendition["large"], 160))
            rendition.setdefault("small", _sized_image(rendition["large"], 75))
    return item


def load_catalog(path: Path) -> dict[str, dict[str, Any]]:
    """Load the catalog file: ASIN → the item with every resource filled in."""
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    catalog: dict[str, dict[str, Any]] = {}
    for item in document["items"]:
        asin = str(item["asin"])
        if not ASIN_PATTERN.fullmatch(asin) or asin in catalog:
            raise ValueError(f"catalog {path}: bad or duplicate ASIN {asin!r}")
        catalog[asin] = _with_image_sizes(copy.deepcopy(item))
    return catalog


def _check_digit(digits: str, odd_weight: int) -> str:
    """GS1 check digit; UPC-A weighs odd positions 3, EAN-13 weighs them 1."""
    even_weight = 4 - odd_weight
    total = sum(int(d) * (odd_weight if i % 2 == 0 else even_weight) for i, d in enumerate(digits))
    return str((10 - total % 10) % 10)


def synthetic_item(asin: str) -> dict[str, Any]:
    """A complete, deterministic item for load-test ASINs ``B0SYN00000``…``B0SYN99999``."""
    number = int(asin[5:])
    kinds = ["Storage Bin", "Shelf Label Holder", "Parts Drawer", "Tote Box", "Divider Set"]
    kind = kinds[number % len(kinds)]
    unit_count = 1 + number % 48
    price = round(4.99 + (number % 9500) / 100, 2)
    upc11 = f"0841{number:05d}00"
    upc = upc11 + _check_digit(upc11, 3)
    ean12 = "0" + upc11
    ean = ean12 + _check_digit(ean12, 1)
    image_id = f"51SYN{number:05d}L"
    money = {"amount": price, "currency": "USD", "displayAmount": f"${price:,.2f}"}
    per_unit = round(price / unit_count, 4)
    item: dict[str, Any] = {
        "asin": asin,
        "itemInfo": {
            "title": {
                "displayValue": (
                    f"Synthetic Load-Test {kind} No. {number:05d}, Pack of {unit_count}"
                ),
                "label": "Title",
                "locale": "en_US",
            },
            "byLineInfo": {
                "brand": {"displayValue": "Synthline", "label": "Brand", "locale": "en_US"},
                "manufacturer": {
                    "displayValue": "Synthline Test Goods",
                    "label": "Manufacturer",
                    "locale": "en_US",
                },
            },
            "externalIds": {
                "upcs": {"displayValues": [upc], "label": "UPC", "locale": "en_US"},
                "eans": {"displayValues": [ean], "label": "EAN", "locale": "en_US"},
            },
            "features": {
                "displayValues": [f"Synthetic item {number} for load tests", "Not a real product"],
                "label": "Features",
                "locale": "en_US",
            },
            "productInfo": {
                "unitCount": {
                    "displayValue": unit_count,
                    "label": "NumberOfItems",
                    "locale": "en_US",
                }
            },
        },
        "images": {
            "primary": {
                "large": {
                    "url": f"https://m.media-amazon.com/images/I/{image_id}._SL500_.jpg",
                    "height": 500,
                    "width": 500,
                }
            }
        },
        "offersV2": {
            "listings": [
                {
                    "availability": {
                        "message": "In Stock",
                        "minOrderQuantity": 1,
                        "maxOrderQuantity": 30,
                        "type": "IN_STOCK",
                    },
                    "condition": {"value": "New"},
                    "isBuyBoxWinner": True,
                    "merchantInfo": {"id": "ATVPDKIKX0DER", "name": "Amazon.com"},
                    "price": {
                        "money": money,
                        "pricePerUnit": {
                            "amount": per_unit,
                            "currency": "USD",
                            "displayAmount": f"${per_unit:,.2f}",
                        },
                    },
                }
            ]
        },
    }
    return _with_image_sizes(item)


_MISSING: Any = object()


def _project(node: Any, parts: Sequence[str]) -> Any:
    """Copy only the branch of ``node`` that ``parts`` names; lists apply it per element."""
    if not parts:
        return copy.deepcopy(node)
    if isinstance(node, list):
        projected = [_project(element, parts) for element in node]
        if all(p is _MISSING for p in projected):
            return _MISSING
        # Keep list positions aligned so later resources merge into the same listing.
        return [{} if p is _MISSING else p for p in projected]
    if isinstance(node, dict) and parts[0] in node:
        inner = _project(node[parts[0]], parts[1:])
        return _MISSING if inner is _MISSING else {parts[0]: inner}
    return _MISSING


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Deep-merge ``extra`` into ``into``; lists merge element by element."""
    for key, value in extra.items():
        current = into.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            _merge(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            for mine, theirs in zip(current, value, strict=False):
                if isinstance(mine, dict) and isinstance(theirs, dict):
                    _merge(mine, theirs)
        else:
            into[key] = value


def detail_page_url(marketplace: str, asin: str, partner_tag: str) -> str:
    """The tagged product link Amazon returns as ``detailPageURL``."""
    return f"https://{marketplace}/dp/{asin}?tag={partner_tag}&linkCode=ogi&th=1&psc=1"


def render_item(
    full: Mapping[str, Any], resources: Iterable[str], marketplace: str, partner_tag: str
) -> dict[str, Any]:
    """One ``itemsResult.items[]`` entry holding only the requested resources."""
    asin = str(full["asin"])
    item: dict[str, Any] = {
        "asin": asin,
        "detailPageURL": detail_page_url(marketplace, asin, partner_tag),
    }
    for resource in dict.fromkeys(resources):
        projected = _project(full, resource.split("."))
        if projected is not _MISSING:
            _merge(item, projected)
    _localize_prices(item, marketplace)
    return item


#: How a store shows its currency in ``displayAmount`` (the catalog is priced in USD).
_CURRENCY_SYMBOLS = {"USD": "$", "GBP": "£", "EUR": "€", "JPY": "¥", "CAD": "$", "AUD": "$"}


def _localize_prices(item: dict[str, Any], marketplace: str) -> None:
    """Prices in the store's own currency, as each Amazon store answers in its own (the
    catalog's amounts are kept; only currency and display change)."""
    from arda_amazon_bp.marketplaces import MARKETPLACES

    store = MARKETPLACES.get(marketplace)
    if store is None or store.currency == "USD":
        return
    symbol = _CURRENCY_SYMBOLS.get(store.currency, store.currency + " ")
    for listing in item.get("offersV2", {}).get("listings", []) or []:
        price = listing.get("price") if isinstance(listing, dict) else None
        for key in ("money", "pricePerUnit"):
            money = price.get(key) if isinstance(price, dict) else None
            if isinstance(money, dict) and isinstance(money.get("amount"), (int, float)):
                money["currency"] = store.currency
                money["displayAmount"] = f"{symbol}{money['amount']:,.2f}"


# ------------------------------------------------------------------------------ state


@dataclass
class CallRecord:
    """One arrival at a sandbox endpoint, as the stats report it."""

    endpoint: str
    monotonic: float
    wall: float
    status: int | None = None
    asins: list[str] = field(default_factory=list)
    fault: str | None = None
    family: str | None = None
    credential: str | None = None  # last 4 characters of the token's credential id
    marketplace: str | None = None
    partner_tag: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form for ``/_sandbox/stats``."""
        return dataclasses.asdict(self)


@dataclass
class _Token:
    credential_id: str
    family: str
    versions: frozenset[str]
    expires_at: float


@dataclass
class _Fault:
    name: str
    remaining: int
    params: dict[str, Any]


# Which endpoints each fault makes sense on.
FAULTS: dict[str, frozenset[str]] = {
    "status": frozenset(ENDPOINTS),
    "429": frozenset(ENDPOINTS),
    "token_expired": frozenset({GET_ITEMS}),
    "associate_not_eligible": frozenset({GET_ITEMS}),
    "invalid_partner_tag": frozenset({GET_ITEMS}),
    "invalid_associate": frozenset({GET_ITEMS}),
    "non_json": frozenset(ENDPOINTS),
    "html": frozenset(ENDPOINTS),
    "truncated_json": frozenset(ENDPOINTS),
    "wrong_shape": frozenset(ENDPOINTS),
    "wrong_asin": frozenset({GET_ITEMS}),
    "slow_body": frozenset(ENDPOINTS),
    "delay": frozenset(ENDPOINTS),
    "reset": frozenset(ENDPOINTS),
}


class SandboxError(ValueError):
    """A control-endpoint request the sandbox refuses (answered with 400)."""


class SandboxState:
    """All mutable sandbox state behind one lock: config, tokens, faults and the call log."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        config = config if config is not None else SandboxConfig()
        self._initial = copy.deepcopy(config)
        self.config = copy.deepcopy(config)
        self.catalog = load_catalog(config.catalog_path)
        self.lock = threading.RLock()
        self.stopping = threading.Event()
        self._calls: list[CallRecord] = []
        self._arrivals: dict[tuple[str, str], deque[float]] = {}
        self._faults: dict[str, deque[_Fault]] = {e: deque() for e in ENDPOINTS}
        self._tokens: dict[str, _Token] = {}

    # -- arrivals and stats

    def arrive(self, endpoint: str, credential_id: str = "") -> tuple[CallRecord, bool]:
        """Record an arrival; return it and whether it exceeds the endpoint's rate for
        ``credential_id`` (getItems: each credential has its own window)."""
        now = time.monotonic()
        record = CallRecord(endpoint=endpoint, monotonic=now, wall=time.time())
        if credential_id:
            record.credential = credential_id[-4:]
        with self.lock:
            self._calls.append(record)
            rate = self.config.rate if endpoint == GET_ITEMS else self.config.token_rate
            # Every arrival counts in the endpoint's shared window; a getItems call with a
            # known token also in its credential's, and that one decides for it.
            keys = [(endpoint, "")]
            if endpoint == GET_ITEMS and credential_id:
                keys.append((endpoint, credential_id))
            window, allowed = limit_for(rate, self.config.window_seconds) if rate else (0, 0)
            for key in keys:
                arrivals = self._arrivals.setdefault(key, deque())
                arrivals.append(now)
                if rate is None:
                    arrivals.clear()
                while arrivals and now - arrivals[0] >= window:
                    arrivals.popleft()
            return record, rate is not None and len(arrivals) > allowed

    def stats(self, include_calls: bool = True) -> dict[str, Any]:
        """Counts computed from the call log (see the module docstring for the keys)."""
        with self.lock:
            calls = list(self._calls)
            window = self.config.window_seconds
            rate = self.config.rate
        items = [c for c in calls if c.endpoint == GET_ITEMS]
        tokens = [c for c in calls if c.endpoint == TOKEN]
        asins_per_call = [len(set(c.asins)) for c in items if c.asins]
        served = [c for c in items if c.status == 200]
        requested = Counter(asin for c in served for asin in set(c.asins))
        result: dict[str, Any] = {
            "total_calls": len(items),
            "calls_by_status": _by_status(items),
            "throttled_calls": sum(1 for c in items if c.status == 429),
            "max_calls_in_window": max_in_window((c.monotonic for c in items), window),
            "max_calls_in_window_by_credential": {
                credential: max_in_window(
                    (c.monotonic for c in items if c.credential == credential), window
                )
                for credential in sorted({c.credential or "" for c in items})
            },
            "window_seconds": window,
            "rate": rate,
            "asins_per_call": asins_per_call,
            "avg_asins_per_call": (
                sum(asins_per_call) / len(asins_per_call) if asins_per_call else 0.0
            ),
            "asins_in_ok_calls": sum(requested.values()),
            "distinct_asins_in_ok_calls": len(requested),
            "token_requests": len(tokens),
            "token_requests_by_status": _by_status(tokens),
            "max_token_requests_in_window": max_in_window((c.monotonic for c in tokens), window),
        }
        if include_calls:
            result["calls"] = [c.to_json() for c in calls]
        return result

    # -- faults

    def add_fault(
        self, name: str, count: int = 1, endpoint: str = GET_ITEMS, **params: Any
    ) -> None:
        """Queue ``name`` for the next ``count`` calls to ``endpoint`` (after earlier faults)."""
        name = str(name)
        if name not in FAULTS:
            raise SandboxError(f"unknown fault {name!r}; known: {sorted(FAULTS)}")
        if endpoint not in FAULTS[name]:
            raise SandboxError(f"fault {name!r} does not apply to endpoint {endpoint!r}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise SandboxError("count must be an integer >= 1")
        if name == "status":
            status = params.get("status")
            if not isinstance(status, int) or not 100 <= status <= 599:
                raise SandboxError("fault 'status' needs an integer 'status' in 100..599")
        for key in ("delay",):
            if key in params and (not isinstance(params[key], (int, float)) or params[key] < 0):
                raise SandboxError(f"'{key}' must be a number >= 0")
        with self.lock:
            self._faults[endpoint].append(_Fault(name, count, dict(params)))

    def take_fault(self, endpoint: str) -> _Fault | None:
        """Consume one use of the first queued fault for ``endpoint``."""
        with self.lock:
            queue = self._faults[endpoint]
            if not queue:
                return None
            fault = queue[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                queue.popleft()
            return _Fault(fault.name, 1, dict(fault.params))

    def pending_faults(self) -> dict[str, list[dict[str, Any]]]:
        """What is still queued, per endpoint."""
        with self.lock:
            return {
                endpoint: [{"fault": f.name, "count": f.remaining, **f.params} for f in queue]
                for endpoint, queue in self._faults.items()
            }

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self.lock:
            for queue in self._faults.values():
                queue.clear()

    # -- credentials, tokens, config

    def set_credentials(
        self,
        credentials: Iterable[Any],
        partner_tags: Iterable[str] | None = None,
        revoke_tokens: bool = False,
    ) -> None:
        """Replace the accepted credentials (rotation); optionally revoke orphaned tokens."""
        parsed = [Credential.parse(c) for c in credentials]
        with self.lock:
            self.config.credentials = parsed
            if partner_tags is not None:
                self.config.partner_tags = {str(t) for t in partner_tags}
            if revoke_tokens:
                accepted = {(c.credential_id, c.family) for c in parsed}
                self._tokens = {
                    value: token
                    for value, token in self._tokens.items()
                    if (token.credential_id, token.family) in accepted
                }

    def configure(self, **changes: Any) -> SandboxConfig:
        """Change run-time settings (see ``RUNTIME_CONFIG_KEYS``), validated as a whole."""
        unknown = set(changes) - RUNTIME_CONFIG_KEYS
        if unknown:
            raise SandboxError(f"cannot change {sorted(unknown)} at run time")
        with self.lock:
            try:
                updated = dataclasses.replace(self.config, **changes)
            except (TypeError, ValueError) as exc:
                raise SandboxError(str(exc)) from exc
            self.config = updated
            return updated

    def find_credential(self, family: str, credential_id: str, secret: str) -> frozenset[str]:
        """Versions of ``family`` for which (id, secret) is valid; empty when none."""
        with self.lock:
            return frozenset(
                c.version
                for c in self.config.credentials
                if c.family == family
                and secrets.compare_digest(c.credential_id, credential_id)
                and secrets.compare_digest(c.credential_secret, secret)
            )

    def issue_token(
        self, credential_id: str, family: str, versions: frozenset[str]
    ) -> tuple[str, float]:
        """Mint a token shaped like the family's real ones; return it and ``expires_in``."""
        with self.lock:
            expires_in = self.config.token_expires_in
        if family == COGNITO:
            # Cognito access tokens are JWTs; dots and dashes exercise header handling.
            def part(obj: Mapping[str, Any]) -> str:
                raw = json.dumps(obj, separators=(",", ":")).encode()
                return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

            value = ".".join(
                [
                    part({"kid": "sandbox", "alg": "RS256"}),
                    part(
                        {
                            "sub": credential_id,
                            "token_use": "access",
                            "scope": COGNITO_SCOPE,
                            "jti": str(uuid.uuid4()),
                            "exp": int(time.time() + expires_in),
                        }
                    ),
                    secrets.token_urlsafe(32),
                ]
            )
        else:
            # LWA client-credentials tokens start with "Atc|": a '|' the client must not mangle.
            value = "Atc|" + secrets.token_urlsafe(48)
        with self.lock:
            self._tokens[value] = _Token(
                credential_id, family, versions, time.monotonic() + expires_in
            )
        return value, expires_in

    def lookup_token(self, value: str) -> _Token | None:
        """The token record (expired ones included, so callers can say TokenExpired)."""
        with self.lock:
            return self._tokens.get(value)

    def expire_tokens(self) -> None:
        """Make every issued token expired now (for TokenExpired tests without waiting)."""
        with self.lock:
            for token in self._tokens.values():
                token.expires_at = min(token.expires_at, time.monotonic() - 1)

    def lookup_item(self, asin: str) -> dict[str, Any] | None:
        """Catalog item, or a generated one for synthetic load-test ASINs."""
        found = self.catalog.get(asin)
        if found is not None:
            return found
        if self.config.synthetic_asins and SYNTHETIC_ASIN_PATTERN.fullmatch(asin):
            return synthetic_item(asin)
        return None

    def reset(self, full: bool = False) -> None:
        """Clear the call log and rate windows; ``full`` also restores config and faults."""
        with self.lock:
            self._calls.clear()
            for arrivals in self._arrivals.values():
                arrivals.clear()
            if full:
                self.clear_faults()
                self.config = copy.deepcopy(self._initial)

    def sleep(self, seconds: float) -> None:
        """Sleep that ends early when the server shuts down, so tests never hang on it."""
        self.stopping.wait(seconds)


def _by_status(calls: Iterable[CallRecord]) -> dict[str, int]:
    counts = Counter("dropped" if c.status is None else str(c.status) for c in calls)
    return dict(sorted(counts.items()))


# -------------------------------------------------------------------------- responses


def _json_response(status: int, body: Any, headers: Mapping[str, str] | None = None) -> Response:
    response = Response(
        json.dumps(body, separators=(",", ":")), status=status, mimetype="application/json"
    )
    response.headers["x-amzn-RequestId"] = str(uuid.uuid4())
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def exception_type(status: int) -> str:
    """The ``type`` an error body carries for ``status``."""
    if status in EXCEPTION_TYPES:
        return EXCEPTION_TYPES[status]
    if status == 503:
        return "ServiceUnavailableException"
    return "ValidationException" if status < 500 else "InternalServerException"


def amazon_error_body(
    status: int, message: str, reason: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An error body in the SDK's ``*ExceptionResponseContent`` shape.

    The SDK's 400, 401 and 403 models require ``reason`` (its pydantic models refuse the
    body otherwise, and the caller gets an ``ApiException`` whose ``.data`` is None), so
    a missing one becomes ``Other``, a value all three reason enums have; the 404 model
    requires ``resourceId`` and ``resourceType``, which callers pass.
    """
    if reason is None and status in REASON_REQUIRED:
        reason = "Other"
    body: dict[str, Any] = {
        "type": exception_type(status),
        "message": message,
    }
    if reason is not None:
        body["reason"] = reason
    body.update(extra)
    return body


def amazon_error(
    status: int,
    message: str,
    reason: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An Amazon-shaped catalog error response."""
    return _json_response(status, amazon_error_body(status, message, reason, **extra), headers)


def field_error(name: str, message: str) -> Response:
    """400 FieldValidationFailed naming one field."""
    return amazon_error(
        400,
        f"1 validation error detected: Value at '{name}' failed to satisfy constraint: {message}",
        "FieldValidationFailed",
        fieldList=[{"name": name, "message": message}],
    )


def oauth_error(status: int, error: str, description: str) -> Response:
    """An OAuth 2.0 token-endpoint error (RFC 6749 §5.2)."""
    response = _json_response(status, {"error": error, "error_description": description})
    response.headers["Cache-Control"] = "no-store"
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Basic realm="sandbox"'
    return response


def _retry_after_headers(value: Any) -> dict[str, str]:
    return {} if value is None else {"Retry-After": str(value)}


# ----------------------------------------------------------------------- token logic


def _basic_credentials() -> tuple[str, str] | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def _token_response(state: SandboxState, family: str, throttled: bool) -> Response:
    if throttled:
        return oauth_error(429, "slow_down", "Rate exceeded")
    mimetype = request.mimetype
    if family == COGNITO:
        if mimetype != "application/x-www-form-urlencoded":
            return oauth_error(
                400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded"
            )
        form: Mapping[str, Any] = request.form
    else:
        if mimetype != "application/json":
            return oauth_error(400, "invalid_request", "Content-Type must be application/json")
        parsed = request.get_json(silent=True)
        if not isinstance(parsed, dict):
            return oauth_error(400, "invalid_request", "The request body must be a JSON object")
        form = parsed
    grant_type = form.get("grant_type")
    if not grant_type:
        return oauth_error(400, "invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", "Only client_credentials is supported")

    body_id, body_secret = form.get("client_id"), form.get("client_secret")
    basic = _basic_credentials() if family == COGNITO else None
    client_id: Any = body_id
    secret: Any = body_secret
    if basic is not None:
        if body_id is not None and body_id != basic[0]:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        client_id, secret = basic
    if not isinstance(client_id, str) or not isinstance(secret, str) or not client_id:
        return oauth_error(401, "invalid_client", "Client authentication failed")
    versions = state.find_credential(family, client_id, secret)
    if not versions:
        return oauth_error(401, "invalid_client", "Client authentication failed")

    expected_scope = COGNITO_SCOPE if family == COGNITO else LWA_SCOPE
    scope = form.get("scope")
    if scope is None and family == LWA:
        return oauth_error(400, "invalid_request", "scope is required")
    # Cognito grants the client's allowed scopes when none is asked for.
    if scope is not None and scope != expected_scope:
        return oauth_error(400, "invalid_scope", f"Invalid scope; expected {expected_scope}")

    token, expires_in = state.issue_token(client_id, family, versions)
    response = _json_response(
        200,
        {
            "access_token": token,
            # Cognito says "Bearer", LWA "bearer": clients must compare case-insensitively.
            "token_type": "Bearer" if family == COGNITO else "bearer",
            "expires_in": int(expires_in) if float(expires_in).is_integer() else expires_in,
        },
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# ------------------------------------------------------------------- getItems logic

_AUTHORIZATION = re.compile(
    r"Bearer\s+(?P<token>[^\s,]+)\s*(?:,\s*Version\s+(?P<version>[^\s,]+)\s*)?", re.IGNORECASE
)


def _authenticate(state: SandboxState) -> Response | None:
    header = request.headers.get("Authorization")
    if not header:
        return amazon_error(401, "Missing Authorization header", "MissingCredential")
    match = _AUTHORIZATION.fullmatch(header.strip())
    if match is None:
        return amazon_error(401, "Malformed Authorization header", "InvalidToken")
    token = state.lookup_token(match["token"])
    if token is None:
        return amazon_error(401, "The access token is invalid", "InvalidToken")
    if time.monotonic() >= token.expires_at:
        return amazon_error(401, "The access token has expired", "TokenExpired")
    version = match["version"]
    if token.family == COGNITO and version is None:
        return amazon_error(
            401, "A 2.x token needs 'Version <version>' in the Authorization header", "InvalidToken"
        )
    if version is not None and version not in token.versions:
        return amazon_error(
            401, f"Version {version} does not match the credential of this token", "InvalidToken"
        )
    return None


def _parse_get_items(
    state: SandboxState,
) -> tuple[dict[str, Any] | None, Response | None]:
    """Validate the body; return (request, None) or (None, error response)."""
    if request.mimetype != "application/json":
        return None, amazon_error(400, "Content-Type must be application/json", "CannotParse")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return None, amazon_error(400, "The request body is not a JSON object", "CannotParse")
    partner_tag = body.get("partnerTag")
    if not isinstance(partner_tag, str) or not partner_tag.strip():
        return None, field_error("partnerTag", "Member must not be null or blank")
    item_ids = body.get("itemIds")
    if not isinstance(item_ids, list) or not all(isinstance(i, str) for i in item_ids):
        return None, field_error("itemIds", "Member must be a list of strings")
    if not 1 <= len(item_ids) <= MAX_ITEM_IDS:
        return None, field_error(
            "itemIds",
            f"Member must have length between 1 and {MAX_ITEM_IDS}, got {len(item_ids)}",
        )
    resources = body.get("resources", [])
    if not isinstance(resources, list) or not all(isinstance(r, str) for r in resources):
        return None, field_error("resources", "Member must be a list of strings")
    if len(resources) > MAX_RESOURCES:
        return None, field_error("resources", f"Member must have length <= {MAX_RESOURCES}")
    unknown = [r for r in resources if r not in GET_ITEMS_RESOURCES]
    if unknown:
        return None, field_error(
            "resources", f"Member must satisfy enum value set; unknown: {', '.join(unknown)}"
        )
    return {"partnerTag": partner_tag, "itemIds": item_ids, "resources": resources}, None


def _items_body(state: SandboxState, parsed: Mapping[str, Any], marketplace: str) -> dict[str, Any]:
    """The 200 body: accessible items (duplicates once) plus per-item errors."""
    items: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for raw in dict.fromkeys(parsed["itemIds"]):
        asin = raw.strip().upper()
        if not ASIN_PATTERN.fullmatch(asin):
            errors.append(
                {
                    "code": "InvalidParameterValue",
                    "message": f"The ItemId {raw} provided in the request is invalid.",
                }
            )
            continue
        full = state.lookup_item(asin)
        if full is None:
            errors.append(
                {
                    "code": "ItemNotAccessible",
                    "message": f"The ItemId {asin} is not accessible through the Creators API.",
                }
            )
            continue
        items.append(render_item(full, parsed["resources"], marketplace, parsed["partnerTag"]))
    body: dict[str, Any] = {}
    if items:
        body["itemsResult"] = {"items": items}
    if errors:
        body["errors"] = errors
    return body


def _get_items_response(state: SandboxState, throttled: bool) -> Response:
    """Answer one getItems call the way Amazon would."""
    if throttled:
        return amazon_error(
            429,
            THROTTLE_MESSAGE,
            headers=_retry_after_headers(state.config.throttle_retry_after),
        )
    denied = _authenticate(state)
    if denied is not None:
        return denied
    marketplace = request.headers.get("x-marketplace")
    if not marketplace:
        return field_error("x-marketplace", "Header must not be null")
    stores = {state.config.marketplace: state.config.partner_tags, **state.config.stores}
    if marketplace not in stores:
        return amazon_error(
            400,
            f"The partner tag is not mapped to a valid associate store in {marketplace}.",
            "InvalidPartnerTag",
        )
    parsed, error = _parse_get_items(state)
    if parsed is None:
        return error or amazon_error(500, "Internal server error")
    if parsed["partnerTag"] not in stores[marketplace]:
        return amazon_error(
            400,
            f"The partner tag {parsed['partnerTag']} is not mapped to a valid associate store "
            "with your credentials.",
            "InvalidPartnerTag",
        )
    if not state.config.eligible:
        return amazon_error(
            403, "The associate is not eligible to access the Creators API.", "AssociateNotEligible"
        )
    return _json_response(200, _items_body(state, parsed, marketplace))


# --------------------------------------------------------------------------- faults


def _html_page(status: int) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>"
        f"<body><h1>{status} Service Temporarily Unavailable</h1>"
        "<p>We're sorry, but the service is not available right now.</p></body></html>\n"
    )


def _wrong_shape_body(endpoint: str) -> Any:
    if endpoint == TOKEN:
        # camelCase and no access_token: a client must not accept it.
        return {"accessToken": "not-what-you-expect", "expiresIn": 3600}
    # The retired PA-API 5 shape: a client reading camelCase must not find items.
    return {
        "ItemsResult": {
            "Items": [
                {"ASIN": "B0C7NTRL01", "DetailPageURL": "https://www.amazon.com/dp/B0C7NTRL01"}
            ]
        }
    }


def _reset_connection() -> Iterator[bytes]:
    """Abort the TCP connection before any byte of the response is written.

    Werkzeug sends the status line on the first chunk, so raising from the body
    iterator leaves the client with no response. SO_LINGER 0 turns werkzeug's final close
    into a RST; the shutdown makes the client see the drop at once. Raising a
    ConnectionError is what werkzeug treats as "client went away" — no traceback logged.
    """
    sock = request.environ.get("werkzeug.socket")

    def abort() -> Iterator[bytes]:
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        raise ConnectionResetError("sandbox fault: connection reset")
        yield b""  # pragma: no cover - makes this a generator

    return abort()


def _slow(response: Response, state: SandboxState, delay: float) -> Response:
    """Send status and headers at once, then stall ``delay`` seconds before the body."""
    body = response.get_data()

    def stream() -> Iterator[bytes]:
        yield b""  # werkzeug writes and flushes the headers on the first chunk
        state.sleep(delay)
        yield body

    slow = Response(stream(), status=response.status_code, headers=dict(response.headers))
    slow.headers["Content-Length"] = str(len(body))
    return slow


def _apply_fault(
    state: SandboxState,
    fault: _Fault,
    endpoint: str,
    normal: Callable[[], Response],
) -> Response:
    """Answer a call with ``fault``; some faults wrap the normal answer instead."""
    params = fault.params
    name = fault.name
    retry = _retry_after_headers(params.get("retryAfter"))
    if name == "status":
        status = int(params["status"])
        if endpoint == TOKEN:
            return oauth_error(status, params.get("error", "server_error"), "Injected fault")
        # The SDK's 404 model requires resourceId and resourceType.
        missing = {"resourceId": request.path, "resourceType": "Operation"} if status == 404 else {}
        return amazon_error(
            status,
            params.get("message", f"Injected {status} from the sandbox"),
            params.get("reason"),
            headers=retry,
            **missing,
        )
    if name == "429":
        if endpoint == TOKEN:
            response = oauth_error(429, "slow_down", "Rate exceeded")
            response.headers.update(retry)
            return response
        return amazon_error(429, THROTTLE_MESSAGE, headers=retry)
    if name == "token_expired":
        return amazon_error(401, "The access token has expired", "TokenExpired")
    if name == "associate_not_eligible":
        return amazon_error(
            403, "The associate is not eligible to access the Creators API.", "AssociateNotEligible"
        )
    if name == "invalid_partner_tag":
        return amazon_error(
            400, "The partner tag is not mapped to a valid associate store.", "InvalidPartnerTag"
        )
    if name == "invalid_associate":
        return amazon_error(
            400,
            "Your credentials are not mapped to an approved associate store.",
            "InvalidAssociate",
        )
    if name == "non_json":
        return Response(
            str(params.get("body", "Service response could not be generated")),
            status=int(params.get("status", 200)),
            mimetype=str(params.get("contentType", "application/json")),
        )
    if name == "html":
        status = int(params.get("status", 503))
        return Response(_html_page(status), status=status, mimetype="text/html")
    if name == "truncated_json":
        full = normal()
        data = full.get_data()
        cut = max(1, len(data) // 2)
        return Response(data[:cut], status=200, mimetype="application/json")
    if name == "wrong_shape":
        return _json_response(
            int(params.get("status", 200)), params.get("body", _wrong_shape_body(endpoint))
        )
    if name == "wrong_asin":
        response = normal()
        if response.status_code != 200:
            return response
        body = json.loads(response.get_data())
        other = str(params.get("asin", "B0WRONGAS1"))
        for item in body.get("itemsResult", {}).get("items", []):
            original = item["asin"]
            item["asin"] = other
            item["detailPageURL"] = item["detailPageURL"].replace(original, other)
        return _json_response(200, body)
    if name == "slow_body":
        return _slow(normal(), state, float(params.get("delay", 1.0)))
    if name == "delay":
        state.sleep(float(params.get("delay", 1.0)))
        return normal()
    if name == "reset":
        return Response(_reset_connection(), status=200)
    raise AssertionError(f"unhandled fault {name}")  # pragma: no cover - FAULTS guards it


# ------------------------------------------------------------------------------ app


def _json_body() -> dict[str, Any]:
    body = request.get_json(silent=True) if request.data else {}
    if not isinstance(body, dict):
        raise SandboxError("body must be a JSON object")
    return body


def _string_list(body: Mapping[str, Any], key: str) -> list[str] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SandboxError(f"'{key}' must be a list of strings")
    return value


def create_sandbox_app(config: SandboxConfig | None = None) -> Flask:
    """Build the sandbox Flask app; its state is ``app.extensions["creators_sandbox"]``."""
    state = SandboxState(config)
    app = Flask("creators_sandbox")
    app.extensions["creators_sandbox"] = state

    def answer(endpoint: str, family: str | None, normal: Callable[[bool], Response]) -> Response:
        """Record the arrival, then answer with a queued fault or the normal logic."""
        credential_id = _peek_credential(state) if endpoint == GET_ITEMS else ""
        record, throttled = state.arrive(endpoint, credential_id)
        record.family = family
        if endpoint == GET_ITEMS:
            record.asins = _peek_asins()
            record.marketplace = request.headers.get("x-marketplace")
            record.partner_tag = _peek_partner_tag()
        fault = state.take_fault(endpoint)
        if fault is None:
            response = normal(throttled)
        else:
            record.fault = fault.name
            response = _apply_fault(state, fault, endpoint, lambda: normal(throttled))
        record.status = (
            None if fault is not None and fault.name == "reset" else response.status_code
        )
        return response

    @app.post(COGNITO_TOKEN_PATH)
    def cognito_token() -> Response:
        return answer(TOKEN, COGNITO, lambda throttled: _token_response(state, COGNITO, throttled))

    @app.post(LWA_TOKEN_PATH)
    def lwa_token() -> Response:
        return answer(TOKEN, LWA, lambda throttled: _token_response(state, LWA, throttled))

    @app.post(VERSIONED_TOKEN_PATH)
    def versioned_token(version: str) -> Response:
        # Test seam, not Amazon's: AMAZON_TOKEN_URL ".../token/{version}" lets one
        # override serve credentials of both families (docs/configuration.md).
        try:
            family = credential_family(version)
        except ValueError:
            return oauth_error(400, "invalid_request", "unknown credential version")
        return answer(TOKEN, family, lambda throttled: _token_response(state, family, throttled))

    @app.post(GET_ITEMS_PATH)
    def get_items() -> Response:
        return answer(GET_ITEMS, None, lambda throttled: _get_items_response(state, throttled))

    @app.get("/_sandbox/stats")
    def stats() -> Response:
        include = request.args.get("calls", "1") not in {"0", "false", "no"}
        return _json_response(200, state.stats(include_calls=include))

    @app.post("/_sandbox/reset")
    def reset() -> Response:
        full = request.args.get("full", "0") in {"1", "true", "yes"} or bool(
            _json_body().get("full")
        )
        state.reset(full=full)
        return _json_response(200, {"reset": True, "full": full})

    @app.post("/_sandbox/faults")
    def add_fault() -> Response:
        body = _json_body()
        name = body.pop("fault", None)
        count = body.pop("count", 1)
        endpoint = body.pop("endpoint", GET_ITEMS)
        state.add_fault(str(name), count=count, endpoint=endpoint, **body)
        return _json_response(200, {"queued": state.pending_faults()})

    @app.get("/_sandbox/faults")
    def list_faults() -> Response:
        return _json_response(200, {"queued": state.pending_faults()})

    @app.delete("/_sandbox/faults")
    def clear_faults() -> Response:
        state.clear_faults()
        return _json_response(200, {"queued": state.pending_faults()})

    @app.post("/_sandbox/credentials")
    def set_credentials() -> Response:
        body = _json_body()
        credentials = body.get("credentials")
        if not isinstance(credentials, list):
            raise SandboxError("'credentials' must be a list")
        try:
            state.set_credentials(
                credentials,
                partner_tags=_string_list(body, "partner_tags"),
                revoke_tokens=bool(body.get("revoke_tokens", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SandboxError(f"bad credentials: {exc}") from exc
        return _json_response(200, state.config.public())

    @app.post("/_sandbox/tokens/expire")
    def expire_tokens() -> Response:
        state.expire_tokens()
        return _json_response(200, {"expired": True})

    @app.get("/_sandbox/config")
    def get_config() -> Response:
        return _json_response(200, state.config.public())

    @app.post("/_sandbox/config")
    def set_config() -> Response:
        body = _json_body()
        if "partner_tags" in body:
            body["partner_tags"] = set(_string_list(body, "partner_tags") or [])
        return _json_response(200, state.configure(**body).public())

    @app.errorhandler(SandboxError)
    def sandbox_error(exc: SandboxError) -> Response:
        return _json_response(400, {"error": str(exc)})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status == 404:
            return amazon_error(
                404,
                f"The requested resource {request.path} was not found.",
                resourceId=request.path,
                resourceType="Operation",
            )
        return amazon_error(status, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        app.logger.error("sandbox error", exc_info=exc)
        return amazon_error(500, "Internal server error")

    register_short_links(app, state)
    return app


def _peek_credential(state: SandboxState) -> str:
    """The credential id of the request's bearer token ("" when unknown): the window the
    call counts in."""
    match = _AUTHORIZATION.fullmatch(request.headers.get("Authorization", "").strip())
    token = state.lookup_token(match["token"]) if match else None
    return token.credential_id if token is not None else ""


def _peek_partner_tag() -> str | None:
    """The partnerTag of a getItems body, for the stats."""
    try:
        body = json.loads(request.get_data())
    except ValueError:
        return None
    tag = body.get("partnerTag") if isinstance(body, dict) else None
    return tag if isinstance(tag, str) else None


def _peek_asins() -> list[str]:
    """The itemIds of a getItems body, for the stats, whatever else is wrong with it."""
    try:
        # Parsed by hand: Flask's get_json cache would let force=True skip the
        # Content-Type check the real validation does later.
        body = json.loads(request.get_data())
    except ValueError:
        return []
    if isinstance(body, dict) and isinstance(body.get("itemIds"), list):
        return [str(i).strip().upper() for i in body["itemIds"]]
    return []


def sandbox_state(app: Flask) -> SandboxState:
    """The ``SandboxState`` of an app made by ``create_sandbox_app``."""
    state = app.extensions["creators_sandbox"]
    if not isinstance(state, SandboxState):
        raise TypeError("not a creators sandbox app")
    return state


# ----------------------------------------------------------------------- short links
#
# Amazon's link shorteners, for ``AMAZON_SHORT_LINKS = resolve`` with
# ``AMAZON_SHORT_LINK_BASE_URL`` pointing here. They are not part of the Creators API: the
# sandbox serves them so resolution can be tested over real HTTP. Paths are the ones the
# shorteners use (``a.co``/``amzn.eu``/``amzn.asia``/``amzn.in`` share links are
# ``/d/<code>``, ``amzn.to`` links are ``/<code>``); the base-URL seam sends every short
# host here, so they share one namespace. Behaviour emulated, and where it comes from:
#
# * a share link answers a redirect whose ``Location`` is an absolute product-page URL on
#   the store, with the share tracking parameters: ``a.co/d/9DweDUD`` →
#   ``https://www.amazon.com/dp/B0B151JYPV?ref_=cm_sw_r_cp_ud_dp_…`` and ``amzn.eu/d/…`` →
#   ``https://www.amazon.it/<slug>/dp/B0899VXM8F/?_encoding=UTF8&…`` (vaiden/amazon-asin
#   issue #16 and its test.js); share URLs carry ``ref=``, ``ref_=`` and
#   ``social_share=cm_sw_r_cp_ud_dp_<token>`` (share links found in public repositories);
# * ``amzn.to`` is the Associates shortener run on Bitly (amzn.to links are made by
#   bit.ly, per the codecaveme.de write-up), and Bitly answers ``301 Moved Permanently``;
#   its targets are Associates links such as
#   ``/gp/product/B00MH78O0M/ref=as_li_ss_tl?ie=UTF8&…&linkCode=sl1&tag=…&linkId=…``
#   (vaiden/amazon-asin test.js). Share links answer 301 here too; the two-hop chain uses
#   a 302 first so a client handling only 301 is caught;
# * the client must read ``Location`` with redirects off (``redirect: 'manual'``, as the
#   resolver tested in a public repository does): the sandbox never expects a follow-up
#   request to the store;
# * an unknown code answers 404 with an HTML page (the stricter plausible answer: Amazon's
#   behaviour for unknown codes is not documented).
#
# Two-hop, loop, off-Amazon, search-page, over-long, 503 and slow chains are synthetic:
# the links seen in public answer in one hop, and these exercise the resolver's stops.
#
# Control: ``GET /_sandbox/short-links`` lists the requests received (``path``, and
# ``status`` once answered, ``null`` before), ``DELETE`` clears them.

#: How long the slow short link waits before answering.
SHORT_LINK_SLOW_SECONDS = 5.0
SHORT_LINK_SHARE_REF = "cm_sw_r_cp_ud_dp_SANDBOX0SHARE0TOKEN0"
_SHARE_QUERY = (
    f"ref={SHORT_LINK_SHARE_REF}&ref_={SHORT_LINK_SHARE_REF}&social_share={SHORT_LINK_SHARE_REF}"
)

#: path -> (status, Location). ASINs are synthetic (``B0SYN…``), so getItems knows them.
SHORT_LINKS: dict[str, tuple[int, str]] = {
    # One hop: a share link to its product page.
    "/d/1hopA01": (301, f"https://www.amazon.com/dp/B0SYN00301?{_SHARE_QUERY}"),
    # The demo's share link: the catalog's complete gloves item.
    "/d/3V4ITBv": (301, f"https://www.amazon.com/dp/B0C7NTRL01?{_SHARE_QUERY}"),
    # Two hops: a share link to another short link, then to the product.
    "/d/2hopA01": (302, "https://amzn.eu/d/2hopB01"),
    "/d/2hopB01": (
        301,
        "https://www.amazon.com/Nitrile-Gloves-Box-100/dp/B0SYN00302/?_encoding=UTF8&ref_=pd_gw",
    ),
    # amzn.to (Bitly): an Associates link.
    "/3SYNamz": (
        301,
        "https://www.amazon.com/gp/product/B0SYN00303/ref=as_li_ss_tl?ie=UTF8"
        "&linkCode=sl1&tag=ardademo-20&linkId=0123456789abcdef0123456789abcdef",
    ),
    # A relative Location, resolved against the short host.
    "/d/relA001": (301, "/d/1hopA01"),
    # Off Amazon: a lookalike host, and another site.
    "/d/offA001": (301, "https://www.amazon.com.evil.example/dp/B0SYN00304"),
    "/d/offB001": (301, "https://www.example.com/deal?asin=B0SYN00304"),
    # A loop between two short links.
    "/d/loopA01": (301, "https://a.co/d/loopB01"),
    "/d/loopB01": (301, "https://a.co/d/loopA01"),
    # A chain one hop longer than the resolver allows (4 short links, then a product).
    "/d/chainA1": (301, "https://a.co/d/chainA2"),
    "/d/chainA2": (301, "https://a.co/d/chainA3"),
    "/d/chainA3": (301, "https://a.co/d/chainA4"),
    "/d/chainA4": (301, "https://www.amazon.com/dp/B0SYN00305"),
    # A search page, not a product.
    "/d/search1": (301, f"https://www.amazon.com/s?k=nitrile+gloves&{_SHARE_QUERY}"),
    # A product on a store outside the 22.
    "/d/storeCN": (301, "https://www.amazon.cn/dp/B0SYN00306"),
    # The shortener is down.
    "/d/down001": (503, ""),
    # Slow: answers the one-hop redirect after SHORT_LINK_SLOW_SECONDS.
    "/d/slowA01": (301, "https://www.amazon.com/dp/B0SYN00307"),
}
SHORT_LINK_SLOW_PATHS = frozenset({"/d/slowA01"})


class ShortLinkLog:
    """The short-link requests the sandbox received, in order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []

    def add(self, path: str) -> dict[str, Any]:
        """Record an arrival (its ``status`` is filled in once answered)."""
        entry: dict[str, Any] = {"path": path, "status": None}
        with self.lock:
            self.requests.append(entry)
        return entry

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(entry) for entry in self.requests]

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


def short_link_log(app: Flask) -> ShortLinkLog:
    """The :class:`ShortLinkLog` of a sandbox app."""
    log = app.extensions["creators_sandbox_short_links"]
    if not isinstance(log, ShortLinkLog):
        raise TypeError("not a creators sandbox app")
    return log


def _short_link_answer(state: SandboxState, path: str) -> Response:
    status, location = SHORT_LINKS.get(path, (404, ""))
    if path in SHORT_LINK_SLOW_PATHS:
        state.sleep(SHORT_LINK_SLOW_SECONDS)
    if status in (301, 302):
        response = Response(
            f'<html><body><a href="{location}">moved here</a></body></html>\n',
            status=status,
            mimetype="text/html",
        )
        response.headers["Location"] = location
        response.autocorrect_location_header = False  # relative stays relative
        return response
    return Response(_html_page(status), status=status, mimetype="text/html")


def register_short_links(app: Flask, state: SandboxState) -> None:
    """Add the short-link routes and their control endpoints to a sandbox app."""
    log = ShortLinkLog()
    app.extensions["creators_sandbox_short_links"] = log

    def answer(path: str) -> Response:
        entry = log.add(path)
        response = _short_link_answer(state, path)
        entry["status"] = response.status_code
        return response

    @app.get("/d/<code>")
    def share_link(code: str) -> Response:
        return answer(f"/d/{code}")

    for path in SHORT_LINKS:
        if not path.startswith("/d/"):
            app.add_url_rule(path, f"short_link_{path}", lambda p=path: answer(p))

    @app.get("/_sandbox/short-links")
    def short_link_requests() -> Response:
        return _json_response(200, {"requests": log.snapshot()})

    @app.delete("/_sandbox/short-links")
    def clear_short_link_requests() -> Response:
        log.clear()
        return _json_response(200, {"cleared": True})


# --------------------------------------------------------------------------- server


class _QuietHandler(WSGIRequestHandler):
    """Request handler that logs errors but not one line per request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


def _check_loopback(host: str) -> None:
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the sandbox binds to loopback only, not {host!r}")


def serve_in_thread(
    app: Flask, host: str = "127.0.0.1", port: int = 0, quiet: bool = True
) -> tuple[str, Callable[[], None]]:
    """Serve ``app`` on loopback from a daemon thread; return (base URL, shutdown)."""
    _check_loopback(host)
    server: BaseWSGIServer = make_server(
        host, port, app, threaded=True, request_handler=_QuietHandler if quiet else None
    )
    thread = threading.Thread(target=server.serve_forever, name="creators-sandbox", daemon=True)
    thread.start()
    state = app.extensions.get("creators_sandbox")

    def shutdown() -> None:
        if isinstance(state, SandboxState):
            state.stopping.set()  # end injected stalls so shutdown does not wait on them
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{server.server_port}", shutdown


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: run the sandbox in the foreground."""
    parser = argparse.ArgumentParser(
        prog="python -m arda_amazon_bp.testing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address only")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--rate", type=float, default=1.0, help="getItems calls per second")
    parser.add_argument("--token-rate", type=float, default=None, help="token calls per second")
    parser.add_argument("--window", type=float, default=1.0, help="sliding window, seconds")
    parser.add_argument("--token-expires-in", type=float, default=3600.0)
    parser.add_argument("--marketplace", default=DEFAULT_MARKETPLACE)
    parser.add_argument(
        "--partner-tag", action="append", default=None, help="repeatable; default ardademo-20"
    )
    parser.add_argument(
        "--credential",
        action="append",
        default=None,
        metavar="ID:SECRET:VERSION",
        help="repeatable; default: the demo credential as 2.1 and 3.1",
    )
    parser.add_argument("--catalog", type=Path, default=DEFAULT_CATALOG_PATH)
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    try:
        _check_loopback(args.host)
    except ValueError as exc:
        parser.error(str(exc))

    credentials = default_credentials()
    if args.credential:
        credentials = []
        for text in args.credential:
            credential_id, secret, version = text.rsplit(":", 2)
            credentials.append(Credential(credential_id, secret, version))
    config = SandboxConfig(
        credentials=credentials,
        partner_tags=set(args.partner_tag or [DEMO_PARTNER_TAG]),
        marketplace=args.marketplace,
        rate=args.rate,
        token_rate=args.token_rate,
        window_seconds=args.window,
        token_expires_in=args.token_expires_in,
        catalog_path=args.catalog,
    )
    app = create_sandbox_app(config)
    server = make_server(
        args.host,
        args.port,
        app,
        threaded=True,
        request_handler=_QuietHandler if args.quiet else None,
    )
    print(f"sandbox listening on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox_state(app).stopping.set()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
