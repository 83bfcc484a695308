"""The marketplace table: exactly the 22 stores of docs/architecture.md, with sane attributes."""

from __future__ import annotations

import dataclasses
import re

import pytest

from arda_amazon_bp.marketplaces import (
    MARKETPLACES,
    REGION_BY_VERSION,
    REGIONS,
    UNSUPPORTED_STORES,
    Marketplace,
    is_unsupported_store,
    marketplace_for_host,
    store_domain,
)

# docs/architecture.md, in its order, with the country, region and currency each must carry.
EXPECTED = {
    "www.amazon.com": ("US", "NA", "USD"),
    "www.amazon.ca": ("CA", "NA", "CAD"),
    "www.amazon.com.mx": ("MX", "NA", "MXN"),
    "www.amazon.com.br": ("BR", "NA", "BRL"),
    "www.amazon.co.uk": ("GB", "EU", "GBP"),
    "www.amazon.de": ("DE", "EU", "EUR"),
    "www.amazon.fr": ("FR", "EU", "EUR"),
    "www.amazon.it": ("IT", "EU", "EUR"),
    "www.amazon.es": ("ES", "EU", "EUR"),
    "www.amazon.nl": ("NL", "EU", "EUR"),
    "www.amazon.se": ("SE", "EU", "SEK"),
    "www.amazon.pl": ("PL", "EU", "PLN"),
    "www.amazon.com.be": ("BE", "EU", "EUR"),
    "www.amazon.com.tr": ("TR", "EU", "TRY"),
    "www.amazon.ae": ("AE", "EU", "AED"),
    "www.amazon.sa": ("SA", "EU", "SAR"),
    "www.amazon.eg": ("EG", "EU", "EGP"),
    "www.amazon.ie": ("IE", "EU", "EUR"),
    "www.amazon.in": ("IN", "EU", "INR"),
    "www.amazon.co.jp": ("JP", "FE", "JPY"),
    "www.amazon.sg": ("SG", "FE", "SGD"),
    "www.amazon.com.au": ("AU", "FE", "AUD"),
}


def test_exactly_the_22_hosts() -> None:
    assert len(MARKETPLACES) == 22
    assert set(MARKETPLACES) == set(EXPECTED)


@pytest.mark.parametrize(("host", "expected"), sorted(EXPECTED.items()))
def test_each_marketplace_attributes(host: str, expected: tuple[str, str, str]) -> None:
    market = MARKETPLACES[host]
    assert market == Marketplace(host, *expected)
    assert (market.country, market.region, market.currency) == expected


@pytest.mark.parametrize("market", list(MARKETPLACES.values()), ids=lambda m: m.host)
def test_attributes_are_well_formed(market: Marketplace) -> None:
    assert re.fullmatch(r"www\.amazon\.[a-z.]+", market.host)
    assert re.fullmatch(r"[A-Z]{2}", market.country)
    assert re.fullmatch(r"[A-Z]{3}", market.currency)
    assert market.region in REGIONS


def test_country_codes_are_unique() -> None:
    countries = [m.country for m in MARKETPLACES.values()]
    assert len(set(countries)) == len(countries)


# PA-API 5's locale reference serves India and the Middle East from the EU region.
EUROPE = {"GB", "DE", "FR", "IT", "ES", "NL", "SE", "PL", "BE", "TR", "IE"}
INDIA_AND_MIDDLE_EAST = {"AE", "SA", "EG", "IN"}


def test_region_membership_follows_pa_api_locale_reference() -> None:
    by_region: dict[str, set[str]] = {r: set() for r in REGIONS}
    for market in MARKETPLACES.values():
        by_region[market.region].add(market.country)
    assert by_region == {
        "NA": {"US", "CA", "MX", "BR"},
        "EU": EUROPE | INDIA_AND_MIDDLE_EAST,
        "FE": {"JP", "SG", "AU"},
    }


def test_region_by_version() -> None:
    assert REGION_BY_VERSION == {
        "2.1": "NA",
        "2.2": "EU",
        "2.3": "FE",
        "3.1": "NA",
        "3.2": "EU",
        "3.3": "FE",
    }
    assert set(REGION_BY_VERSION.values()) == set(REGIONS)


def test_marketplace_is_frozen() -> None:
    market = MARKETPLACES["www.amazon.com"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        market.host = "evil.example"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("www.amazon.com", "www.amazon.com"),
        ("amazon.com", "www.amazon.com"),
        ("smile.amazon.co.uk", "www.amazon.co.uk"),
        ("m.amazon.de", "www.amazon.de"),
        ("WWW.AMAZON.CO.JP", "www.amazon.co.jp"),
        ("www.amazon.com.au.", "www.amazon.com.au"),
        ("amazon.com.be", "www.amazon.com.be"),
    ],
)
def test_marketplace_for_host_accepts_variants(host: str, expected: str) -> None:
    found = marketplace_for_host(host)
    assert found is not None
    assert found.host == expected


@pytest.mark.parametrize(
    "host",
    [
        "",
        "amazon",
        "www.amazon.cn",
        "amazon.co.za",
        "aws.amazon.com",
        "www.www.amazon.com",
        "amazon.com.evil.example",
        "evilamazon.com",
        "www.amazon.com..",
        "www.\u0430mazon.com",  # Cyrillic а
        "www.amazon.co\u212a",  # nothing ASCII hides behind lower() of non-ASCII
        "amzn.com",
        "www.amazon.com.mx.example",
        "www.amazon.at",  # redirects to amazon.de; not a store of its own
    ],
)
def test_marketplace_for_host_refuses_others(host: str) -> None:
    assert marketplace_for_host(host) is None


def test_unsupported_stores() -> None:
    assert {"amazon.cn", "amazon.co.za"} <= UNSUPPORTED_STORES
    for domain in UNSUPPORTED_STORES:
        assert marketplace_for_host(domain) is None
        assert is_unsupported_store(domain)
        assert is_unsupported_store("www." + domain)
        assert is_unsupported_store(domain.upper() + ".")
    assert not is_unsupported_store("www.amazon.com")
    assert not is_unsupported_store("amazon.cn.evil.example")


def test_supported_and_unsupported_do_not_overlap() -> None:
    supported = {store_domain(h) for h in MARKETPLACES}
    assert supported.isdisjoint(UNSUPPORTED_STORES)


def test_store_domain() -> None:
    assert store_domain("Smile.Amazon.co.uk.") == "amazon.co.uk"
    assert store_domain("m.amazon.in") == "amazon.in"
    assert store_domain("amazon.in") == "amazon.in"
    assert store_domain("www.m.amazon.in") == "m.amazon.in"  # only one prefix comes off
    assert store_domain("www.\u0430mazon.com") == "www.\u0430mazon.com"
