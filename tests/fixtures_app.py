"""A host app with the extension registered, and a mocked Amazon behind it (requests-mock).

Known credential values are used everywhere so secret-hygiene tests can grep for them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests_mock as rm
from flask import Flask, Request
from flask.testing import FlaskClient
from flask_smorest import Api

from arda_amazon_bp import AmazonImport, hookimpl

CREDENTIAL_ID = "amzn1.application-oa2-client.test0000cafe"
CREDENTIAL_SECRET = "amzn1.oa2-cs.v1.SECRET-never-logged-7f3a9c"
PARTNER_TAG = "ardatest-20"
ACCESS_TOKEN = "Atza|TOKEN-never-logged-4b8e21"
API_HOST = "https://creatorsapi.amazon"
LWA_TOKEN_URL = "https://api.amazon.com/auth/o2/token"
GET_ITEMS_URL = f"{API_HOST}/catalog/v1/getItems"
USER_TOKEN = "user-token-1"

#: Settings that keep the suite fast: a generous rate, no spacing margin.
FAST_CONFIG: dict[str, Any] = {
    "AMAZON_RATE_LIMITS": "100/second;8640/day",
    "AMAZON_RATE_MARGIN_SECONDS": 0,
    "AMAZON_MAX_WAIT_SECONDS": 2,
    "AMAZON_HTTP_TIMEOUT": [1, 2],
}


def make_item(asin: str, **overrides: Any) -> dict[str, Any]:
    """A complete Creators API item; ``overrides`` replace top-level sub-trees (None drops)."""
    item: dict[str, Any] = {
        "asin": asin,
        "detailPageURL": f"https://www.amazon.com/dp/{asin}?tag=someoneelse-20",
        "itemInfo": {
            "title": {"displayValue": f"Nitrile Gloves {asin}"},
            "byLineInfo": {
                "brand": {"displayValue": "Medline"},
                "manufacturer": {"displayValue": "Medline Industries"},
            },
            "externalIds": {
                "upcs": {"displayValues": ["080196735482"]},
                "eans": {"displayValues": ["0080196735482"]},
            },
            "features": {"displayValues": ["Powder free", "Latex free"]},
            "productInfo": {"unitCount": {"displayValue": 100}},
        },
        "images": {
            "primary": {"large": {"url": f"https://m.media-amazon.com/images/I/{asin}.jpg"}},
        },
        "offersV2": {
            "listings": [
                {
                    "price": {
                        "money": {"amount": 12.99, "currency": "USD", "displayAmount": "$12.99"},
                        "pricePerUnit": {
                            "amount": 0.13,
                            "currency": "USD",
                            "displayAmount": "$0.13",
                        },
                    },
                    "availability": {"message": "In Stock", "minOrderQuantity": 1},
                }
            ]
        },
    }
    for key, value in overrides.items():
        if value is None:
            item.pop(key, None)
        else:
            item[key] = value
    return item


@dataclass
class AmazonMock:
    """Amazon's token endpoint and getItems, answering from ``catalog``."""

    mocker: rm.Mocker
    catalog: dict[str, dict[str, Any]] = field(default_factory=dict)
    get_items_calls: list[dict[str, Any]] = field(default_factory=list)

    def add(self, *items: dict[str, Any]) -> None:
        for item in items:
            self.catalog[item["asin"]] = item

    def answer(self, request: Any, context: Any) -> dict[str, Any]:
        body = request.json()
        self.get_items_calls.append(body)
        asins = body["itemIds"]
        found = [self.catalog[a] for a in asins if a in self.catalog]
        errors = [
            {
                "code": "ItemNotAccessible",
                "message": f"The ItemId {a} is not accessible through the Creators API.",
            }
            for a in asins
            if a not in self.catalog
        ]
        answer: dict[str, Any] = {"itemsResult": {"items": found}}
        if errors:
            answer["errors"] = errors
        return answer

    def get_items_requests(self) -> int:
        """getItems requests that reached the mock, whatever it answered."""
        return sum(1 for r in self.mocker.request_history if r.url == GET_ITEMS_URL)

    def fail_get_items(self, **response: Any) -> None:
        """Make getItems answer ``response`` (requests-mock keyword arguments)."""
        self.mocker.post(GET_ITEMS_URL, **response)


@pytest.fixture
def creators_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "AMAZON_CREATORS_CREDENTIAL_ID": CREDENTIAL_ID,
        "AMAZON_CREATORS_CREDENTIAL_SECRET": CREDENTIAL_SECRET,
        "AMAZON_CREATORS_VERSION": "3.1",
        "AMAZON_CREATORS_PARTNER_TAG": PARTNER_TAG,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return values


@pytest.fixture
def amazon() -> Iterator[AmazonMock]:
    with rm.Mocker() as mocker:
        mock = AmazonMock(mocker)
        mocker.post(
            LWA_TOKEN_URL,
            json={"access_token": ACCESS_TOKEN, "token_type": "bearer", "expires_in": 3600},
        )
        mocker.post(GET_ITEMS_URL, json=mock.answer)
        yield mock


class BearerAuth:
    @hookimpl
    def arda_amazon_authenticate(self, request: Request) -> str | None:
        header = request.headers.get("Authorization", "")
        return "user-1" if header == f"Bearer {USER_TOKEN}" else None


@pytest.fixture
def make_app(creators_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """``make_app(**config)``: a host app with its own Api, our extension and auth
    (``metrics_registry=`` is passed to the extension)."""
    apps: list[Flask] = []

    def factory(*, auth: bool = True, metrics_registry: Any = None, **config: Any) -> Flask:
        app = Flask("host")
        app.config.update(
            API_TITLE="Host BFF", API_VERSION="1", OPENAPI_VERSION="3.0.3", TESTING=True
        )
        app.config.update({**FAST_CONFIG, **config})
        api = Api(app)
        extension = AmazonImport(app, api, metrics_registry=metrics_registry)
        if auth:
            extension.plugin_manager.register(BearerAuth())
        app.extensions["test_extension"] = extension
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.extensions["arda_amazon_bp"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    return test_client


def post_import(client: FlaskClient, body: Any, **kwargs: Any) -> Any:
    """POST a JSON-serialisable body (or raw ``data=``) to the import route."""
    if "data" not in kwargs:
        kwargs["data"] = json.dumps(body)
        kwargs.setdefault("content_type", "application/json")
    return client.post("/api/amazon/import", **kwargs)
