"""The sandbox Creators API speaks Amazon's contract strictly, over real loopback HTTP."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import fixtures_sandbox
import pytest
import requests
from fixtures_sandbox import SANDBOX_COMMAND, SandboxHandle, sandbox_subprocess

from arda_amazon_bp.testing import sandbox as cs

# tests/conftest.py imports these too; binding them here keeps the module self-contained
# (their base fixtures come from the package's pytest plugin).
sandbox_server = fixtures_sandbox.sandbox_server
sandbox = fixtures_sandbox.sandbox

T = 5.0  # per-request timeout
ALL_IMPORT_RESOURCES = [
    "itemInfo.title",
    "itemInfo.byLineInfo",
    "itemInfo.externalIds",
    "itemInfo.features",
    "itemInfo.productInfo",
    "images.primary.large",
    "images.variants.large",
    "offersV2.listings.price",
    "offersV2.listings.availability",
]
FULL_ITEM = "B0C7NTRL01"  # nitrile gloves: every field present
MULTI_LISTING = "B0AABATT48"
NO_OFFERS = "B0AAABAT24"
NO_IMAGES = "B0PTOWEL12"
NO_TITLE = "B0SHPTAPE6"


def cognito_form(**overrides: Any) -> dict[str, Any]:
    form = {
        "grant_type": "client_credentials",
        "client_id": cs.DEMO_CREDENTIAL_ID,
        "client_secret": cs.DEMO_CREDENTIAL_SECRET,
        "scope": cs.COGNITO_SCOPE,
    }
    form.update(overrides)
    return {k: v for k, v in form.items() if v is not None}


def lwa_body(**overrides: Any) -> dict[str, Any]:
    body = cognito_form(**{"scope": cs.LWA_SCOPE, **overrides})
    return body


def get_items(
    sandbox: SandboxHandle,
    item_ids: list[str] | None = None,
    resources: list[str] | None = None,
    headers: dict[str, str] | None = None,
    version: str = "2.1",
    **body_overrides: Any,
) -> requests.Response:
    body: dict[str, Any] = {
        "partnerTag": cs.DEMO_PARTNER_TAG,
        "itemIds": item_ids if item_ids is not None else [FULL_ITEM],
        "resources": resources if resources is not None else ALL_IMPORT_RESOURCES,
    }
    body.update(body_overrides)
    body = {k: v for k, v in body.items() if v is not None}
    return requests.post(
        sandbox.get_items_url(),
        json=body,
        headers=headers if headers is not None else sandbox.headers(version),
        timeout=T,
    )


def assert_amazon_error(response: requests.Response, status: int, reason: str | None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["type"] == cs.exception_type(status)
    assert isinstance(body["message"], str)
    assert body["message"]
    assert body.get("reason") == reason


@pytest.fixture
def fast(sandbox: SandboxHandle) -> SandboxHandle:
    """The sandbox with a rate high enough that throttling never interferes."""
    sandbox.configure(rate=1000.0)
    return sandbox


# ------------------------------------------------------------------------ pure helpers


def test_max_in_window_counts_arrivals_closer_than_the_window() -> None:
    assert cs.max_in_window([], 1.0) == 0
    assert cs.max_in_window([0.0, 1.0, 2.0], 1.0) == 1  # exactly a window apart
    assert cs.max_in_window([0.0, 0.999, 1.5, 1.6, 1.7], 1.0) == 4
    assert cs.max_in_window([5.0, 0.0, 0.5], 1.0) == 2  # order does not matter


def test_limit_for_stretches_the_window_below_one_call_per_window() -> None:
    assert cs.limit_for(1.0, 1.0) == (1.0, 1)
    assert cs.limit_for(2.5, 1.0) == (1.0, 2)
    assert cs.limit_for(0.5, 1.0) == (2.0, 1)


# ------------------------------------------------------------------------------- tokens


def test_cognito_token_from_form_body(sandbox: SandboxHandle) -> None:
    response = requests.post(sandbox.token_url("2.1"), data=cognito_form(), timeout=T)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].count(".") == 2  # JWT-shaped, like Cognito's
    assert response.headers["Cache-Control"] == "no-store"


def test_cognito_token_with_http_basic_client_auth(sandbox: SandboxHandle) -> None:
    response = requests.post(
        sandbox.token_url("2.1"),
        data=cognito_form(client_id=None, client_secret=None) | {"scope": cs.COGNITO_SCOPE},
        auth=(cs.DEMO_CREDENTIAL_ID, cs.DEMO_CREDENTIAL_SECRET),
        timeout=T,
    )
    assert response.status_code == 200, response.text


def test_cognito_accepts_a_missing_scope_like_cognito(sandbox: SandboxHandle) -> None:
    response = requests.post(sandbox.token_url("2.1"), data=cognito_form(scope=None), timeout=T)
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"data": cognito_form(client_secret="wrong")}, 401, "invalid_client"),
        ({"data": cognito_form(client_id="someone-else")}, 401, "invalid_client"),
        ({"data": cognito_form(client_id=None)}, 401, "invalid_client"),
        ({"data": cognito_form(scope=cs.LWA_SCOPE)}, 400, "invalid_scope"),
        ({"data": cognito_form(grant_type="password")}, 400, "unsupported_grant_type"),
        ({"data": cognito_form(grant_type=None)}, 400, "invalid_request"),
        ({"json": cognito_form()}, 400, "invalid_request"),
        (
            {"data": cognito_form(client_id=None, client_secret=None), "auth": ("x", "y")},
            401,
            "invalid_client",
        ),
    ],
)
def test_cognito_token_refusals(
    sandbox: SandboxHandle, kwargs: dict[str, Any], status: int, error: str
) -> None:
    response = requests.post(sandbox.token_url("2.1"), timeout=T, **kwargs)
    assert response.status_code == status
    assert response.json()["error"] == error
    if status == 401:
        assert response.json()["error_description"] == "Client authentication failed"


def test_lwa_token_from_json_body(sandbox: SandboxHandle) -> None:
    response = requests.post(sandbox.token_url("3.1"), json=lwa_body(), timeout=T)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].startswith("Atc|")


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"json": lwa_body(client_secret="wrong")}, 401, "invalid_client"),
        ({"json": lwa_body(client_id="nobody")}, 401, "invalid_client"),
        ({"json": lwa_body(scope=cs.COGNITO_SCOPE)}, 400, "invalid_scope"),
        ({"json": lwa_body(scope=None)}, 400, "invalid_request"),
        ({"data": lwa_body()}, 400, "invalid_request"),
        (
            {"data": "{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "invalid_request",
        ),
        ({"json": lwa_body(grant_type="authorization_code")}, 400, "unsupported_grant_type"),
    ],
)
def test_lwa_token_refusals(
    sandbox: SandboxHandle, kwargs: dict[str, Any], status: int, error: str
) -> None:
    response = requests.post(sandbox.token_url("3.1"), timeout=T, **kwargs)
    assert response.status_code == status
    assert response.json()["error"] == error


def test_a_credential_only_serves_its_family(sandbox: SandboxHandle) -> None:
    sandbox.set_credentials([(cs.DEMO_CREDENTIAL_ID, cs.DEMO_CREDENTIAL_SECRET, "3.1")])
    cognito = requests.post(sandbox.token_url("2.1"), data=cognito_form(), timeout=T)
    assert cognito.status_code == 401
    lwa = requests.post(sandbox.token_url("3.1"), json=lwa_body(), timeout=T)
    assert lwa.status_code == 200


def test_token_expiry_is_configurable_and_enforced(sandbox: SandboxHandle) -> None:
    sandbox.configure(token_expires_in=0.3, rate=1000.0)
    response = requests.post(sandbox.token_url("2.1"), data=cognito_form(), timeout=T)
    assert response.json()["expires_in"] == 0.3
    headers = sandbox.headers("2.1", token=response.json()["access_token"])
    assert get_items(sandbox, headers=headers).status_code == 200
    time.sleep(0.35)
    assert_amazon_error(get_items(sandbox, headers=headers), 401, "TokenExpired")


def test_expire_tokens_control(fast: SandboxHandle) -> None:
    headers = fast.headers("3.1")
    fast.expire_tokens()
    assert_amazon_error(get_items(fast, headers=headers), 401, "TokenExpired")


def test_credential_rotation(fast: SandboxHandle) -> None:
    old_headers = fast.headers("2.1")
    fast.set_credentials([("rotated-id", "rotated-secret", "2.1")], revoke_tokens=True)
    assert_amazon_error(get_items(fast, headers=old_headers), 401, "InvalidToken")
    old = requests.post(fast.token_url("2.1"), data=cognito_form(), timeout=T)
    assert old.status_code == 401
    new = requests.post(
        fast.token_url("2.1"),
        data=cognito_form(client_id="rotated-id", client_secret="rotated-secret"),
        timeout=T,
    )
    assert new.status_code == 200
    headers = fast.headers("2.1", token=new.json()["access_token"])
    assert get_items(fast, headers=headers).status_code == 200


def test_rotation_without_revoking_keeps_issued_tokens(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.set_credentials([("rotated-id", "rotated-secret", "2.1")])
    assert get_items(fast, headers=headers).status_code == 200


# ------------------------------------------------------------------- getItems: auth rules


def test_cognito_token_needs_its_version_in_the_header(fast: SandboxHandle) -> None:
    token = fast.token("2.1")
    market = {"x-marketplace": cs.DEFAULT_MARKETPLACE}
    ok = get_items(fast, headers={"Authorization": f"Bearer {token}, Version 2.1", **market})
    assert ok.status_code == 200
    bare = get_items(fast, headers={"Authorization": f"Bearer {token}", **market})
    assert_amazon_error(bare, 401, "InvalidToken")
    other = get_items(fast, headers={"Authorization": f"Bearer {token}, Version 2.2", **market})
    assert_amazon_error(other, 401, "InvalidToken")
    lwa = get_items(fast, headers={"Authorization": f"Bearer {token}, Version 3.1", **market})
    assert_amazon_error(lwa, 401, "InvalidToken")


def test_lwa_token_is_a_bare_bearer(fast: SandboxHandle) -> None:
    token = fast.token("3.1")
    market = {"x-marketplace": cs.DEFAULT_MARKETPLACE}
    assert get_items(fast, headers={"Authorization": f"Bearer {token}", **market}).ok
    # The official SDK appends the version for every family; a matching one is tolerated.
    tolerated = get_items(fast, headers={"Authorization": f"Bearer {token}, Version 3.1", **market})
    assert tolerated.status_code == 200
    wrong = get_items(fast, headers={"Authorization": f"Bearer {token}, Version 2.1", **market})
    assert_amazon_error(wrong, 401, "InvalidToken")


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (None, "MissingCredential"),
        ("Bearer not-a-token, Version 2.1", "InvalidToken"),
        ("Basic c2FuZGJveDpzZWNyZXQ=", "InvalidToken"),
        ("Bearer", "InvalidToken"),
    ],
)
def test_bad_authorization_headers(
    fast: SandboxHandle, authorization: str | None, reason: str
) -> None:
    headers = {"x-marketplace": cs.DEFAULT_MARKETPLACE}
    if authorization is not None:
        headers["Authorization"] = authorization
    assert_amazon_error(get_items(fast, headers=headers), 401, reason)


# -------------------------------------------------------------- getItems: request rules


def test_marketplace_header_is_required_and_must_match(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    missing = {k: v for k, v in headers.items() if k != "x-marketplace"}
    response = get_items(fast, headers=missing)
    assert_amazon_error(response, 400, "FieldValidationFailed")
    assert response.json()["fieldList"][0]["name"] == "x-marketplace"
    other = get_items(fast, headers={**headers, "x-marketplace": "www.amazon.co.uk"})
    assert_amazon_error(other, 400, "InvalidPartnerTag")


def test_partner_tag_rules(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    assert_amazon_error(
        get_items(fast, headers=headers, partnerTag="someoneelse-20"), 400, "InvalidPartnerTag"
    )
    missing = get_items(fast, headers=headers, partnerTag=None)
    assert_amazon_error(missing, 400, "FieldValidationFailed")
    assert missing.json()["fieldList"] == [
        {"name": "partnerTag", "message": "Member must not be null or blank"}
    ]


@pytest.mark.parametrize("count", [0, 11])
def test_item_ids_must_be_1_to_10(fast: SandboxHandle, count: int) -> None:
    ids = [f"B0SYN{n:05d}" for n in range(count)]
    response = get_items(fast, item_ids=ids)
    assert_amazon_error(response, 400, "FieldValidationFailed")
    assert response.json()["fieldList"][0]["name"] == "itemIds"


def test_ten_item_ids_are_fine(fast: SandboxHandle) -> None:
    ids = [f"B0SYN{n:05d}" for n in range(10)]
    response = get_items(fast, item_ids=ids)
    assert response.status_code == 200
    assert [i["asin"] for i in response.json()["itemsResult"]["items"]] == ids


@pytest.mark.parametrize(
    "body",
    [
        {"partnerTag": cs.DEMO_PARTNER_TAG, "itemIds": "B0C7NTRL01"},
        {"partnerTag": cs.DEMO_PARTNER_TAG, "itemIds": [123]},
        {"partnerTag": cs.DEMO_PARTNER_TAG, "ItemIds": ["B0C7NTRL01"]},  # PA-API casing
        {
            "partnerTag": cs.DEMO_PARTNER_TAG,
            "itemIds": [FULL_ITEM],
            "resources": ["ItemInfo.Title"],
        },
        {"partnerTag": cs.DEMO_PARTNER_TAG, "itemIds": [FULL_ITEM], "resources": "itemInfo.title"},
    ],
)
def test_field_validation_failures(fast: SandboxHandle, body: dict[str, Any]) -> None:
    response = requests.post(
        fast.get_items_url(), json=body, headers=fast.headers("2.1"), timeout=T
    )
    assert_amazon_error(response, 400, "FieldValidationFailed")


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        ('{"partnerTag": "ardademo-20", "itemIds": ["B0C7NTRL01"]}', "text/plain"),
        ("{broken", "application/json"),
        ('["B0C7NTRL01"]', "application/json"),
    ],
)
def test_unparseable_bodies(fast: SandboxHandle, data: str, content_type: str) -> None:
    headers = {**fast.headers("2.1"), "Content-Type": content_type}
    response = requests.post(fast.get_items_url(), data=data, headers=headers, timeout=T)
    assert_amazon_error(response, 400, "CannotParse")


def test_ineligible_associate_gets_403(fast: SandboxHandle) -> None:
    fast.configure(eligible=False)
    assert_amazon_error(get_items(fast), 403, "AssociateNotEligible")


def test_unknown_path_is_an_amazon_shaped_404(sandbox: SandboxHandle) -> None:
    response = requests.post(sandbox.url + "/catalog/v1/getItem", json={}, timeout=T)
    assert_amazon_error(response, 404, None)
    assert response.json()["resourceId"] == "/catalog/v1/getItem"


# ------------------------------------------------------------------ getItems: responses


def test_only_requested_resources_are_returned(fast: SandboxHandle) -> None:
    response = get_items(fast, resources=["itemInfo.title"])
    (item,) = response.json()["itemsResult"]["items"]
    assert set(item) == {"asin", "detailPageURL", "itemInfo"}
    assert set(item["itemInfo"]) == {"title"}
    assert item["itemInfo"]["title"]["displayValue"].startswith("Northline Nitrile Exam Gloves")


def test_no_resources_returns_asin_and_link_only(fast: SandboxHandle) -> None:
    response = get_items(fast, resources=[])
    assert response.json()["itemsResult"]["items"] == [
        {
            "asin": FULL_ITEM,
            "detailPageURL": f"https://www.amazon.com/dp/{FULL_ITEM}"
            f"?tag={cs.DEMO_PARTNER_TAG}&linkCode=ogi&th=1&psc=1",
        }
    ]


def test_full_item_has_every_import_field(fast: SandboxHandle) -> None:
    (item,) = get_items(fast).json()["itemsResult"]["items"]
    info = item["itemInfo"]
    assert info["byLineInfo"]["brand"]["displayValue"] == "Northline Supply"
    assert info["byLineInfo"]["manufacturer"]["displayValue"]
    assert info["externalIds"]["upcs"]["displayValues"] == ["084127300113"]
    assert info["externalIds"]["eans"]["displayValues"]
    assert len(info["features"]["displayValues"]) >= 2
    assert info["productInfo"]["unitCount"]["displayValue"] == 100
    large = item["images"]["primary"]["large"]
    assert large["url"].startswith("https://m.media-amazon.com/images/I/")
    assert (large["height"], large["width"]) == (500, 500)
    assert set(item["images"]["primary"]) == {"large"}  # small/medium not requested
    assert all(set(v) == {"large"} for v in item["images"]["variants"])
    (listing,) = item["offersV2"]["listings"]
    assert set(listing) == {"price", "availability"}
    assert listing["price"]["money"] == {
        "amount": 12.99,
        "currency": "USD",
        "displayAmount": "$12.99",
    }
    assert listing["price"]["pricePerUnit"]["amount"] == pytest.approx(0.1299)
    assert listing["availability"] == {
        "message": "In Stock",
        "minOrderQuantity": 1,
        "maxOrderQuantity": 30,
        "type": "IN_STOCK",
    }


def test_smaller_image_renditions_are_derived(fast: SandboxHandle) -> None:
    (item,) = get_items(fast, resources=["images.primary.small", "images.variants.medium"]).json()[
        "itemsResult"
    ]["items"]
    assert item["images"]["primary"]["small"]["url"].endswith("._SL75_.jpg")
    assert item["images"]["variants"][1]["medium"]["height"] == 120  # 500x375 scaled to 160


def test_items_missing_data_simply_lack_it(fast: SandboxHandle) -> None:
    body = get_items(fast, item_ids=[NO_OFFERS, NO_IMAGES, NO_TITLE, MULTI_LISTING]).json()
    items = {i["asin"]: i for i in body["itemsResult"]["items"]}
    assert "errors" not in body
    assert "offersV2" not in items[NO_OFFERS]
    assert "images" not in items[NO_IMAGES]
    assert "title" not in items[NO_TITLE]["itemInfo"]
    listings = items[MULTI_LISTING]["offersV2"]["listings"]
    assert len(listings) == 3
    assert all("price" in listing and "availability" in listing for listing in listings)


def test_per_item_errors_and_duplicates(fast: SandboxHandle) -> None:
    response = get_items(
        fast, item_ids=[FULL_ITEM, "B0XXXXXXXX", "not-an-asin", FULL_ITEM], resources=[]
    )
    assert response.status_code == 200
    body = response.json()
    assert [i["asin"] for i in body["itemsResult"]["items"]] == [FULL_ITEM]
    assert body["errors"] == [
        {
            "code": "ItemNotAccessible",
            "message": "The ItemId B0XXXXXXXX is not accessible through the Creators API.",
        },
        {
            "code": "InvalidParameterValue",
            "message": "The ItemId not-an-asin provided in the request is invalid.",
        },
    ]


def test_nothing_accessible_means_no_items_result(fast: SandboxHandle) -> None:
    body = get_items(fast, item_ids=["B0XXXXXXXX"]).json()
    assert "itemsResult" not in body
    assert body["errors"][0]["code"] == "ItemNotAccessible"


def test_detail_page_url_carries_the_requested_tag(fast: SandboxHandle) -> None:
    fast.configure(partner_tags=["ardademo-20", "other-20"])
    (item,) = get_items(fast, partnerTag="other-20", resources=[]).json()["itemsResult"]["items"]
    assert "tag=other-20" in item["detailPageURL"]


def test_synthetic_asins_are_complete_and_deterministic(fast: SandboxHandle) -> None:
    ids = ["B0SYN00001", "B0SYN54321", "B0SYN99999"]
    first = get_items(fast, item_ids=ids).json()["itemsResult"]["items"]
    again = get_items(fast, item_ids=ids).json()["itemsResult"]["items"]
    assert first == again
    for item in first:
        for path in (
            ("itemInfo", "title", "displayValue"),
            ("itemInfo", "externalIds", "upcs", "displayValues"),
            ("itemInfo", "productInfo", "unitCount", "displayValue"),
            ("images", "primary", "large", "url"),
        ):
            node: Any = item
            for key in path:
                node = node[key]
            assert node
        assert item["offersV2"]["listings"][0]["price"]["pricePerUnit"]["amount"] > 0
    assert len({i["itemInfo"]["title"]["displayValue"] for i in first}) == 3
    assert cs.synthetic_item("B0SYN00007") == cs.synthetic_item("B0SYN00007")


def _gs1_valid(code: str) -> bool:
    digits = [int(d) for d in code]
    weights = [3, 1] if len(code) % 2 == 0 else [1, 3]
    total = sum(d * weights[i % 2] for i, d in enumerate(digits[:-1]))
    return (10 - total % 10) % 10 == digits[-1]


def test_catalog_is_realistic() -> None:
    document = json.loads(cs.DEFAULT_CATALOG_PATH.read_text())
    items = document["items"]
    assert 18 <= len(items) <= 25
    assert all(re.fullmatch(r"B0[A-Z0-9]{8}", i["asin"]) for i in items)
    assert not any(cs.SYNTHETIC_ASIN_PATTERN.fullmatch(i["asin"]) for i in items)
    assert sum("offersV2" not in i for i in items) >= 2
    assert sum("images" not in i for i in items) >= 2
    assert sum("title" not in i["itemInfo"] for i in items) == 1
    assert any(len(i.get("offersV2", {}).get("listings", [])) > 1 for i in items)
    for item in items:
        for image in [item.get("images", {}).get("primary", {}).get("large")]:
            if image:
                assert image["url"].startswith("https://m.media-amazon.com/images/I/")
        external = item["itemInfo"].get("externalIds", {})
        for code in external.get("upcs", {}).get("displayValues", []):
            assert len(code) == 12
            assert _gs1_valid(code)
        for code in external.get("eans", {}).get("displayValues", []):
            assert len(code) == 13
            assert _gs1_valid(code)
        for listing in item.get("offersV2", {}).get("listings", []):
            assert "pricePerUnit" in listing["price"]


# ---------------------------------------------------------------------- rate and stats


def test_more_than_rate_in_a_sliding_second_is_throttled(sandbox: SandboxHandle) -> None:
    headers = sandbox.headers("2.1")
    assert get_items(sandbox, headers=headers).status_code == 200
    throttled = get_items(sandbox, headers=headers)
    assert_amazon_error(throttled, 429, None)
    assert "Retry-After" not in throttled.headers
    # Throttling comes before authentication and every arrival counts.
    assert get_items(sandbox, headers={}).status_code == 429
    stats = sandbox.stats()
    assert stats["total_calls"] == 3
    assert stats["calls_by_status"] == {"200": 1, "429": 2}
    assert stats["throttled_calls"] == 2
    assert stats["max_calls_in_window"] == 3
    assert stats["token_requests"] == 1


def test_the_window_slides(sandbox: SandboxHandle) -> None:
    sandbox.configure(rate=5.0, window_seconds=0.2)  # one call per 0.2 s window
    headers = sandbox.headers("2.1")
    assert get_items(sandbox, headers=headers).status_code == 200
    assert get_items(sandbox, headers=headers).status_code == 429
    time.sleep(0.25)
    assert get_items(sandbox, headers=headers).status_code == 200
    stats = sandbox.stats()
    assert stats["window_seconds"] == 0.2
    assert stats["max_calls_in_window"] == 2


def test_throttle_retry_after_is_configurable(sandbox: SandboxHandle) -> None:
    sandbox.configure(throttle_retry_after=2)
    headers = sandbox.headers("2.1")
    get_items(sandbox, headers=headers)
    assert get_items(sandbox, headers=headers).headers["Retry-After"] == "2"


def test_token_rate(sandbox: SandboxHandle) -> None:
    sandbox.configure(token_rate=1.0)
    assert requests.post(sandbox.token_url(), data=cognito_form(), timeout=T).status_code == 200
    second = requests.post(sandbox.token_url(), data=cognito_form(), timeout=T)
    assert second.status_code == 429
    assert second.json()["error"] == "slow_down"
    stats = sandbox.stats()
    assert stats["token_requests_by_status"] == {"200": 1, "429": 1}
    assert stats["max_token_requests_in_window"] == 2


def test_stats_record_asins_and_reset_clears_them(fast: SandboxHandle) -> None:
    headers = fast.headers("3.1")
    get_items(fast, item_ids=[FULL_ITEM, MULTI_LISTING, FULL_ITEM], headers=headers)
    get_items(fast, item_ids=[FULL_ITEM], headers=headers)
    stats = fast.stats()
    assert stats["asins_per_call"] == [2, 1]
    assert stats["avg_asins_per_call"] == 1.5
    assert stats["asins_in_ok_calls"] == 3
    assert stats["distinct_asins_in_ok_calls"] == 2
    calls = [c for c in stats["calls"] if c["endpoint"] == "getItems"]
    assert calls[0]["asins"] == [FULL_ITEM, MULTI_LISTING, FULL_ITEM]
    assert calls[0]["status"] == 200
    assert calls[0]["wall"] == pytest.approx(time.time(), abs=30)
    assert calls[0]["monotonic"] < calls[1]["monotonic"]
    assert "calls" not in fast.stats(calls=False)
    fast.reset(full=False)
    assert fast.stats()["total_calls"] == 0
    assert fast.stats()["rate"] == 1000.0  # a plain reset keeps the config


def test_config_endpoint_validates(sandbox: SandboxHandle) -> None:
    bad = requests.post(sandbox.url + "/_sandbox/config", json={"rate": 0}, timeout=T)
    assert bad.status_code == 400
    unknown = requests.post(sandbox.url + "/_sandbox/config", json={"catalog_path": "/"}, timeout=T)
    assert unknown.status_code == 400
    shown = requests.get(sandbox.url + "/_sandbox/config", timeout=T).json()
    assert cs.DEMO_CREDENTIAL_SECRET not in json.dumps(shown)


def test_full_reset_restores_config_and_faults(sandbox: SandboxHandle) -> None:
    sandbox.configure(rate=7.0, eligible=False)
    sandbox.fault("html")
    sandbox.set_credentials([("x", "y", "2.2")])
    sandbox.reset(full=True)
    assert sandbox.stats()["rate"] == 1.0
    assert sandbox.state.pending_faults() == {"getItems": [], "token": []}
    assert get_items(sandbox).status_code == 200


def test_credential_repr_hides_the_secret() -> None:
    assert cs.DEMO_CREDENTIAL_SECRET not in repr(cs.default_credentials())
    assert cs.DEMO_CREDENTIAL_SECRET not in repr(cs.SandboxConfig())


# -------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "params", "status", "reason"),
    [
        ("status", {"status": 500}, 500, None),
        ("status", {"status": 503, "reason": "Other"}, 503, "Other"),
        ("status", {"status": 400, "reason": "InvalidAssociate"}, 400, "InvalidAssociate"),
        ("token_expired", {}, 401, "TokenExpired"),
        ("associate_not_eligible", {}, 403, "AssociateNotEligible"),
        ("invalid_partner_tag", {}, 400, "InvalidPartnerTag"),
        ("invalid_associate", {}, 400, "InvalidAssociate"),
        ("429", {}, 429, None),
    ],
)
def test_error_faults(
    fast: SandboxHandle, fault: str, params: dict[str, Any], status: int, reason: str | None
) -> None:
    headers = fast.headers("2.1")
    fast.fault(fault, **params)
    response = get_items(fast, headers=headers)
    assert_amazon_error(response, status, reason)
    assert "Retry-After" not in response.headers
    assert get_items(fast, headers=headers).status_code == 200  # consumed
    calls = [c for c in fast.stats()["calls"] if c["endpoint"] == "getItems"]
    assert calls[0]["fault"] == fault
    assert calls[0]["status"] == status


def test_429_fault_with_retry_after(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("429", retryAfter=3)
    response = get_items(fast, headers=headers)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"


def test_fault_count_and_order(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("status", count=2, status=500)
    fast.fault("associate_not_eligible")
    statuses = [get_items(fast, headers=headers).status_code for _ in range(4)]
    assert statuses == [500, 500, 403, 200]


def test_clear_faults(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("status", count=5, status=500)
    fast.clear_faults()
    assert get_items(fast, headers=headers).status_code == 200


def test_non_json_fault(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("non_json")
    response = get_items(fast, headers=headers)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()


def test_html_fault(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("html")
    response = get_items(fast, headers=headers)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<html>" in response.text


def test_truncated_json_fault(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    complete = get_items(fast, headers=headers).text
    fast.fault("truncated_json")
    response = get_items(fast, headers=headers)
    assert response.status_code == 200
    assert complete.startswith(response.text)
    assert len(response.text) < len(complete)
    with pytest.raises(requests.exceptions.JSONDecodeError):
        response.json()


def test_wrong_shape_fault(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("wrong_shape")
    body = get_items(fast, headers=headers).json()
    assert "itemsResult" not in body
    assert "ItemsResult" in body
    fast.fault("wrong_shape", body={"unexpected": True})
    assert get_items(fast, headers=headers).json() == {"unexpected": True}


def test_wrong_asin_fault(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("wrong_asin")
    (item,) = get_items(fast, headers=headers).json()["itemsResult"]["items"]
    assert item["asin"] == "B0WRONGAS1"
    assert FULL_ITEM not in item["detailPageURL"]
    fast.fault("wrong_asin", asin=MULTI_LISTING)
    (item,) = get_items(fast, headers=headers).json()["itemsResult"]["items"]
    assert item["asin"] == MULTI_LISTING


def test_slow_body_sends_headers_then_stalls(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("slow_body", delay=0.6)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.RequestException):
        get_items_with_timeout(fast, headers, timeout=(2, 0.2))
    assert time.monotonic() - started < 0.55

    fast.fault("slow_body", delay=0.3)
    started = time.monotonic()
    body = get_items_with_timeout(fast, headers, timeout=(2, 2), stream=True)
    headers_after = time.monotonic() - started
    assert body.status_code == 200
    assert headers_after < 0.25
    assert body.json()["itemsResult"]["items"][0]["asin"] == FULL_ITEM
    assert time.monotonic() - started >= 0.3


def get_items_with_timeout(
    sandbox: SandboxHandle, headers: dict[str, str], timeout: Any, stream: bool = False
) -> requests.Response:
    return requests.post(
        sandbox.get_items_url(),
        json={"partnerTag": cs.DEMO_PARTNER_TAG, "itemIds": [FULL_ITEM], "resources": []},
        headers=headers,
        timeout=timeout,
        stream=stream,
    )


def test_delay_fault(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("delay", delay=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        get_items_with_timeout(fast, headers, timeout=(2, 0.2))
    fast.fault("delay", delay=0.2)
    started = time.monotonic()
    assert get_items_with_timeout(fast, headers, timeout=(2, 2)).status_code == 200
    assert time.monotonic() - started >= 0.2


def test_delay_still_applies_normal_checks(fast: SandboxHandle) -> None:
    fast.fault("delay", delay=0.01)
    assert_amazon_error(get_items(fast, headers={}), 401, "MissingCredential")


def test_reset_fault_drops_the_connection(fast: SandboxHandle) -> None:
    headers = fast.headers("2.1")
    fast.fault("reset")
    with pytest.raises(requests.exceptions.ConnectionError):
        get_items(fast, headers=headers)
    assert get_items(fast, headers=headers).status_code == 200
    stats = fast.stats()
    assert stats["calls_by_status"] == {"200": 1, "dropped": 1}
    dropped = [c for c in stats["calls"] if c["fault"] == "reset"]
    assert dropped[0]["asins"] == [FULL_ITEM]


@pytest.mark.parametrize(
    ("fault", "params", "check"),
    [
        ("status", {"status": 500}, lambda r: r.status_code == 500 and r.json()["error"]),
        ("429", {"retryAfter": 1}, lambda r: r.status_code == 429 and r.headers["Retry-After"]),
        ("html", {}, lambda r: r.headers["Content-Type"].startswith("text/html")),
        ("wrong_shape", {}, lambda r: "access_token" not in r.json()),
        ("truncated_json", {}, lambda r: r.status_code == 200 and r.text.startswith('{"access')),
    ],
)
def test_token_endpoint_faults(
    sandbox: SandboxHandle, fault: str, params: dict[str, Any], check: Any
) -> None:
    sandbox.fault(fault, endpoint="token", **params)
    response = requests.post(sandbox.token_url(), data=cognito_form(), timeout=T)
    assert check(response)
    assert requests.post(sandbox.token_url(), data=cognito_form(), timeout=T).status_code == 200


def test_token_endpoint_reset(sandbox: SandboxHandle) -> None:
    sandbox.fault("reset", endpoint="token")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(sandbox.token_url("3.1"), json=lwa_body(), timeout=T)
    assert sandbox.stats()["token_requests_by_status"] == {"dropped": 1}


@pytest.mark.parametrize(
    "payload",
    [
        {"fault": "no_such_fault"},
        {"fault": "wrong_asin", "endpoint": "token"},
        {"fault": "status"},
        {"fault": "status", "status": 99},
        {"fault": "html", "count": 0},
        {"fault": "delay", "delay": -1},
        {"fault": "html", "endpoint": "elsewhere"},
    ],
)
def test_fault_requests_are_validated(sandbox: SandboxHandle, payload: dict[str, Any]) -> None:
    response = requests.post(sandbox.url + "/_sandbox/faults", json=payload, timeout=T)
    assert response.status_code == 400
    assert response.json()["error"]


# ------------------------------------------------------------------------ server and CLI


def test_serve_in_thread_binds_loopback_only() -> None:
    app = cs.create_sandbox_app()
    with pytest.raises(ValueError, match="loopback"):
        cs.serve_in_thread(app, host="0.0.0.0")
    url, shutdown = cs.serve_in_thread(app)
    try:
        assert url.startswith("http://127.0.0.1:")
        assert requests.get(url + "/_sandbox/stats", timeout=T).status_code == 200
    finally:
        shutdown()


def test_cli_refuses_a_non_loopback_host() -> None:
    result = subprocess.run(
        [*SANDBOX_COMMAND, "--host", "0.0.0.0"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert b"loopback" in result.stderr


def test_sandbox_subprocess_serves_the_contract() -> None:
    with sandbox_subprocess(rate=50.0, token_expires_in=120) as url:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        remote = SandboxHandle(url)
        token = requests.post(remote.token_url("2.1"), data=cognito_form(), timeout=T).json()
        assert token["expires_in"] == 120
        response = get_items(remote, headers=remote.headers("2.1", token["access_token"]))
        assert response.status_code == 200
        remote.fault("status", status=500)
        assert get_items(remote, headers=remote.headers("3.1")).status_code == 500
        stats = remote.stats()
        assert stats["rate"] == 50.0
        assert stats["calls_by_status"] == {"200": 1, "500": 1}
        assert stats["token_requests"] == 2
