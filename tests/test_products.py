"""Creators API item → product record (arda_amazon_bp.products)."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arda_amazon_bp.products import (
    CORE_FIELDS,
    PRODUCT_FIELDS,
    detail_page_url,
    product_status,
    to_product,
    unavailable_product,
)

MARKETPLACE = "www.amazon.com"
TAG = "ourstore-20"
RETRIEVED = datetime(2026, 11, 27, 18, 0, 0, 654321, tzinfo=timezone.utc)


def full_item() -> dict[str, Any]:
    """A complete item as the Creators API returns it for GET_ITEMS_RESOURCES."""
    return {
        "asin": "B0EXAMPLE1",
        "detailPageURL": "https://www.amazon.com/dp/B0EXAMPLE1?tag=someoneelse-20&linkCode=ogi",
        "itemInfo": {
            "title": {"displayValue": "  Stainless Steel Water Bottle, 6-Pack  "},
            "byLineInfo": {
                "brand": {"displayValue": "Hydra"},
                "manufacturer": {"displayValue": "Hydra Bottling Co."},
            },
            "externalIds": {
                "upcs": {"displayValues": ["012345678905", "012345678912"]},
                "eans": {"displayValues": ["0012345678905"]},
            },
            "features": {"displayValues": ["Keeps cold 24h", "BPA free"]},
            "productInfo": {"unitCount": {"displayValue": 6, "label": "NumberOfItems"}},
        },
        "images": {
            "primary": {"large": {"url": "https://m.media-amazon.com/images/I/main.jpg"}},
            "variants": [
                {"large": {"url": "https://m.media-amazon.com/images/I/v1.jpg"}},
                {"large": {"url": "https://m.media-amazon.com/images/I/main.jpg"}},
                {"large": {"url": "https://m.media-amazon.com/images/I/v2.jpg"}},
            ],
        },
        "offersV2": {
            "listings": [
                {
                    "price": {
                        "money": {"amount": 14.5, "currency": "USD", "displayAmount": "$14.50"}
                    },
                    "availability": {"message": "Only 2 left", "minOrderQuantity": 2},
                },
                {
                    "isBuyBoxWinner": True,
                    "price": {
                        "money": {"amount": 12.99, "currency": "USD", "displayAmount": "$12.99"},
                        "pricePerUnit": {
                            "money": {"amount": 2.165, "currency": "USD", "displayAmount": "$2.17"}
                        },
                    },
                    "availability": {"message": "In Stock", "minOrderQuantity": 1},
                },
            ]
        },
    }


@pytest.fixture
def item() -> dict[str, Any]:
    return full_item()


def product(item: Any) -> dict[str, Any]:
    return to_product(item, marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=RETRIEVED)


def test_product_fields_follow_the_design_order() -> None:
    assert PRODUCT_FIELDS[:3] == ("asin", "marketplace", "detailPageUrl")
    assert PRODUCT_FIELDS[-3:] == ("missingFields", "notices", "retrievedAt")
    assert set(CORE_FIELDS) <= set(PRODUCT_FIELDS)
    assert len(set(PRODUCT_FIELDS)) == len(PRODUCT_FIELDS) == 19


def test_full_item_gives_a_complete_record(item: dict[str, Any]) -> None:
    record = product(item)

    assert list(record) == list(PRODUCT_FIELDS)
    assert record == {
        "asin": "B0EXAMPLE1",
        "marketplace": "www.amazon.com",
        "detailPageUrl": "https://www.amazon.com/dp/B0EXAMPLE1?tag=ourstore-20",
        "title": "Stainless Steel Water Bottle, 6-Pack",
        "brand": "Hydra",
        "manufacturer": "Hydra Bottling Co.",
        "imageUrl": "https://m.media-amazon.com/images/I/main.jpg",
        "images": [
            "https://m.media-amazon.com/images/I/main.jpg",
            "https://m.media-amazon.com/images/I/v1.jpg",
            "https://m.media-amazon.com/images/I/v2.jpg",
        ],
        # the buy-box winner wins over the first listing
        "price": {"amount": 12.99, "currency": "USD", "display": "$12.99"},
        "unitCount": 6,
        "unitPrice": {"amount": 2.17, "currency": "USD"},
        "upc": "012345678905",
        "ean": "0012345678905",
        "features": ["Keeps cold 24h", "BPA free"],
        "availability": "In Stock",
        "minOrderQuantity": 1,
        "missingFields": [],
        "notices": [],
        "retrievedAt": "2026-11-27T18:00:00Z",
    }
    assert product_status(record) == 200
    assert isinstance(record["price"]["amount"], float)


@pytest.mark.parametrize(
    ("field", "remove"),
    [
        ("title", lambda i: i["itemInfo"].pop("title")),
        ("imageUrl", lambda i: i.pop("images")),
        ("price", lambda i: i.pop("offersV2")),
    ],
)
def test_each_missing_core_field_gives_206(item: dict[str, Any], field: str, remove: Any) -> None:
    remove(item)
    record = product(item)
    assert record[field] is None
    assert record["missingFields"] == [field]
    assert product_status(record) == 206


def test_all_core_fields_missing_are_listed_in_order() -> None:
    record = product({"asin": "B0EXAMPLE1"})
    assert record["missingFields"] == list(CORE_FIELDS)
    assert product_status(record) == 206


def test_detail_page_url_carries_our_tag_not_the_items(item: dict[str, Any]) -> None:
    record = product(item)
    assert record["detailPageUrl"] == "https://www.amazon.com/dp/B0EXAMPLE1?tag=ourstore-20"
    assert "someoneelse" not in str(record)


def test_detail_page_url_is_built_from_scratch() -> None:
    assert (
        detail_page_url("www.amazon.co.uk", "b0example1", "shop-21")
        == "https://www.amazon.co.uk/dp/B0EXAMPLE1?tag=shop-21"
    )
    # nothing in the tag can add query parameters or change the path
    assert detail_page_url("www.amazon.com", "B0EXAMPLE1", "a&b=c#d-20").endswith(
        "?tag=a%26b%3Dc%23d-20"
    )


def test_variant_image_stands_in_when_there_is_no_primary(item: dict[str, Any]) -> None:
    del item["images"]["primary"]
    record = product(item)
    assert record["imageUrl"] == "https://m.media-amazon.com/images/I/v1.jpg"
    assert record["images"][0] == record["imageUrl"]


def test_no_images_gives_null_not_empty_list(item: dict[str, Any]) -> None:
    item["images"] = {"primary": {}, "variants": []}
    record = product(item)
    assert record["images"] is None
    assert record["imageUrl"] is None


def test_non_http_image_urls_are_dropped(item: dict[str, Any]) -> None:
    item["images"]["primary"]["large"]["url"] = "javascript:alert(1)"
    record = product(item)
    # the primary is dropped, the first variant stands in, every variant survives
    assert record["imageUrl"] == "https://m.media-amazon.com/images/I/v1.jpg"
    assert record["images"] == [
        "https://m.media-amazon.com/images/I/v1.jpg",
        "https://m.media-amazon.com/images/I/main.jpg",
        "https://m.media-amazon.com/images/I/v2.jpg",
    ]


def test_first_priced_listing_is_used_without_a_buy_box_winner(item: dict[str, Any]) -> None:
    listings = item["offersV2"]["listings"]
    listings[1]["isBuyBoxWinner"] = False
    listings.insert(0, {"price": {"money": {"amount": "n/a"}}})  # no usable amount
    record = product(item)
    assert record["price"] == {"amount": 14.5, "currency": "USD", "display": "$14.50"}
    assert record["availability"] == "Only 2 left"
    assert record["minOrderQuantity"] == 2


def test_unit_price_is_computed_when_amazon_gives_none(item: dict[str, Any]) -> None:
    del item["offersV2"]["listings"][1]["price"]["pricePerUnit"]
    assert product(item)["unitPrice"] == {"amount": 2.17, "currency": "USD"}  # 12.99 / 6


def test_unit_price_accepts_a_bare_money_object(item: dict[str, Any]) -> None:
    item["offersV2"]["listings"][1]["price"]["pricePerUnit"] = {"amount": 0.5, "currency": "usd"}
    assert product(item)["unitPrice"] == {"amount": 0.5, "currency": "USD"}


def test_unit_price_is_null_without_count_or_price(item: dict[str, Any]) -> None:
    del item["offersV2"]["listings"][1]["price"]["pricePerUnit"]
    del item["itemInfo"]["productInfo"]
    assert product(item)["unitPrice"] is None


@pytest.mark.parametrize(
    ("display", "expected"),
    [
        (6, 6),
        ("6", 6),
        ("6.0", 6),
        (6.0, 6),
        ("12 Count", 12),
        (" 3 ", 3),
        ("6.5", None),
        ("1,000", None),
        ("six", None),
        (0, None),
        (-2, None),
        (True, None),
        (None, None),
        ([6], None),
        (float("nan"), None),
    ],
)
def test_unit_count_parsing(item: dict[str, Any], display: Any, expected: int | None) -> None:
    item["itemInfo"]["productInfo"]["unitCount"]["displayValue"] = display
    assert product(item)["unitCount"] == expected


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (12, 12.0),
        (12.999, 13.0),
        ("7.25", 7.25),
        (1500, 1500.0),  # e.g. JPY
        (-1, None),
        ("abc", None),
        (True, None),
        (float("inf"), None),
        (None, None),
        (0, 0.0),  # free is a price
        (" 3.5 ", 3.5),
        ("1e400", None),  # finite as a decimal, infinite as a float
        ([12], None),
        ({"amount": 12}, None),
    ],
)
def test_price_amount_is_a_rounded_number(
    item: dict[str, Any], amount: Any, expected: float | None
) -> None:
    for listing in item["offersV2"]["listings"]:
        listing["price"]["money"]["amount"] = amount
    price = product(item)["price"]
    if expected is None:
        assert price is None
    else:
        assert price["amount"] == expected
        assert isinstance(price["amount"], float)


def test_retrieved_at_is_utc_seconds_precision() -> None:
    local = datetime(2026, 11, 27, 20, 0, 0, 999999, tzinfo=timezone(timedelta(hours=2)))
    record = to_product({}, marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=local)
    assert record["retrievedAt"] == "2026-11-27T18:00:00Z"
    naive = datetime(2026, 1, 2, 3, 4, 5)  # taken as UTC
    record = to_product({}, marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=naive)
    assert record["retrievedAt"] == "2026-01-02T03:04:05Z"


def test_odd_types_in_every_subtree_yield_nulls(item: dict[str, Any]) -> None:
    odd = copy.deepcopy(item)
    odd["itemInfo"]["title"] = ["not", "a", "dict"]
    odd["itemInfo"]["byLineInfo"] = "Hydra"
    odd["itemInfo"]["externalIds"]["upcs"]["displayValues"] = "012345678905"
    odd["itemInfo"]["features"] = {"displayValues": [1, None, "  ", "Real feature"]}
    odd["images"]["variants"] = {"large": "x"}
    odd["offersV2"]["listings"] = {"0": "x"}
    record = product(odd)
    assert list(record) == list(PRODUCT_FIELDS)
    assert record["title"] is None
    assert record["brand"] is None
    assert record["manufacturer"] is None
    assert record["upc"] is None
    assert record["features"] == ["Real feature"]
    assert record["images"] == ["https://m.media-amazon.com/images/I/main.jpg"]
    assert record["price"] is None
    assert record["availability"] is None


def test_item_without_asin_still_gives_every_field() -> None:
    record = product({"itemInfo": {"title": {"displayValue": "x"}}})
    assert record["asin"] is None
    assert record["detailPageUrl"] is None
    assert record["title"] == "x"


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.decimals(allow_nan=True),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "asin",
                    "itemInfo",
                    "title",
                    "displayValue",
                    "displayValues",
                    "byLineInfo",
                    "brand",
                    "manufacturer",
                    "externalIds",
                    "upcs",
                    "eans",
                    "features",
                    "productInfo",
                    "unitCount",
                    "images",
                    "primary",
                    "variants",
                    "large",
                    "url",
                    "offersV2",
                    "listings",
                    "price",
                    "money",
                    "amount",
                    "currency",
                    "displayAmount",
                    "pricePerUnit",
                    "availability",
                    "message",
                    "minOrderQuantity",
                    "isBuyBoxWinner",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    children = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, child in children:
        found.extend(_paths(child, (*prefix, key)))
    return found


ITEM_PATHS = _paths(full_item())


def _replace(raw: Any, path: tuple[Any, ...], junk: Any) -> None:
    # An earlier change may already have replaced an ancestor: then skip this one.
    try:
        for key in path[:-1]:
            raw = raw[key]
        raw[path[-1]] = junk
    except (KeyError, IndexError, TypeError):
        pass


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(["asin", "itemInfo", "images", "offersV2"]), json_values))
def test_arbitrary_items_never_raise_and_give_every_field(raw: dict[str, Any]) -> None:
    record = product(raw)
    assert list(record) == list(PRODUCT_FIELDS)
    assert record["missingFields"] == [f for f in CORE_FIELDS if record[f] is None]
    assert product_status(record) in (200, 206)
    for money in (record["price"], record["unitPrice"]):
        assert money is None or isinstance(money["amount"], float)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(ITEM_PATHS), json_values), min_size=1, max_size=4))
def test_any_subtree_of_a_real_item_replaced_by_junk_never_raises(
    changes: list[tuple[tuple[Any, ...], Any]],
) -> None:
    raw = full_item()
    for path, junk in changes:
        _replace(raw, path, junk)
    record = product(raw)
    assert list(record) == list(PRODUCT_FIELDS)
    assert record["missingFields"] == [f for f in CORE_FIELDS if record[f] is None]
    assert record["detailPageUrl"] is None or record["detailPageUrl"].endswith("?tag=ourstore-20")


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_non_mapping_items_never_raise(raw: Any) -> None:
    assert list(product(raw)) == list(PRODUCT_FIELDS)


def test_unavailable_product() -> None:
    notice = {"code": "ItemNotAccessible", "message": "Not available through the Creators API."}
    record = unavailable_product(
        "b0example1", marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=RETRIEVED,
        notice=notice,
    )  # fmt: skip
    assert list(record) == list(PRODUCT_FIELDS)
    assert record["asin"] == "B0EXAMPLE1"
    assert record["marketplace"] == MARKETPLACE
    assert record["detailPageUrl"] == "https://www.amazon.com/dp/B0EXAMPLE1?tag=ourstore-20"
    assert record["missingFields"] == list(CORE_FIELDS)
    assert record["notices"] == [notice]
    assert record["retrievedAt"] == "2026-11-27T18:00:00Z"
    identity = {"asin", "marketplace", "detailPageUrl", "missingFields", "notices", "retrievedAt"}
    assert all(record[f] is None for f in PRODUCT_FIELDS if f not in identity)
    assert product_status(record) == 206


def test_detail_page_url_escapes_every_slash() -> None:
    # nothing in the ASIN or the tag can add a path segment
    assert (
        detail_page_url("WWW.Amazon.com", "b0/ex", "a/b-20")
        == "https://www.amazon.com/dp/B0%2FEX?tag=a%2Fb-20"
    )


def test_availability_comes_from_another_listing_when_the_chosen_has_none(
    item: dict[str, Any],
) -> None:
    del item["offersV2"]["listings"][1]["availability"]  # the buy-box winner says nothing
    record = product(item)
    assert record["price"]["amount"] == 12.99  # still the buy-box winner's price
    assert (record["availability"], record["minOrderQuantity"]) == ("Only 2 left", 2)


def test_unavailable_product_notice_without_code_or_message() -> None:
    record = unavailable_product(
        "B0EXAMPLE1", marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=RETRIEVED, notice={}
    )
    assert record["notices"] == [{"code": "", "message": ""}]


@pytest.mark.parametrize("url", ["http://m.media-amazon.com/images/I/a.jpg", "HTTPS://M.x/a.jpg"])
def test_plain_http_and_uppercase_scheme_images_are_kept(item: dict[str, Any], url: str) -> None:
    item["images"] = {"primary": {"large": {"url": url}}}
    record = product(item)
    assert (record["imageUrl"], record["images"]) == (url, [url])


@pytest.mark.parametrize(
    ("per_unit", "expected"),
    [
        ({"money": {"amount": 0.5, "currency": "EUR"}}, {"amount": 0.5, "currency": "EUR"}),
        ({"money": {"amount": 0.5}}, {"amount": 0.5, "currency": "USD"}),  # the price's
        ({"amount": 0.5}, {"amount": 0.5, "currency": "USD"}),
    ],
)
def test_unit_price_currency_is_amazons_else_the_prices(
    item: dict[str, Any], per_unit: dict[str, Any], expected: dict[str, Any]
) -> None:
    item["offersV2"]["listings"][1]["price"]["pricePerUnit"] = per_unit
    assert product(item)["unitPrice"] == expected


def test_retrieved_at_does_not_depend_on_the_local_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        naive = datetime(2026, 1, 2, 3, 4, 5)  # taken as UTC, not as local time
        record = to_product({}, marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=naive)
        assert record["retrievedAt"] == "2026-01-02T03:04:05Z"
        assert (
            to_product({}, marketplace=MARKETPLACE, partner_tag=TAG, retrieved_at=RETRIEVED)[
                "retrievedAt"
            ]
            == "2026-11-27T18:00:00Z"
        )
    finally:
        monkeypatch.undo()
        time.tzset()
