"""The Amazon marketplaces this package knows: host, country, credential region, currency.

``MARKETPLACES`` holds exactly the 22 stores of Amazon's locale reference (docs/architecture.md),
keyed by canonical host (``www.amazon.co.uk``). The region of each store follows PA-API
5's locale reference, which the Creators API keeps: a credential ``version`` ending in
``.1`` serves North America, ``.2`` Europe (with India and the Middle East), ``.3`` the Far
East (see ``REGION_BY_VERSION``).

``UNSUPPORTED_STORES`` lists real Amazon retail stores outside those 22, so a link to one
of them can be refused as ``UNSUPPORTED_AMAZON_LOCALE`` rather than "not Amazon".

Pure data and lookups: no Flask, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "HOST_PREFIXES",
    "MARKETPLACES",
    "REGIONS",
    "REGION_BY_VERSION",
    "UNSUPPORTED_STORES",
    "Marketplace",
    "is_unsupported_store",
    "marketplace_for_host",
    "store_domain",
]


@dataclass(frozen=True)
class Marketplace:
    """One Amazon store: canonical ``host``, ISO ``country``, credential ``region``
    (``NA``, ``EU`` or ``FE``) and ISO 4217 ``currency``."""

    host: str
    country: str
    region: str
    currency: str


REGIONS: tuple[str, ...] = ("NA", "EU", "FE")

#: Creators API credential version → the region whose stores it serves.
REGION_BY_VERSION: dict[str, str] = {
    "2.1": "NA",
    "2.2": "EU",
    "2.3": "FE",
    "3.1": "NA",
    "3.2": "EU",
    "3.3": "FE",
}

_TABLE: tuple[Marketplace, ...] = (
    # North America
    Marketplace("www.amazon.com", "US", "NA", "USD"),
    Marketplace("www.amazon.ca", "CA", "NA", "CAD"),
    Marketplace("www.amazon.com.mx", "MX", "NA", "MXN"),
    Marketplace("www.amazon.com.br", "BR", "NA", "BRL"),
    # Europe — PA-API 5 also serves India and the Middle East from the EU endpoint.
    Marketplace("www.amazon.co.uk", "GB", "EU", "GBP"),
    Marketplace("www.amazon.de", "DE", "EU", "EUR"),
    Marketplace("www.amazon.fr", "FR", "EU", "EUR"),
    Marketplace("www.amazon.it", "IT", "EU", "EUR"),
    Marketplace("www.amazon.es", "ES", "EU", "EUR"),
    Marketplace("www.amazon.nl", "NL", "EU", "EUR"),
    Marketplace("www.amazon.se", "SE", "EU", "SEK"),
    Marketplace("www.amazon.pl", "PL", "EU", "PLN"),
    Marketplace("www.amazon.com.be", "BE", "EU", "EUR"),
    Marketplace("www.amazon.com.tr", "TR", "EU", "TRY"),
    Marketplace("www.amazon.ae", "AE", "EU", "AED"),
    Marketplace("www.amazon.sa", "SA", "EU", "SAR"),
    Marketplace("www.amazon.eg", "EG", "EU", "EGP"),
    Marketplace("www.amazon.ie", "IE", "EU", "EUR"),
    Marketplace("www.amazon.in", "IN", "EU", "INR"),
    # Far East
    Marketplace("www.amazon.co.jp", "JP", "FE", "JPY"),
    Marketplace("www.amazon.sg", "SG", "FE", "SGD"),
    Marketplace("www.amazon.com.au", "AU", "FE", "AUD"),
)

#: The 22 supported marketplaces, keyed by canonical host.
MARKETPLACES: dict[str, Marketplace] = {m.host: m for m in _TABLE}

#: Subdomains under which a store serves the same product pages: desktop, AmazonSmile
#: (retired in 2023, but its links still sit in bookmarks and order e-mails) and mobile.
HOST_PREFIXES: tuple[str, ...] = ("www.", "smile.", "m.")

#: Real Amazon retail stores outside the 22 (registered domains, without ``www.``).
#: Kept to stores that certainly exist; domains that merely redirect to another store
#: (e.g. amazon.at → amazon.de) are not stores and are not listed.
UNSUPPORTED_STORES: frozenset[str] = frozenset({"amazon.cn", "amazon.co.za"})

_BY_DOMAIN: dict[str, Marketplace] = {m.host.removeprefix("www."): m for m in _TABLE}


def store_domain(host: str) -> str:
    """``host`` lowercased, without a trailing dot and without one ``www.``/``smile.``/``m.``.

    ``"Smile.Amazon.co.uk."`` → ``"amazon.co.uk"``. Non-ASCII hosts are returned unchanged
    (lowercasing them could turn a lookalike letter into an ASCII one, e.g. U+212A KELVIN
    SIGN → ``k``), so they never match a store.
    """
    if not host.isascii():
        return host
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    for prefix in HOST_PREFIXES:
        if host.startswith(prefix):
            return host[len(prefix) :]
    return host


def marketplace_for_host(host: str) -> Marketplace | None:
    """The supported marketplace served at ``host`` (any case, ``www.``/``smile.``/``m.``
    or bare, optional trailing dot), or ``None``."""
    return _BY_DOMAIN.get(store_domain(host))


def is_unsupported_store(host: str) -> bool:
    """Whether ``host`` is a real Amazon store outside the 22 (e.g. ``www.amazon.cn``)."""
    return store_domain(host) in UNSUPPORTED_STORES
