"""Amazon's Creators API Python SDK (``amazon-creatorsapi-python-sdk``) against the sandbox.

The sandbox claims to be Amazon's contract; these tests hold it to the SDK's side of it.
The SDK is configured the way its README and source show: ``ApiClient(credential_id=…,
credential_secret=…, version=…)`` handed to ``DefaultApi``, then
``get_items(x_marketplace, GetItemsRequestContent(…))``. It reaches the sandbox through
the two overrides ``ApiClient.__init__`` documents and nothing else — no monkeypatching:

* ``host=`` replaces ``https://creatorsapi.amazon`` (the SDK's own tests set it);
* ``auth_endpoint=`` replaces the token URL ``OAuth2Config.determine_token_endpoint``
  would pick from the version (Cognito for 2.x, Login with Amazon for 3.x).

Each client gets a fresh ``Configuration()``: with none, ``ApiClient`` writes the host
into the process-wide ``Configuration.get_default()``.

What the SDK does and the sandbox must accept (SDK 1.2.0 source):
``auth/oauth2_token_manager.py`` posts a form body for 2.x and a JSON body for 3.x, both
with ``scope``; ``api_client.py`` sends ``Authorization: Bearer <token>, Version <v>`` for
2.x and ``Bearer <token>`` for 3.x; ``exceptions.py`` maps 400/401/403/404/5xx to
``BadRequestException``/``UnauthorizedException``/``ForbiddenException``/
``NotFoundException``/``ServiceException`` (429 stays a plain ``ApiException``) with the
parsed ``*ExceptionResponseContent`` model in ``.data``; per-item failures of a 200 are
``GetItemsResponseContent.errors`` (``ErrorData``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from creatorsapi_python_sdk.api.default_api import DefaultApi
from creatorsapi_python_sdk.api_client import ApiClient
from creatorsapi_python_sdk.configuration import Configuration
from creatorsapi_python_sdk.exceptions import (
    ApiException,
    BadRequestException,
    ForbiddenException,
    NotFoundException,
    ServiceException,
    UnauthorizedException,
)
from creatorsapi_python_sdk.models import (
    AccessDeniedExceptionResponseContent,
    AccessDeniedReason,
    ErrorData,
    GetItemsRequestContent,
    GetItemsResource,
    GetItemsResponseContent,
    InternalServerExceptionResponseContent,
    ResourceNotFoundExceptionResponseContent,
    ThrottleExceptionResponseContent,
    UnauthorizedExceptionReason,
    UnauthorizedExceptionResponseContent,
    ValidationExceptionReason,
    ValidationExceptionResponseContent,
)

from arda_amazon_bp.testing import AmazonSandbox
from arda_amazon_bp.testing import sandbox as cs

VERSIONS = ["2.1", "3.1"]  # one Cognito, one Login with Amazon credential
FAMILY = {"2.1": cs.COGNITO, "3.1": cs.LWA}
TIMEOUT = 5.0  # per SDK call; the SDK's own default is none

# The catalog's complete item (arda_amazon_bp/testing/sandbox_catalog.json).
GLOVES = "B0C7NTRL01"
GLOVES_TITLE = (
    "Northline Nitrile Exam Gloves, Powder-Free, Latex-Free, 4 mil, Medium, Blue, Box of 100"
)
UNKNOWN = "B000000000"  # well-formed, not in the catalog, not a synthetic ASIN

IMPORT_RESOURCES = [
    GetItemsResource.ITEM_INFO_DOT_TITLE,
    GetItemsResource.OFFERS_V2_DOT_LISTINGS_DOT_PRICE,
]


@pytest.fixture
def sandbox(amazon_sandbox: AmazonSandbox) -> AmazonSandbox:
    """The plugin's sandbox, fast enough for several calls per test."""
    amazon_sandbox.configure(rate=100)
    return amazon_sandbox


def sdk_api(
    sandbox: AmazonSandbox, version: str, secret: str = cs.DEMO_CREDENTIAL_SECRET
) -> DefaultApi:
    """The SDK's ``DefaultApi`` for the demo credential, pointed at the sandbox."""
    client = ApiClient(
        Configuration(),
        credential_id=cs.DEMO_CREDENTIAL_ID,
        credential_secret=secret,
        version=version,
        host=sandbox.url,
        auth_endpoint=sandbox.token_url(version),
    )
    return DefaultApi(client)


def request(item_ids: list[str], resources: list[GetItemsResource] | None = None) -> Any:
    return GetItemsRequestContent(
        partner_tag=cs.DEMO_PARTNER_TAG,
        item_ids=item_ids,
        resources=IMPORT_RESOURCES if resources is None else resources,
    )


def get_items(api: DefaultApi, item_ids: list[str], **kwargs: Any) -> Any:
    return api.get_items(
        cs.DEFAULT_MARKETPLACE, request(item_ids, **kwargs), _request_timeout=TIMEOUT
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_sdk_fetches_the_catalog_item_with_each_credential_family(
    sandbox: AmazonSandbox, version: str
) -> None:
    api = sdk_api(sandbox, version)

    response = get_items(api, [GLOVES])

    assert isinstance(response, GetItemsResponseContent)
    assert response.errors is None
    assert response.items_result is not None and response.items_result.items is not None
    [item] = response.items_result.items
    assert item.asin == GLOVES
    assert item.detail_page_url == (
        f"https://www.amazon.com/dp/{GLOVES}?tag={cs.DEMO_PARTNER_TAG}&linkCode=ogi&th=1&psc=1"
    )
    assert item.item_info is not None and item.item_info.title is not None
    assert item.item_info.title.display_value == GLOVES_TITLE
    assert item.offers_v2 is not None and item.offers_v2.listings is not None
    [listing] = item.offers_v2.listings
    assert listing.price is not None and listing.price.money is not None
    money = listing.price.money
    assert (money.amount, money.currency, money.display_amount) == (12.99, "USD", "$12.99")
    # Only what was asked for: no images, no byline.
    assert item.images is None and item.item_info.by_line_info is None

    stats = sandbox.stats()
    tokens = [c for c in stats["calls"] if c["endpoint"] == cs.TOKEN]
    # The SDK's token request went to the family's endpoint, in the family's form.
    assert [(c["family"], c["status"]) for c in tokens] == [(FAMILY[version], 200)]
    assert stats["calls_by_status"] == {"200": 1}


@pytest.mark.parametrize("version", VERSIONS)
def test_sdk_reuses_its_token_and_the_sandbox_accepts_it_again(
    sandbox: AmazonSandbox, version: str
) -> None:
    api = sdk_api(sandbox, version)

    first = get_items(api, [GLOVES])
    second = get_items(api, [GLOVES])

    assert first.items_result.items[0].asin == second.items_result.items[0].asin == GLOVES
    stats = sandbox.stats()
    assert stats["token_requests"] == 1
    assert stats["calls_by_status"] == {"200": 2}


def catalog_batches(sandbox: AmazonSandbox) -> Iterator[list[str]]:
    asins = sorted(sandbox.state.catalog)
    for start in range(0, len(asins), cs.MAX_ITEM_IDS):
        yield asins[start : start + cs.MAX_ITEM_IDS]


def test_every_catalog_item_with_every_resource_survives_the_sdk_models_unchanged(
    sandbox: AmazonSandbox,
) -> None:
    """The SDK's models drop members they do not know, so a field the sandbox names
    differently (casing, spelling, nesting) shows up as a difference between the raw body
    and the parsed model dumped back by alias; a wrong type fails the parse itself."""
    api = sdk_api(sandbox, "3.1")
    every_resource = list(GetItemsResource)
    assert {r.value for r in every_resource} == cs.GET_ITEMS_RESOURCES
    seen: list[str] = []
    for batch in catalog_batches(sandbox):
        response = api.get_items_with_http_info(
            cs.DEFAULT_MARKETPLACE, request(batch, every_resource), _request_timeout=TIMEOUT
        )
        assert response.status_code == 200
        raw = json.loads(response.raw_data)
        parsed = response.data
        assert isinstance(parsed, GetItemsResponseContent)
        assert json.loads(json.dumps(parsed.to_dict())) == raw
        seen += [item.asin for item in parsed.items_result.items]
    assert sorted(seen) == sorted(sandbox.state.catalog)


@pytest.mark.parametrize("version", VERSIONS)
def test_unknown_asin_is_a_per_item_error_beside_the_found_item(
    sandbox: AmazonSandbox, version: str
) -> None:
    response = get_items(sdk_api(sandbox, version), [GLOVES, UNKNOWN])

    assert [item.asin for item in response.items_result.items] == [GLOVES]
    assert response.errors == [
        ErrorData(
            code="ItemNotAccessible",
            message=f"The ItemId {UNKNOWN} is not accessible through the Creators API.",
        )
    ]


def test_only_unknown_asins_give_errors_and_no_items_result(sandbox: AmazonSandbox) -> None:
    response = get_items(sdk_api(sandbox, "3.1"), [UNKNOWN])

    assert response.items_result is None
    assert [e.code for e in response.errors] == ["ItemNotAccessible"]


def test_partner_tag_of_another_store_is_the_sdks_bad_request(sandbox: AmazonSandbox) -> None:
    api = sdk_api(sandbox, "2.1")
    content = GetItemsRequestContent(
        partner_tag="someoneelse-20", item_ids=[GLOVES], resources=IMPORT_RESOURCES
    )

    with pytest.raises(BadRequestException) as caught:
        api.get_items(cs.DEFAULT_MARKETPLACE, content, _request_timeout=TIMEOUT)

    assert caught.value.status == 400
    body = caught.value.data
    assert isinstance(body, ValidationExceptionResponseContent)
    assert body.reason == ValidationExceptionReason.INVALIDPARTNERTAG
    assert body.type == "ValidationException"
    assert "someoneelse-20" in body.message


@pytest.mark.parametrize("version", VERSIONS)
def test_expired_token_is_the_sdks_unauthorized_exception(
    sandbox: AmazonSandbox, version: str
) -> None:
    api = sdk_api(sandbox, version)
    get_items(api, [GLOVES])  # the SDK now caches a token for an hour
    sandbox.expire_tokens()

    with pytest.raises(UnauthorizedException) as caught:
        get_items(api, [GLOVES])

    assert caught.value.status == 401
    assert caught.value.data == UnauthorizedExceptionResponseContent(
        type="UnauthorizedException",
        message="The access token has expired",
        reason=UnauthorizedExceptionReason.TOKENEXPIRED,
    )


FAULT_ROWS = [
    pytest.param(
        {"name": "invalid_associate"},
        BadRequestException,
        ValidationExceptionResponseContent,
        ValidationExceptionReason.INVALIDASSOCIATE,
        id="400-invalid-associate",
    ),
    pytest.param(
        {"name": "status", "status": 400},
        BadRequestException,
        ValidationExceptionResponseContent,
        ValidationExceptionReason.OTHER,
        id="400-injected-without-reason",
    ),
    pytest.param(
        {"name": "associate_not_eligible"},
        ForbiddenException,
        AccessDeniedExceptionResponseContent,
        AccessDeniedReason.ASSOCIATENOTELIGIBLE,
        id="403-not-eligible",
    ),
    pytest.param(
        {"name": "status", "status": 403},
        ForbiddenException,
        AccessDeniedExceptionResponseContent,
        AccessDeniedReason.OTHER,
        id="403-injected-without-reason",
    ),
    pytest.param(
        {"name": "status", "status": 401},
        UnauthorizedException,
        UnauthorizedExceptionResponseContent,
        UnauthorizedExceptionReason.OTHER,
        id="401-injected-without-reason",
    ),
    pytest.param(
        {"name": "status", "status": 404},
        NotFoundException,
        ResourceNotFoundExceptionResponseContent,
        None,
        id="404-injected",
    ),
    pytest.param(
        {"name": "429"},
        ApiException,
        ThrottleExceptionResponseContent,
        None,
        id="429-throttled",
    ),
    pytest.param(
        {"name": "status", "status": 500},
        ServiceException,
        InternalServerExceptionResponseContent,
        None,
        id="500",
    ),
]


@pytest.mark.parametrize(("fault", "exception", "model", "reason"), FAULT_ROWS)
def test_sandbox_error_bodies_parse_into_the_sdks_exception_models(
    sandbox: AmazonSandbox,
    fault: dict[str, Any],
    exception: type[ApiException],
    model: type[Any],
    reason: Any,
) -> None:
    """Every error the sandbox can answer must reach the SDK as its typed exception with
    the parsed body in ``.data``: a body the model refuses (a required ``reason``
    missing) would leave ``.data`` None, as the SDK swallows the parse error."""
    api = sdk_api(sandbox, "3.1")
    sandbox.fault(**fault)

    with pytest.raises(ApiException) as caught:
        get_items(api, [GLOVES])

    assert type(caught.value) is exception
    assert isinstance(caught.value.data, model), caught.value.body
    assert caught.value.data.type == cs.exception_type(caught.value.status)
    if reason is not None:
        assert caught.value.data.reason == reason


@pytest.mark.parametrize("version", VERSIONS)
def test_wrong_secret_fails_the_sdks_token_request_without_echoing_it(
    sandbox: AmazonSandbox, version: str
) -> None:
    """The SDK 1.2.0 raises a bare ``Exception`` for a refused token request
    (``OAuth2TokenManager.refresh_token``); it has no typed error for it."""
    wrong = "wrong-secret-0123456789"
    api = sdk_api(sandbox, version, secret=wrong)

    with pytest.raises(Exception, match="OAuth2 token request failed with status 401") as caught:
        get_items(api, [GLOVES])

    assert "invalid_client" in str(caught.value)
    assert wrong not in str(caught.value)
    stats = sandbox.stats()
    assert stats["token_requests_by_status"] == {"401": 1}
    assert stats["total_calls"] == 0
