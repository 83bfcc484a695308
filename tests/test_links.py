"""``parse_product_link``: every accepted link shape on every marketplace, every refusal
with its exact code, and property tests that the parser is total and stable."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arda_amazon_bp.errors import AmazonImportError, ErrorCode
from arda_amazon_bp.links import (
    MAX_LINK_LENGTH,
    ProductRef,
    ShortLink,
    find_link,
    parse_product_link,
)
from arda_amazon_bp.marketplaces import MARKETPLACES

UNRECOGNIZED = ErrorCode.UNRECOGNIZED_AMAZON_URL
SHORT = ErrorCode.UNSUPPORTED_SHORT_LINK
LOCALE = ErrorCode.UNSUPPORTED_AMAZON_LOCALE
PARSER_CODES = {UNRECOGNIZED, SHORT, LOCALE}

ASIN = "B0ABCDEFGH"


def _percent_encode_all(text: str) -> str:
    return "".join(f"%{ord(ch):02X}" for ch in text)


# Every accepted path shape; ``{asin}`` is replaced by the ASIN as written in the link.
PATH_SHAPES: dict[str, str] = {
    "dp": "/dp/{asin}",
    "dp-trailing-slash": "/dp/{asin}/",
    "slug-dp-ref": "/Stainless-Steel-Travel-Mug/dp/{asin}/ref=sr_1_3?crid=2X&keywords=mug&sr=8-3",
    "gp-product": "/gp/product/{asin}",
    "order-history": "/gp/product/{asin}/ref=ppx_yo_dt_b_asin_title_o00_s00?ie=UTF8&psc=1",
    "gp-aw-d": "/gp/aw/d/{asin}",
    "dp-product": "/dp/product/{asin}",
    "obidos-asin": "/exec/obidos/ASIN/{asin}",
    "obidos-tg-detail": "/exec/obidos/tg/detail/-/{asin}",
    "o": "/o/{asin}",
    "o-asin": "/o/ASIN/{asin}",
    "lang-dp": "/-/es/dp/{asin}",
    "lang-slug-dp": "/-/es/Taza-de-Viaje/dp/{asin}",
    "offer-listing": "/gp/offer-listing/{asin}",
    "product-reviews": "/product-reviews/{asin}",
    "slug-product-reviews": "/Travel-Mug/product-reviews/{asin}/ref=cm_cr_dp_d_show_all_btm",
    "query-variant": "/dp/{asin}?th=1&psc=1",
    "query-foreign-tag": "/dp/{asin}?tag=someoneelse-20&linkCode=ll1",
    "fragment": "/dp/{asin}#customerReviews",
    "percent-encoded-slug": "/Caf%C3%A9-Cr%C3%A8me-Br%C3%BBl%C3%A9e/dp/{asin}",
    "percent-encoded-asin": "/dp/{encoded}",
    "empty-segments": "//dp//{asin}",
    "customer-reviews": "/gp/customer-reviews/R2ABCDEF0GHIJK/ref=cm_cr_arp_d_rvw_ttl"
    "?ie=UTF8&ASIN={asin}",
    "sponsored": "/sspa/click?ie=UTF8&spc=MTo&url=%2FTravel-Mug%2Fdp%2F{asin}%2F"
    "ref%3Dsr_1_1_sspa&sp=1",
}

HOST_VARIANTS: tuple[Callable[[str], str], ...] = (
    lambda host: host,
    lambda host: host.removeprefix("www."),
    lambda host: "smile." + host.removeprefix("www."),
    lambda host: "m." + host.removeprefix("www."),
    lambda host: host.upper(),
    lambda host: host + ".",
)
SCHEMES = ("https://", "http://", "", "HTTPS://", "//", "Http://")
WRAPPERS: tuple[Callable[[str], str], ...] = (
    lambda url: url,
    lambda url: f"  {url}\n",
    lambda url: f"\u200e{url}\u200f",
    lambda url: f"\ufeff\t{url} \u200b",
)
ASINS = ("B0ABCDEFGH", "b07xjwtzgz", "0140449132", "080442957X", "B00005N5PF", "123456789x")


def build_link(
    host: str, shape: str, asin: str, *, variant: int = 0, scheme: str = "https://"
) -> str:
    path = PATH_SHAPES[shape].format(asin=asin, encoded=_percent_encode_all(asin))
    return scheme + HOST_VARIANTS[variant](host) + path


def _generated_cases() -> list[Any]:
    cases = []
    for i, host in enumerate(MARKETPLACES):
        for j, shape in enumerate(PATH_SHAPES):
            asin = ASINS[(i + j) % len(ASINS)]
            variant = (i + j) % len(HOST_VARIANTS)
            scheme = SCHEMES[(3 * i + j) % len(SCHEMES)]
            wrap = WRAPPERS[(i + 2 * j) % len(WRAPPERS)]
            link = wrap(build_link(host, shape, asin, variant=variant, scheme=scheme))
            cases.append(
                pytest.param(link, ProductRef(host, asin.upper()), id=f"{host}-{shape}-v{variant}")
            )
    return cases


GENERATED = _generated_cases()


@pytest.mark.parametrize(("text", "expected"), GENERATED)
def test_generated_links_on_every_marketplace(text: str, expected: ProductRef) -> None:
    assert parse_product_link(text) == expected


def test_generated_cases_cover_every_marketplace_and_shape() -> None:
    assert len(GENERATED) == len(MARKETPLACES) * len(PATH_SHAPES) >= 100
    assert {case.values[1].marketplace for case in GENERATED} == set(MARKETPLACES)


REAL_WORLD = [
    (
        "https://www.amazon.com/Apple-MWP22AM-A-AirPods-Pro/dp/B07ZPC9QD4/ref=sr_1_3"
        "?crid=3K0A0&keywords=airpods&qid=1700000000&sprefix=airpo%2Caps%2C150&sr=8-3",
        ProductRef("www.amazon.com", "B07ZPC9QD4"),
    ),
    (
        "https://www.amazon.co.uk/gp/product/B08N5WRWNW/ref=ppx_yo_dt_b_asin_title_o02_s00"
        "?ie=UTF8&psc=1",
        ProductRef("www.amazon.co.uk", "B08N5WRWNW"),
    ),
    (
        "https://smile.amazon.com/dp/B07FZ8S74R?ref_=ast_sto_dp",
        ProductRef("www.amazon.com", "B07FZ8S74R"),
    ),
    ("https://www.amazon.de/-/en/dp/B09B8V1LZ3", ProductRef("www.amazon.de", "B09B8V1LZ3")),
    (
        "https://www.amazon.ae/-/en/Samsung-Galaxy-Smartphone/dp/B0CQYMT1J7/ref=sr_1_1",
        ProductRef("www.amazon.ae", "B0CQYMT1J7"),
    ),
    ("https://www.amazon.com/-/zh_TW/dp/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("https://www.amazon.com.br/-/pt-BR/dp/B0ABCDEFGH", ProductRef("www.amazon.com.br", ASIN)),
    (
        "https://www.amazon.co.jp/%E3%83%86%E3%82%B9%E3%83%88/dp/4062748681/",
        ProductRef("www.amazon.co.jp", "4062748681"),
    ),
    ("https://www.amazon.co.jp/テスト商品/dp/B0ABCDEFGH", ProductRef("www.amazon.co.jp", ASIN)),
    (
        "https://www.amazon.com/gp/aw/d/B07PXGQC1Q/?_encoding=UTF8&pd_rd_plhdr=t",
        ProductRef("www.amazon.com", "B07PXGQC1Q"),
    ),
    (
        "https://www.amazon.com.br/Echo-Dot-4%C2%AA-gera%C3%A7%C3%A3o/dp/B084DWCZY6",
        ProductRef("www.amazon.com.br", "B084DWCZY6"),
    ),
    (
        "https://www.amazon.co.jp/exec/obidos/ASIN/4062748681",
        ProductRef("www.amazon.co.jp", "4062748681"),
    ),
    (
        "http://www.amazon.com/exec/obidos/tg/detail/-/0316769487",
        ProductRef("www.amazon.com", "0316769487"),
    ),
    ("https://www.amazon.in/dp/B0ABCDEFGH?tag=someoneelse-21", ProductRef("www.amazon.in", ASIN)),
    (
        "https://www.amazon.com/dp/B0ABCDEFGH/ref=as_li_ss_tl?ie=UTF8&linkCode=sl1&tag=x-20"
        "#productDetails",
        ProductRef("www.amazon.com", ASIN),
    ),
    ("https://www.amazon.com/GP/PRODUCT/b0abcdefgh", ProductRef("www.amazon.com", ASIN)),
    ("https://m.amazon.co.uk/dp/B0ABCDEFGH", ProductRef("www.amazon.co.uk", ASIN)),
    # amzn.com carries the ASIN in the path and redirects to www.amazon.com.
    ("amzn.com/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("http://amzn.com/dp/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("https://www.amzn.com/B0ABCDEFGH/", ProductRef("www.amazon.com", ASIN)),
    ("AMZN.COM/0140449132", ProductRef("www.amazon.com", "0140449132")),
    ("https://amzn.com./gp/product/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    # Default ports, empty port.
    ("https://www.amazon.com:443/dp/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("http://www.amazon.com:80/dp/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("www.amazon.com:443/dp/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("https://www.amazon.com:/dp/B0ABCDEFGH", ProductRef("www.amazon.com", ASIN)),
    # Invisible characters phones add, and Unicode whitespace around the link.
    ("\ufeffhttps://www.amazon.com/dp/B0ABCDEFGH\u200b", ProductRef("www.amazon.com", ASIN)),
    ("\u00a0https://www.amazon.com/dp/B0ABCDEFGH\u3000", ProductRef("www.amazon.com", ASIN)),
    ("https://www.ama\u200bzon.com/dp/B0AB\u00adCDEFGH", ProductRef("www.amazon.com", ASIN)),
    ("\u2066https://www.amazon.fr/dp/B0ABCDEFGH\u2069", ProductRef("www.amazon.fr", ASIN)),
    # Review and sponsored-result pages name the product too.
    (
        "https://www.amazon.com/gp/customer-reviews/R1ABCDEF123XYZ/ref=cm_cr_getr_d_rvw_ttl"
        "?ie=UTF8&asin=b0abcdefgh",
        ProductRef("www.amazon.com", ASIN),
    ),
    (
        "https://www.amazon.de/sspa/click?ie=UTF8&spc=MTo&url=%2FTasse%2Fdp%2FB0ABCDEFGH%2F"
        "ref%3Dsr_1_1_sspa%3Fkeywords%3Dtasse",
        ProductRef("www.amazon.de", ASIN),
    ),
]


@pytest.mark.parametrize(("text", "expected"), REAL_WORLD)
def test_real_world_links(text: str, expected: ProductRef) -> None:
    assert parse_product_link(text) == expected


# What the Share button and browsers put on the clipboard. The forms follow shared texts
# found in public repositories (the app's "Check out this deal on Amazon: <title> <link>",
# its share links carrying ref=cm_sw_r_cp_ud_dp_…&social_share=…, a browser's
# "Amazon.com: <title>" page title before the link) plus the ways people wrap links.
SHARE_TOKEN = "cm_sw_r_cp_ud_dp_7EASQPVS6NQETBS6ZRRW"
SHARE_TEXTS: list[tuple[str, ProductRef | ShortLink]] = [
    (
        "Check out this deal on Amazon: Nitrile Gloves, Box of 100 "
        f"https://www.amazon.com/dp/B0C7NTRL01?ref={SHARE_TOKEN}&ref_={SHARE_TOKEN}"
        f"&social_share={SHARE_TOKEN}",
        ProductRef("www.amazon.com", "B0C7NTRL01"),
    ),
    (
        "Check out this deal on Amazon: Nitrile Gloves, Box of 100 https://a.co/d/3V4ITBv",
        ShortLink("a.co", "/d/3V4ITBv"),
    ),
    (
        "Amazon.com: Nitrile Gloves, Box of 100 : Health & Household\n"
        "https://www.amazon.com/Nitrile-Gloves-Box-100/dp/B0C7NTRL01/ref=sr_1_3?crid=2X",
        ProductRef("www.amazon.com", "B0C7NTRL01"),
    ),
    (
        "Raspberry Pi 4 Computer Modell B, 8GB RAM https://amzn.eu/d/5dF49o2",
        ShortLink("amzn.eu", "/d/5dF49o2"),
    ),
    (
        "パンパース テープ Sサイズ 108枚 https://amzn.asia/d/0hw5G7DL",
        ShortLink("amzn.asia", "/d/0hw5G7DL"),
    ),
    ("Look at this one: https://amzn.in/d/cK3dXyZ!", ShortLink("amzn.in", "/d/cK3dXyZ")),
    ("Gift idea 🎁 http://amzn.to/2eEPcFk", ShortLink("amzn.to", "/2eEPcFk")),
    ("\u200eCheck this out https://a.co/d/3V4ITBv\u200f", ShortLink("a.co", "/d/3V4ITBv")),
    (
        'He said "https://www.amazon.co.uk/dp/B08N5WRWNW." and left',
        ProductRef("www.amazon.co.uk", "B08N5WRWNW"),
    ),
    ("(see https://www.amazon.de/dp/B09B8V1LZ3)", ProductRef("www.amazon.de", "B09B8V1LZ3")),
    ("«https://www.amazon.fr/dp/B0ABCDEFGH», merci !", ProductRef("www.amazon.fr", ASIN)),
    (
        "これ → 「https://www.amazon.co.jp/dp/4062748681」。",
        ProductRef("www.amazon.co.jp", "4062748681"),
    ),
    ("gloves: www.amazon.com/dp/B0ABCDEFGH, cheap!", ProductRef("www.amazon.com", ASIN)),
    # Bare hosts inside text: any case, a trailing root dot, the amzn.com and short hosts.
    ("gloves: WWW.AMAZON.COM./dp/B0ABCDEFGH cheap", ProductRef("www.amazon.com", ASIN)),
    ("gloves: amzn.com/dp/B0ABCDEFGH cheap", ProductRef("www.amazon.com", ASIN)),
    ("gloves: a.co/d/3V4ITBv cheap", ShortLink("a.co", "/d/3V4ITBv")),
    ("gloves: A.CO./d/3V4ITBv cheap", ShortLink("a.co", "/d/3V4ITBv")),
    # The same product twice (the link and its variant) is one product.
    (
        "https://www.amazon.com/dp/B0ABCDEFGH or https://www.amazon.com/gp/product/b0abcdefgh?th=1",
        ProductRef("www.amazon.com", ASIN),
    ),
    ("https://a.co/d/3V4ITBv\nhttps://a.co/d/3V4ITBv", ShortLink("a.co", "/d/3V4ITBv")),
    # Links that are not product links do not count when one product link is there.
    (
        "Found via https://example.com/blog and amazon.com: https://www.amazon.com/dp/B0ABCDEFGH",
        ProductRef("www.amazon.com", ASIN),
    ),
    (
        "Search https://www.amazon.com/s?k=gloves gave https://www.amazon.com/dp/B0ABCDEFGH",
        ProductRef("www.amazon.com", ASIN),
    ),
    # A lone link keeps every rule it had, after trimming what wraps it.
    ("<https://www.amazon.com/dp/B0ABCDEFGH>", ProductRef("www.amazon.com", ASIN)),
    ("https://a.co/d/3V4ITBv#top", ShortLink("a.co", "/d/3V4ITBv")),
    ("https://a.co/d/3V4ITBv#top#more", ShortLink("a.co", "/d/3V4ITBv")),
    ("AMZN.TO./3xYzAbC", ShortLink("amzn.to", "/3xYzAbC")),
    ("https://amzn.to", ShortLink("amzn.to", "/")),
    ("https://amzn.to?x=1", ShortLink("amzn.to", "/?x=1")),
]


@pytest.mark.parametrize(("text", "expected"), SHARE_TEXTS)
def test_share_texts(text: str, expected: ProductRef | ShortLink) -> None:
    assert find_link(text) == expected
    if isinstance(expected, ProductRef):
        assert parse_product_link(text) == expected
    else:
        with pytest.raises(AmazonImportError) as caught:
            parse_product_link(text)
        assert caught.value.code is SHORT
        assert caught.value.details == {"host": expected.host}


# Text that holds no single product link: each answer and its exact message.
SEVERAL = "That text holds several Amazon links; paste just one of them."
NONE_IN_TEXT = "That text holds no Amazon product link; paste the product's link."
TEXT_REFUSALS: list[tuple[str, ErrorCode, str]] = [
    (
        "https://www.amazon.com/dp/B0ABCDEFGH and https://www.amazon.com/dp/B0ZZZZZZZZ",
        ErrorCode.UNRECOGNIZED_AMAZON_URL,
        SEVERAL,
    ),
    ("gloves https://www.amazon.com/dp/B0ABCDEFGH a.co/d/3V4ITBv", UNRECOGNIZED, SEVERAL),
    ("Check out this deal on Amazon", UNRECOGNIZED, NONE_IN_TEXT),
    ("()", UNRECOGNIZED, "Paste an Amazon product link."),  # a lone token trimmed to nothing
    # A lookalike host (Cyrillic "а") inside text is not a link at all.
    ("gloves \u0430mazon.com/dp/B0ABCDEFGH cheap", UNRECOGNIZED, NONE_IN_TEXT),
    ("see example.com/dp/B0ABCDEFGH now", UNRECOGNIZED, NONE_IN_TEXT),
    # A store outside the 22 says more than "not a product link", wherever it stands.
    (
        "https://www.amazon.com/s?k=gloves or amazon.cn/dp/B0ABCDEFGH",
        ErrorCode.UNSUPPORTED_AMAZON_LOCALE,
        "",
    ),
    (
        "amazon.cn/dp/B0ABCDEFGH or https://www.amazon.com/s?k=gloves",
        ErrorCode.UNSUPPORTED_AMAZON_LOCALE,
        "",
    ),
]


@pytest.mark.parametrize(("text", "code", "message"), TEXT_REFUSALS)
def test_text_without_one_product_link_is_refused(text: str, code: ErrorCode, message: str) -> None:
    with pytest.raises(AmazonImportError) as caught:
        find_link(text)
    assert caught.value.code is code
    if message:
        assert caught.value.message == message


def test_text_with_only_non_product_links_answers_the_first_ones_refusal() -> None:
    text = "https://www.amazon.com/s?k=gloves then https://example.com/x"
    with pytest.raises(AmazonImportError) as caught:
        find_link(text)
    with pytest.raises(AmazonImportError) as first:
        find_link("https://www.amazon.com/s?k=gloves")
    assert caught.value.code is first.value.code is UNRECOGNIZED
    assert caught.value.message == first.value.message != NONE_IN_TEXT


def test_a_short_link_is_always_requested_over_https() -> None:
    assert find_link("http://amzn.to/2eEPcFk").url == "https://amzn.to/2eEPcFk"  # type: ignore[union-attr]
    assert find_link("a.co/d/3V4ITBv?x=1").url == "https://a.co/d/3V4ITBv?x=1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text",
    [
        "https://a.co:8443/d/3V4ITBv",
        "https://user@a.co/d/3V4ITBv",
        "https://a.co@evil.example/d/3V4ITBv",
        "https://evil.example/a.co/d/3V4ITBv",
        "https://www.a.co/d/3V4ITBv",
        "https://a.co.evil.example/d/3V4ITBv",
        "Look: https://a.co\\@evil.example/d/3V4ITBv",
    ],
)
def test_only_the_exact_short_hosts_make_a_short_link(text: str) -> None:
    with pytest.raises(AmazonImportError) as caught:
        find_link(text)
    assert caught.value.code is UNRECOGNIZED


REFUSALS: list[tuple[str, ErrorCode]] = [
    # Not a link at all.
    ("", UNRECOGNIZED),
    ("   \n\t ", UNRECOGNIZED),
    ("\u200e\u200f\ufeff", UNRECOGNIZED),
    ("not a link", UNRECOGNIZED),
    ("B0ABCDEFGH", UNRECOGNIZED),
    # Several distinct links, or text holding no link.
    ("https://www.amazon.com/dp/B0ABCDEFGH\nhttps://www.amazon.com/dp/B0ABCDEFGJ", UNRECOGNIZED),
    ("Compare https://www.amazon.com/dp/B0ABCDEFGH with www.amazon.de/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("Either https://a.co/d/abc1234 or https://a.co/d/xyz9876", UNRECOGNIZED),
    ("Same? https://a.co/d/abc1234 https://www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("Check out this deal on Amazon", UNRECOGNIZED),
    ("B0ABCDEFGH is the ASIN", UNRECOGNIZED),
    ("https://www.amazon.com/dp/B0ABCDEFGH\x00", UNRECOGNIZED),
    ("https://www.amazon.com/dp/B0ABCDEFGH\x7f", UNRECOGNIZED),
    ("https://www.amazon.com/dp/B0ABCDEFGH?x=" + "a" * MAX_LINK_LENGTH, UNRECOGNIZED),
    # Other sites and lookalikes.
    ("https://www.google.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.ebay.com/itm/1234567890", UNRECOGNIZED),
    ("https://amazon.com.evil.example/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://evilamazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.co.uk.example/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www-amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com../dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.at/dp/B0ABCDEFGH", UNRECOGNIZED),
    # Userinfo, in either direction.
    ("https://www.amazon.com@evil.example/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://evil.example@www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://user:pass@www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com\\@evil.example/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://evil.example\\.www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    # Ports.
    ("https://www.amazon.com:8443/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("http://www.amazon.com:443/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com:80/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com:abc/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com:99999999999/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com:-443/dp/B0ABCDEFGH", UNRECOGNIZED),
    # Homoglyphs, IDN, punycode, IP literals, broken brackets.
    ("https://www.\u0430mazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://\u0430mazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.xn--mazon-3ve.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon\u3002com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://\uff41\uff4d\uff41\uff5a\uff4f\uff4e.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.%61mazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://205.251.242.103/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://[2600:9000::1]/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://[::1/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://]/dp/B0ABCDEFGH", UNRECOGNIZED),
    # Amazon pages that name no product.
    ("https://www.amazon.com", UNRECOGNIZED),
    ("https://www.amazon.com/", UNRECOGNIZED),
    ("https://www.amazon.com/s?k=coffee+mug", UNRECOGNIZED),
    ("https://www.amazon.com/gp/cart/view.html?ref_=nav_cart", UNRECOGNIZED),
    ("https://www.amazon.com/stores/Anker/page/4A5B6C7D-0000-1111-2222-333344445555", UNRECOGNIZED),
    ("https://www.amazon.com/hz/wishlist/ls/2ABCDEFGHIJK", UNRECOGNIZED),
    ("https://www.amazon.com/gp/video/detail/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com/dp/", UNRECOGNIZED),
    ("https://www.amazon.com/dp/B0ABCDEFG", UNRECOGNIZED),
    ("https://www.amazon.com/dp/B0ABCDEFGHI", UNRECOGNIZED),
    ("https://www.amazon.com/dp/A0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com/dp/012345678Y", UNRECOGNIZED),
    ("https://www.amazon.com/dp/B0ABCDEFG%C3%A9", UNRECOGNIZED),
    ("https://www.amazon.com/?dp=B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com/#/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com/a/b/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.com/gp/customer-reviews/R1ABCDEF123XYZ?ie=UTF8", UNRECOGNIZED),
    (
        "https://www.amazon.com/sspa/click?url=https%3A%2F%2Fevil.example%2Fdp%2FB0ABCDEFGH",
        UNRECOGNIZED,
    ),
    ("https://www.amazon.com/sspa/click?url=%2F%2Fevil.example%2Fdp%2FB0ABCDEFGH", UNRECOGNIZED),
    (
        "https://www.amazon.com/sspa/click?url=%2Fsspa%2Fclick%3Furl%3D%252Fdp%252FB0ABCDEFGH",
        UNRECOGNIZED,
    ),
    # Other Amazon properties.
    ("https://aws.amazon.com/ec2/", UNRECOGNIZED),
    ("https://music.amazon.com/albums/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.primevideo.com/detail/0ABCDEFGHIJ/", UNRECOGNIZED),
    ("https://images-na.ssl-images-amazon.com/images/I/71abc.jpg", UNRECOGNIZED),
    ("https://m.media-amazon.com/images/I/71abc._AC_SL1500_.jpg", UNRECOGNIZED),
    ("https://developer.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://sellercentral.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://affiliate-program.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https://www.amazon.jobs/en/jobs/123", UNRECOGNIZED),
    # Schemes.
    ("javascript:alert(1)", UNRECOGNIZED),
    ("javascript://www.amazon.com/dp/B0ABCDEFGH%0Aalert(1)", UNRECOGNIZED),
    ("ftp://www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("file:///etc/passwd", UNRECOGNIZED),
    ("data:text/html,<b>hi</b>", UNRECOGNIZED),
    ("mailto:someone@amazon.com", UNRECOGNIZED),
    ("ws://www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https:www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https:/www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("https:///dp/B0ABCDEFGH", UNRECOGNIZED),
    # Short links: they resolve only by fetching.
    ("https://amzn.to/3xYzAbC", SHORT),
    ("amzn.to/3xYzAbC", SHORT),
    ("AMZN.TO./3xYzAbC", SHORT),
    ("https://amzn.to/B0ABCDEFGH", SHORT),
    ("https://a.co/d/abc1234", SHORT),
    ("https://a.co/d/B0ABCDEFGH", SHORT),
    ("https://amzn.eu/d/abc1234", SHORT),
    ("https://amzn.asia/d/abc1234", SHORT),
    ("https://amzn.in/d/abc1234", SHORT),
    ("https://amzn.com/", SHORT),
    ("https://amzn.com/d/abc1234", SHORT),
    ("Check out this deal on Amazon: Nitrile Gloves https://a.co/d/3V4ITBv", SHORT),
    ("\u200ehttps://amzn.to/3xYzAbC\u200f", SHORT),
    # A URL nested inside another URL, a fragment or markup is not a link of its own.
    ("See https://evil.example/?u=https://www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("See https://evil.example/#https://www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ('Look: <a href="https://www.amazon.com/dp/B0ABCDEFGH">gloves</a>', UNRECOGNIZED),
    ("Look: [gloves](https://www.amazon.com/dp/B0ABCDEFGH)", UNRECOGNIZED),
    ("Look: https://www.amazon.com@evil.example/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("Look: https://amazon.com.evil.example/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("Look: ftp://www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED),
    ("Look: https://www.amazon.com/s?k=nitrile+gloves", UNRECOGNIZED),
    # Real Amazon stores outside the 22.
    ("https://www.amazon.cn/dp/B0ABCDEFGH", LOCALE),
    ("https://amazon.cn/gp/product/B0ABCDEFGH", LOCALE),
    ("https://www.amazon.co.za/Travel-Mug/dp/B0ABCDEFGH/ref=sr_1_1", LOCALE),
    ("WWW.AMAZON.CO.ZA./dp/b0abcdefgh", LOCALE),
    ("\u200ehttps://www.amazon.cn/dp/0140449132", LOCALE),
    ("Look at this: https://www.amazon.co.za/dp/B0ABCDEFGH on Amazon", LOCALE),
    # …but a page naming no product there is simply not a product link.
    ("https://www.amazon.cn/", UNRECOGNIZED),
    ("https://www.amazon.co.za/s?k=mug", UNRECOGNIZED),
]


@pytest.mark.parametrize(("text", "code"), REFUSALS)
def test_refusals(text: str, code: ErrorCode) -> None:
    with pytest.raises(AmazonImportError) as caught:
        parse_product_link(text)
    assert caught.value.code is code
    assert caught.value.status == 422
    _assert_small_and_quiet(caught.value, text)


def test_refusal_count() -> None:
    assert len(REFUSALS) >= 40


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("https://amzn.to/3xYzAbC", "amzn.to"),
        ("https://a.co/d/abc1234", "a.co"),
        ("amzn.com/d/abc", "amzn.com"),
        ("https://www.amazon.cn/dp/B0ABCDEFGH", "amazon.cn"),
        ("https://WWW.AMAZON.CO.ZA/dp/B0ABCDEFGH", "amazon.co.za"),
        ("https://www.amazon.com/s?k=mug", "www.amazon.com"),
        ("https://smile.amazon.co.uk/", "www.amazon.co.uk"),
    ],
)
def test_details_name_the_host(text: str, host: str) -> None:
    with pytest.raises(AmazonImportError) as caught:
        parse_product_link(text)
    assert caught.value.details == {"host": host}


def test_long_inputs_are_never_echoed() -> None:
    label = "a" * 300
    for text in (
        f"https://{label}.example/dp/B0ABCDEFGH",
        "x" * 10_000,
        f"https://www.amazon.com/{label}",
        f"https://{label}@www.amazon.com/dp/B0ABCDEFGH",
    ):
        with pytest.raises(AmazonImportError) as caught:
            parse_product_link(text)
        _assert_small_and_quiet(caught.value, text)


def test_length_limit_applies_after_trimming() -> None:
    link = "https://www.amazon.com/dp/B0ABCDEFGH?x="
    padded = link + "a" * (MAX_LINK_LENGTH - len(link))
    assert parse_product_link("  \u200e" * 500 + padded + "\n" * 500).asin == ASIN
    with pytest.raises(AmazonImportError):
        parse_product_link(padded + "a")


def test_non_string_input_is_refused_not_crashed() -> None:
    for value in (None, b"https://www.amazon.com/dp/B0ABCDEFGH", 42):
        with pytest.raises(AmazonImportError) as caught:
            parse_product_link(value)  # type: ignore[arg-type]
        assert caught.value.code is UNRECOGNIZED


def test_product_ref_is_a_frozen_value() -> None:
    ref = parse_product_link("https://www.amazon.com/dp/B0ABCDEFGH")
    assert ref == ProductRef(marketplace="www.amazon.com", asin=ASIN)
    assert hash(ref) == hash(ProductRef("www.amazon.com", ASIN))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.asin = "B000000000"  # type: ignore[misc]


def test_parsing_never_touches_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the link parser must not use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    for text, expected in REAL_WORLD:
        assert parse_product_link(text) == expected
    for text, code in REFUSALS:
        with pytest.raises(AmazonImportError) as caught:
            parse_product_link(text)
        assert caught.value.code is code


def test_links_and_marketplaces_do_not_import_flask() -> None:
    code = (
        "import sys, arda_amazon_bp.links, arda_amazon_bp.marketplaces; "
        "sys.exit('flask' in sys.modules or 'flask_smorest' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0


def _assert_small_and_quiet(error: AmazonImportError, text: str) -> None:
    """Short message, small details, and never more than ~100 characters of the input."""
    assert 0 < len(error.message) <= 120
    assert set(error.details) <= {"host"}
    assert all(isinstance(v, str) and len(v) <= 100 for v in error.details.values())
    echoed = error.message + "".join(error.details.values())
    for start in range(0, max(len(text) - 100, 0), 50):
        assert text[start : start + 101] not in echoed


# --- properties -------------------------------------------------------------------------

URL_PIECES = (
    "https://", "http://", "//", "www.", "smile.", "m.", "amazon.", "amazon.com", "amazon.co.uk",
    "amzn.com", "amzn.to", "a.co", ".", ":", ":443", "@", "/", "?", "#", "&", "=", "%", "%2F",
    "[", "]", "\\", "-", "dp/", "gp/product/", "/-/es/", "sspa/click?url=", "ASIN=", "B0",
    "B0ABCDEFGH", "0140449132", "xn--", "\u200e", "\u0430", " ", "\x00", "\uff0e",
)  # fmt: skip

link_like_text = st.lists(
    st.one_of(st.sampled_from(URL_PIECES), st.text(max_size=3)), max_size=14
).map("".join)

asins = st.one_of(
    st.from_regex(r"B[0-9A-Z]{9}", fullmatch=True),
    st.from_regex(r"[0-9]{9}[0-9X]", fullmatch=True),
)


@st.composite
def valid_links(draw: st.DrawFn) -> tuple[str, ProductRef]:
    host = draw(st.sampled_from(sorted(MARKETPLACES)))
    asin = draw(asins)
    written = asin.lower() if draw(st.booleans()) else asin
    link = build_link(
        host,
        draw(st.sampled_from(sorted(PATH_SHAPES))),
        written,
        variant=draw(st.integers(0, len(HOST_VARIANTS) - 1)),
        scheme=draw(st.sampled_from(SCHEMES)),
    )
    return link, ProductRef(host, asin)


PROPERTY_SETTINGS = settings(max_examples=300, deadline=500)


def _ref_or_checked_parser_error(text: str) -> ProductRef | None:
    """The parsed link, or None after checking the parser's refusal is typed, small and quiet."""
    try:
        return parse_product_link(text)
    except AmazonImportError as exc:
        error = exc
    assert error.code in PARSER_CODES
    _assert_small_and_quiet(error, text)
    return None


@PROPERTY_SETTINGS
@given(st.one_of(st.text(max_size=200), link_like_text))
def test_any_text_gives_a_ref_or_a_parser_error(text: str) -> None:
    ref = _ref_or_checked_parser_error(text)
    if ref is not None:
        assert ref.marketplace in MARKETPLACES
        assert ref.asin == ref.asin.upper()
        assert len(ref.asin) == 10
        # What we parsed is stable: the canonical link names the same product.
        assert parse_product_link(f"https://{ref.marketplace}/dp/{ref.asin}") == ref


@PROPERTY_SETTINGS
@given(valid_links())
def test_built_links_round_trip(case: tuple[str, ProductRef]) -> None:
    link, expected = case
    assert parse_product_link(link) == expected


@PROPERTY_SETTINGS
@given(
    valid_links(),
    st.lists(
        st.tuples(st.integers(min_value=0), st.characters(categories=["Cf"])),
        min_size=1,
        max_size=8,
    ),
)
def test_format_characters_anywhere_do_not_change_the_result(
    case: tuple[str, ProductRef], insertions: list[tuple[int, str]]
) -> None:
    link, expected = case
    for position, char in insertions:
        at = position % (len(link) + 1)
        link = link[:at] + char + link[at:]
    assert parse_product_link(link) == expected


# --- edges found by mutation testing (docs/testing.md) -----------------------------------

REVIEW = "https://www.amazon.com/gp/customer-reviews"
CONTROL = "That text contains control characters; paste just the link."
NOT_AMAZON = "That is not an Amazon product link."
SHORT_MESSAGE = (
    "Short links cannot be imported: open the link and paste the product page's address instead."
)


@pytest.mark.parametrize(
    ("link", "asin"),
    [
        # a review's own id, then the product's ASIN in the query
        (f"{REVIEW}/R1ABCDEF123XYZ?ASIN=B0ABCDEFGH", "B0ABCDEFGH"),
        # a sponsored click whose target is a review page: the target's own query counts
        (
            "https://www.amazon.com/sspa/click?url=%2Fgp%2Fcustomer-reviews%2FR1ABC%3FASIN%3DB0ABCDEFGH",
            "B0ABCDEFGH",
        ),
        # the fragment ends the query at its first "#"
        (f"{REVIEW}/R1ABCDEF123XYZ?ASIN=B0ABCDEFGH#a#b", "B0ABCDEFGH"),
        # amzn.com takes the same query, and a scheme-relative link is https
        ("https://amzn.com/gp/customer-reviews/R1ABC?ASIN=B0ABCDEFGH", "B0ABCDEFGH"),
        ("//www.amazon.com:443/dp/B0ABCDEFGH", "B0ABCDEFGH"),
    ],
)
def test_asin_from_the_query_of_a_review_or_a_sponsored_target(link: str, asin: str) -> None:
    assert parse_product_link(link) == ProductRef("www.amazon.com", asin)


@pytest.mark.parametrize(
    "link",
    [
        f"{REVIEW}?ASIN=B0ABCDEFGH",  # no review id: not a review page
        "https://www.amazon.com/some/other/page?asin=B0ABCDEFGH",  # only review pages
        f"{REVIEW}/R1ABCDEF123XYZ?ASIN=&ASIN=B0ABCDEFGH",  # the first value counts, blank too
        f"{REVIEW}/R1ABCDEF123XYZ#ASIN=B0ABCDEFGH",  # a fragment is not a query
        "www.amazon.com",
        # a fragment is not a query, in the sponsored target either
        "https://www.amazon.com/sspa/click?url=%2Fgp%2Fcustomer-reviews%2FR1ABC%23ASIN%3DB0ABCDEFGH",
        # a slug goes only before the dp shapes
        "https://www.amazon.com/Travel-Mug/gp/product/B0ABCDEFGH",
    ],
)
def test_edges_that_are_not_product_pages(link: str) -> None:
    with pytest.raises(AmazonImportError) as raised:
        parse_product_link(link)
    assert raised.value.code is ErrorCode.UNRECOGNIZED_AMAZON_URL
    assert raised.value.message == "That Amazon link does not point to a product page."


@pytest.mark.parametrize(
    ("link", "code", "message", "details"),
    [
        (
            "https://user:pw@www.amazon.com/dp/B0ABCDEFGH",
            ErrorCode.UNRECOGNIZED_AMAZON_URL,
            "Links with a user name or password in them are not accepted.",
            {},
        ),
        ("", UNRECOGNIZED, "Paste an Amazon product link.", {}),
        (None, UNRECOGNIZED, "Paste an Amazon product link.", {}),  # not even text
        ("https://example.com/dp/B0ABCDEFGH", UNRECOGNIZED, NOT_AMAZON, {"host": "example.com"}),
        (
            "https://www.amazon.cn/gp/help",
            UNRECOGNIZED,
            "That Amazon link does not point to a product page.",
            {"host": "amazon.cn"},
        ),
        (
            "https://www.amazon.cn/sspa/click?url=%2Fdp%2FB0ABCDEFGH",  # sponsored counts too
            ErrorCode.UNSUPPORTED_AMAZON_LOCALE,
            "Products from amazon.cn are not supported.",
            {"host": "amazon.cn"},
        ),
        ("h" * 2049, UNRECOGNIZED, "That text is too long to hold an Amazon product link.", {}),
        *(
            (f"https://www.amazon.com/dp/B0ABCDEFGH{extra}", UNRECOGNIZED, CONTROL, {})
            for extra in ("\x00", "\x7f")
        ),
        *(
            (link, UNRECOGNIZED, "Only http and https links can be imported.", {})
            for link in ("ftp://www.amazon.com/dp/B0ABCDEFGH", "javascript:alert(1)")
        ),
        # no host, an IP literal or a non-ASCII host: nothing worth naming in details
        ("https:///www.amazon.com/dp/B0ABCDEFGH", UNRECOGNIZED, NOT_AMAZON, {}),
        ("https://[::1]/dp/B0ABCDEFGH", UNRECOGNIZED, NOT_AMAZON, {}),
        ("https://www.\u0430mazon.com/dp/B0ABCDEFGH", UNRECOGNIZED, NOT_AMAZON, {}),
        (
            "https://www.amazon.com:8080/dp/B0ABCDEFGH",
            UNRECOGNIZED,
            "Links to a non-standard port are not accepted.",
            {},
        ),
        (
            "https://www.amazon.com/gp/help/customer",
            UNRECOGNIZED,
            "That Amazon link does not point to a product page.",
            {"host": "www.amazon.com"},
        ),
        (
            "https://amzn.com/sspa/click?url=%2Fdp%2FB0ABCDEFGH",  # only amazon.* sponsors
            ErrorCode.UNSUPPORTED_SHORT_LINK,
            SHORT_MESSAGE,
            {"host": "amzn.com"},
        ),
        (
            "https://amzn.to./3xYzAbC",
            ErrorCode.UNSUPPORTED_SHORT_LINK,
            SHORT_MESSAGE,
            {"host": "amzn.to"},
        ),
        (
            "https://www.amazon.cn/gp/customer-reviews/R1ABC?ASIN=B0ABCDEFGH",
            ErrorCode.UNSUPPORTED_AMAZON_LOCALE,
            "Products from amazon.cn are not supported.",
            {"host": "amazon.cn"},
        ),
        (
            "https://amzn.to/3xYzAbC",
            ErrorCode.UNSUPPORTED_SHORT_LINK,
            "Short links cannot be imported: open the link and paste the product page's "
            "address instead.",
            {"host": "amzn.to"},
        ),
    ],
)
def test_refusal_messages_are_exact(
    link: str, code: ErrorCode, message: str, details: dict[str, str]
) -> None:
    with pytest.raises(AmazonImportError) as raised:
        parse_product_link(link)
    assert (raised.value.code, raised.value.message, raised.value.details) == (
        code,
        message,
        details,
    )


# Text a person might put around a link: words, punctuation, emoji, newlines, quotes.
prose = st.text(
    alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"], include_characters="\n\t\u200e"),
    max_size=60,
)


@PROPERTY_SETTINGS
@given(valid_links(), prose, prose, st.sampled_from(["", " ", "\n", ": ", " (", ' "']))
def test_text_around_a_link_gives_its_product_or_a_parser_error(
    case: tuple[str, ProductRef], before: str, after: str, joint: str
) -> None:
    link, expected = case
    text = f"{before}{joint}{link} {after}"
    ref = _ref_or_checked_parser_error(text)
    if ref is not None:
        # Another link in the generated prose could only make it a refusal, never another
        # product: the only product link in the text is ours.
        assert ref == expected


@PROPERTY_SETTINGS
@given(
    valid_links(),
    st.lists(st.sampled_from(["Check", "out", "this", "deal:", "🎁", "—"]), max_size=8),
)
def test_words_around_a_link_never_hide_it(case: tuple[str, ProductRef], words: list[str]) -> None:
    link, expected = case
    half = len(words) // 2
    text = " ".join([*words[:half], link, *words[half:]])
    assert parse_product_link(text) == expected
