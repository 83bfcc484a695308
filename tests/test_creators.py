"""The Creators API client (arda_amazon_bp.creators): tokens, getItems, every outcome."""

from __future__ import annotations

import itertools
import json
import logging
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import requests_mock
from fixtures_loopback import HANG, Loopback, http_response, loopback_servers

from arda_amazon_bp import creators, forks
from arda_amazon_bp.config import DEFAULTS, Settings
from arda_amazon_bp.creators import (
    GET_ITEMS_RESOURCES,
    TOKEN_URLS,
    CreatorsClient,
    GetItemsResult,
    ItemError,
)
from arda_amazon_bp.credentials import CredentialProvider, Credentials, CredentialsError
from arda_amazon_bp.errors import AmazonImportError, ErrorCode, rate_limited

SECRET = "s3cr3t-VALUE-do-not-log-9f8e7d6c"
NEW_SECRET = "n3w-s3cr3t-VALUE-do-not-log-1a2b"
TOKEN = "Atza|tok-ABC-never-log-123456"
TOKEN_2 = "Atza|tok-DEF-never-log-654321"
CREDENTIAL_ID = "amzn1.application-oa2-client.0123456789abcdef"
TAG = "ourstore-20"
API = "https://creatorsapi.amazon"
ITEMS_URL = API + "/catalog/v1/getItems"
MARKET = "www.amazon.com"
A1, A2, A3 = "B0EXAMPLE1", "B0EXAMPLE2", "B0EXAMPLE3"
TIMEOUT = (1.5, 4.0)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Backend:
    """A credential backend whose secret an operator can rotate mid-test."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.secret = SECRET
        self.loads = 0
        self.error: str | None = None

    def load(self) -> Credentials:
        self.loads += 1
        if self.error:
            raise CredentialsError(self.error)
        return Credentials(CREDENTIAL_ID, self.secret, self.version, TAG)


def item(asin: str, title: str = "A product") -> dict[str, Any]:
    return {"asin": asin, "itemInfo": {"title": {"displayValue": title}}}


def items_body(*asins: str, errors: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"itemsResult": {"items": [item(a) for a in asins]}}
    if errors is not None:
        body["errors"] = errors
    return body


@dataclass
class World:
    mock: requests_mock.Mocker
    clock: Clock
    backend: Backend
    settings: Settings
    client: CreatorsClient
    calls: list[dict[str, Any]] = field(default_factory=list)  # observer events
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # on_event

    @property
    def token_url(self) -> str:
        return self.settings.token_url or TOKEN_URLS[self.backend.version]

    def token_ok(self, *tokens: str, expires_in: Any = 3600) -> None:
        answers = [{"json": {"access_token": t, "expires_in": expires_in}} for t in tokens]
        self.mock.post(self.token_url, answers or [{"json": {"access_token": TOKEN}}])

    def items(self, *answers: dict[str, Any]) -> None:
        self.mock.post(ITEMS_URL, list(answers))

    def token_requests(self) -> list[Any]:
        return [r for r in self.mock.request_history if r.url == self.token_url]

    def item_requests(self) -> list[Any]:
        return [r for r in self.mock.request_history if r.url == ITEMS_URL]

    def get(self, *asins: str, **kwargs: Any) -> GetItemsResult:
        return self.client.get_items(MARKET, list(asins or (A1,)), **kwargs)

    def fail(self, *asins: str, **kwargs: Any) -> AmazonImportError:
        with pytest.raises(AmazonImportError) as info:
            self.get(*asins, **kwargs)
        return info.value


def make_settings(**overrides: Any) -> Settings:
    config = dict(DEFAULTS, AMAZON_HTTP_TIMEOUT=TIMEOUT)
    config.update(overrides)
    return Settings.from_config(config)


@pytest.fixture
def make_world() -> Iterator[Callable[..., World]]:
    with requests_mock.Mocker() as mock:

        def build(version: str = "2.1", **overrides: Any) -> World:
            clock = Clock()
            backend = Backend(version)
            settings = make_settings(**overrides)
            calls: list[dict[str, Any]] = []
            events: list[tuple[str, dict[str, Any]]] = []
            client = CreatorsClient(
                settings,
                CredentialProvider(backend, ttl_seconds=900, clock=clock),
                observer=calls.append,
                on_event=lambda name, details: events.append((name, dict(details))),
                clock=clock,
            )
            return World(mock, clock, backend, settings, client, calls, events)

        yield build


@pytest.fixture(params=["2.1", "3.1"], ids=["cognito", "lwa"])
def world(request: pytest.FixtureRequest, make_world: Callable[..., World]) -> World:
    """A client for each credential family, token endpoint answering ``TOKEN``."""
    w = make_world(request.param)
    w.token_ok(TOKEN)
    return w


# --- tokens ---------------------------------------------------------------------------


def test_token_urls_and_resources_are_the_documented_ones() -> None:
    assert TOKEN_URLS == {
        "2.1": "https://creatorsapi.auth.us-east-1.amazoncognito.com/oauth2/token",
        "2.2": "https://creatorsapi.auth.eu-south-2.amazoncognito.com/oauth2/token",
        "2.3": "https://creatorsapi.auth.us-west-2.amazoncognito.com/oauth2/token",
        "3.1": "https://api.amazon.com/auth/o2/token",
        "3.2": "https://api.amazon.co.uk/auth/o2/token",
        "3.3": "https://api.amazon.co.jp/auth/o2/token",
    }
    assert GET_ITEMS_RESOURCES == (
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


@pytest.mark.parametrize("version", ["2.1", "2.2", "2.3"])
def test_cognito_token_request_is_form_encoded(
    make_world: Callable[..., World], version: str
) -> None:
    w = make_world(version)
    w.token_ok(TOKEN)
    w.items({"json": items_body(A1)})
    w.get()
    (request,) = w.token_requests()
    assert request.url == TOKEN_URLS[version]
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert urllib.parse.parse_qs(request.text) == {
        "grant_type": ["client_credentials"],
        "client_id": [CREDENTIAL_ID],
        "client_secret": [SECRET],
        "scope": ["creatorsapi/default"],
    }
    assert request.timeout == TIMEOUT


@pytest.mark.parametrize("version", ["3.1", "3.2", "3.3"])
def test_lwa_token_request_is_json(make_world: Callable[..., World], version: str) -> None:
    w = make_world(version)
    w.token_ok(TOKEN)
    w.items({"json": items_body(A1)})
    w.get()
    (request,) = w.token_requests()
    assert request.url == TOKEN_URLS[version]
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "grant_type": "client_credentials",
        "client_id": CREDENTIAL_ID,
        "client_secret": SECRET,
        "scope": "creatorsapi::default",
    }
    assert request.timeout == TIMEOUT


@pytest.mark.parametrize("version", ["2.2", "3.3"])
def test_token_url_override_wins(make_world: Callable[..., World], version: str) -> None:
    w = make_world(version, AMAZON_TOKEN_URL="https://sandbox.test/token")
    w.token_ok(TOKEN)
    w.items({"json": items_body(A1)})
    w.get()
    assert [r.url for r in w.mock.request_history] == ["https://sandbox.test/token", ITEMS_URL]


def test_token_is_reused_across_calls(world: World) -> None:
    world.items({"json": items_body(A1)}, {"json": items_body(A2)}, {"json": items_body(A3)})
    for asin in (A1, A2, A3):
        world.get(asin)
    assert len(world.token_requests()) == 1
    assert len(world.item_requests()) == 3


@pytest.mark.parametrize(
    ("expires_in", "still_valid_at", "refreshed_at"),
    [
        (3600, 3539, 3541),  # margin: 60 s
        (100, 89, 91),  # margin: 10 % of a short lifetime
        ("3600", 3539, 3541),  # a numeric string is fine
        (None, 3539, 3541),  # missing → 3600
    ],
)
def test_token_is_refreshed_shortly_before_expiry(
    world: World, expires_in: Any, still_valid_at: float, refreshed_at: float
) -> None:
    world.token_ok(TOKEN, TOKEN_2, expires_in=expires_in)
    world.items(*[{"json": items_body(A1)}] * 3)
    start = world.clock.now
    world.get()
    world.clock.now = start + still_valid_at
    world.get()
    assert len(world.token_requests()) == 1
    world.clock.now = start + refreshed_at
    world.get()
    assert len(world.token_requests()) == 2
    assert world.item_requests()[-1].headers["Authorization"].startswith(f"Bearer {TOKEN_2}")


class CountingLock:
    """Wraps the client's token lock to know when every thread is waiting on it."""

    def __init__(self) -> None:
        self.inner = threading.Lock()
        self.attempts = 0
        self.changed = threading.Condition()

    def __enter__(self) -> CountingLock:
        with self.changed:
            self.attempts += 1
            self.changed.notify_all()
        self.inner.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.release()


def test_concurrent_calls_share_one_token_request(world: World) -> None:
    threads = 20
    lock = CountingLock()
    world.client._tokens._token_lock = lock  # type: ignore[assignment]

    def token(request: Any, context: Any) -> dict[str, Any]:
        # Answer only once all threads are queued on the lock: the worst case.
        with lock.changed:
            assert lock.changed.wait_for(lambda: lock.attempts >= threads, timeout=10)
        return {"access_token": TOKEN, "expires_in": 3600}

    def items(request: Any, context: Any) -> dict[str, Any]:
        return items_body(*request.json()["itemIds"])

    world.mock.post(world.token_url, json=token)
    world.mock.post(ITEMS_URL, json=items)
    asins = [f"B0CONCUR{n:02d}" for n in range(threads)]
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda a: world.get(a), asins))
    assert len(world.token_requests()) == 1
    assert [list(r.items) for r in results] == [[a] for a in asins]


def test_401_refresh_is_single_flight_too(world: World) -> None:
    world.token_ok(TOKEN, TOKEN_2, TOKEN_2)
    # All eight hold the first token before any call is sent, so all eight get its 401
    # and ask for a fresh token. (requests-mock answers one request at a time, so the
    # barrier sits in before_call, which runs right before each getItems attempt.)
    first_attempts = threading.Barrier(8, timeout=10)
    attempts = itertools.count()

    def before_call(credentials: Credentials) -> None:
        if next(attempts) < 8:
            first_attempts.wait()

    def items(request: Any, context: Any) -> dict[str, Any]:
        if TOKEN in request.headers["Authorization"]:
            context.status_code = 401
            return {"reason": "TokenExpired", "message": "expired"}
        return items_body(*request.json()["itemIds"])

    world.mock.post(ITEMS_URL, json=items)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: world.get(f"B0RETRY{n:03d}", before_call=before_call), range(8)))
    sent_with = [TOKEN in r.headers["Authorization"] for r in world.item_requests()]
    assert sent_with.count(True) == 8  # every thread was refused the first token...
    assert len(world.token_requests()) == 2


def test_401_drops_the_token_and_retries_once(world: World) -> None:
    world.token_ok(TOKEN, TOKEN_2)
    world.items({"status_code": 401, "json": {"reason": "InvalidToken"}}, {"json": items_body(A1)})
    used: list[Credentials] = []
    result = world.get(before_call=used.append)
    assert list(result.items) == [A1]
    first, second = world.item_requests()
    assert first.headers["Authorization"].startswith(f"Bearer {TOKEN}")
    assert second.headers["Authorization"].startswith(f"Bearer {TOKEN_2}")
    assert len(world.token_requests()) == 2
    assert len(used) == 2  # the quota layer is asked for a slot for each attempt
    assert [c["outcome"] for c in world.calls] == ["ok", "token_rejected", "ok", "ok"]
    assert world.events == []


def test_401_twice_is_credentials_rejected(world: World) -> None:
    world.token_ok(TOKEN, TOKEN_2, "Atza|third")
    world.items({"status_code": 401, "json": {}}, {"status_code": 401, "json": {}})
    error = world.fail()
    assert error.code is ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE
    assert error.details == {"reason": "credentials_rejected", "status": 401}
    assert len(world.item_requests()) == 2
    assert [name for name, _ in world.events] == ["credentials_rejected"]
    # the refused token is not reused by the next call
    world.items({"json": items_body(A1)})
    world.get()
    assert world.item_requests()[-1].headers["Authorization"].startswith("Bearer Atza|third")


# --- invalid_client and rotation ------------------------------------------------------


def invalid_client(status: int) -> dict[str, Any]:
    return {
        "status_code": status,
        "json": {"error": "invalid_client", "error_description": "Client authentication failed"},
    }


def secret_of(request: Any) -> str:
    try:
        return str(request.json()["client_secret"])
    except ValueError:
        return urllib.parse.parse_qs(request.text)["client_secret"][0]


@pytest.mark.parametrize("status", [400, 401])
def test_invalid_client_rereads_credentials_once_and_retries(world: World, status: int) -> None:
    def token(request: Any, context: Any) -> dict[str, Any]:
        if secret_of(request) == NEW_SECRET:
            return {"access_token": TOKEN_2, "expires_in": 3600}
        context.status_code = status
        return invalid_client(status)["json"]

    world.mock.post(world.token_url, json=token)
    world.items({"json": items_body(A1)}, {"json": items_body(A2)})
    world.client._credentials.get()  # the provider caches the old secret …
    world.backend.secret = NEW_SECRET  # … then an operator rotates it
    loads_before = world.backend.loads

    result = world.get()

    assert world.backend.loads == loads_before + 1  # exactly one re-read
    assert [secret_of(r) for r in world.token_requests()] == [SECRET, NEW_SECRET]
    assert result.credentials.credential_secret == NEW_SECRET
    assert world.item_requests()[0].headers["Authorization"].startswith(f"Bearer {TOKEN_2}")
    assert world.events == []
    world.get(A2)  # the new set's token is cached; no more reloads or token calls
    assert world.backend.loads == loads_before + 1
    assert len(world.token_requests()) == 2


def test_invalid_client_after_rotation_is_credentials_rejected(world: World) -> None:
    world.mock.post(world.token_url, [invalid_client(401), invalid_client(401)])
    world.client._credentials.get()
    world.backend.secret = NEW_SECRET
    loads_before = world.backend.loads
    error = world.fail()
    assert error.details["reason"] == "credentials_rejected"
    assert world.backend.loads == loads_before + 1
    assert [secret_of(r) for r in world.token_requests()] == [SECRET, NEW_SECRET]
    assert world.item_requests() == []
    ((name, details),) = world.events
    assert name == "credentials_rejected"
    assert details["kind"] == "token"
    assert details["version"] == world.backend.version


def test_invalid_client_with_unchanged_credentials_does_not_retry(world: World) -> None:
    world.mock.post(world.token_url, [invalid_client(400)])
    error = world.fail()
    assert error.details["reason"] == "credentials_rejected"
    assert len(world.token_requests()) == 1  # the same secret would be refused again
    assert [name for name, _ in world.events] == ["credentials_rejected"]


def test_reload_failure_is_credentials_unavailable(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.mock.post(world.token_url, [invalid_client(401)])
    world.client._credentials.get()
    world.backend.error = "1Password item 'Amazon Creators API' has no field 'credential-secret'"
    error = world.fail()
    assert error.details["reason"] == "credentials_unavailable"
    # What to fix is for operators (the log), not for the caller's browser.
    assert "has no field 'credential-secret'" not in error.message
    assert "has no field 'credential-secret'" in caplog.text


def test_credentials_error_is_credentials_unavailable(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.backend.error = "environment variable AMAZON_CREATORS_CREDENTIAL_ID is not set"
    error = world.fail()
    assert error.code is ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE
    assert error.details == {"reason": "credentials_unavailable"}
    assert "AMAZON_CREATORS_CREDENTIAL_ID" not in error.message
    assert "AMAZON_CREATORS_CREDENTIAL_ID is not set" in caplog.text
    assert world.mock.request_history == []


# --- getItems request -------------------------------------------------------------------


def test_get_items_request_shape(world: World) -> None:
    world.items({"json": items_body(A1, A2)})
    world.client.get_items(" WWW.Amazon.com ", [A1.lower(), A2, A1])
    (request,) = world.item_requests()
    assert request.method == "POST"
    assert request.url == ITEMS_URL
    expected_auth = f"Bearer {TOKEN}"
    if world.backend.version.startswith("2."):
        expected_auth += f", Version {world.backend.version}"
    assert request.headers["Authorization"] == expected_auth
    assert request.headers["x-marketplace"] == MARKET
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "partnerTag": TAG,
        "itemIds": [A1, A2],
        "resources": list(GET_ITEMS_RESOURCES),
    }
    assert request.timeout == TIMEOUT


def test_redirects_are_never_followed(world: World) -> None:
    world.items({"status_code": 302, "headers": {"Location": "https://evil.example/"}})
    error = world.fail()
    assert error.details["reason"] == "invalid_response"
    assert [r.url for r in world.mock.request_history][-1] == ITEMS_URL


def test_an_unparsable_redirect_location_is_invalid_not_a_500(world: World) -> None:
    # requests parses Location even with allow_redirects=False (to prepare
    # Response.next) and raises a bare ValueError on one like this.
    world.items({"status_code": 302, "headers": {"Location": "http://[::1/x"}})
    error = world.fail()
    assert error.details["reason"] == "invalid_response"
    assert world.calls[-1]["outcome"] == "invalid_response"


@pytest.mark.parametrize(
    "asins",
    [[], ["B0TOOSHORT"[:9]], ["not-an-asin"], [f"B0MANYASN{n}" for n in range(11)]],
)
def test_bad_asin_lists_are_programming_errors(world: World, asins: list[str]) -> None:
    with pytest.raises(ValueError, match="ASIN"):
        world.client.get_items(MARKET, asins)
    assert world.mock.request_history == []


def test_ten_distinct_asins_after_dedup_are_fine(world: World) -> None:
    asins = [f"B0MANYASN{n}" for n in range(10)]
    world.items({"json": items_body(*asins)})
    assert len(world.get(*asins, *asins).items) == 10


def test_before_call_gets_the_credentials_used(world: World) -> None:
    world.items({"json": items_body(A1)})
    seen: list[Credentials] = []
    result = world.get(before_call=seen.append)
    assert seen == [result.credentials]
    assert result.credentials.partner_tag == TAG


@pytest.mark.parametrize(
    "error",
    [rate_limited(2, source="local", message="slow down"), RuntimeError("quota store down")],
)
def test_before_call_exception_propagates_unchanged(world: World, error: Exception) -> None:
    def refuse(credentials: Credentials) -> None:
        raise error

    with pytest.raises(type(error)) as info:
        world.get(before_call=refuse)
    assert info.value is error
    assert world.item_requests() == []


def test_token_requests_do_not_call_before_call(world: World) -> None:
    world.token_ok(TOKEN, TOKEN_2)
    world.items({"status_code": 401, "json": {}}, {"json": items_body(A1)})
    calls: list[int] = []

    def count(credentials: Credentials) -> None:
        calls.append(len(world.mock.request_history))

    world.get(before_call=count)
    # before each getItems attempt, after the token request that preceded it
    assert calls == [1, 3]


# --- outcome mapping ----------------------------------------------------------------------


@dataclass
class Case:
    id: str
    answer: dict[str, Any]
    code: ErrorCode = ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE
    details: dict[str, Any] = field(default_factory=dict)
    event: str | None = None


HTML = "<html><body><h1>Service Unavailable</h1></body></html>"
GETITEMS_CASES = [
    Case("429-seconds", {"status_code": 429, "headers": {"Retry-After": "7"}},
         ErrorCode.AMAZON_RATE_LIMITED, {"source": "amazon", "retryAfter": 7}),
    Case("429-fraction", {"status_code": 429, "headers": {"Retry-After": "2.2"}},
         ErrorCode.AMAZON_RATE_LIMITED, {"source": "amazon", "retryAfter": 3}),
    Case("429-past-date", {"status_code": 429,
                           "headers": {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}},
         ErrorCode.AMAZON_RATE_LIMITED, {"source": "amazon", "retryAfter": 1}),
    Case("429-garbage", {"status_code": 429, "headers": {"Retry-After": "soon"}},
         ErrorCode.AMAZON_RATE_LIMITED, {"source": "amazon", "retryAfter": 1}),
    Case("429-none", {"status_code": 429, "json": {"message": "TooManyRequests"}},
         ErrorCode.AMAZON_RATE_LIMITED, {"source": "amazon", "retryAfter": 1}),
    Case("500", {"status_code": 500, "text": HTML},
         details={"reason": "server_error", "status": 500}),
    Case("503", {"status_code": 503, "json": {}},
         details={"reason": "server_error", "status": 503}),
    Case("connect-timeout", {"exc": requests.exceptions.ConnectTimeout},
         details={"reason": "timeout"}),
    Case("read-timeout", {"exc": requests.exceptions.ReadTimeout}, details={"reason": "timeout"}),
    Case("connection-refused", {"exc": requests.exceptions.ConnectionError},
         details={"reason": "connection_error"}),
    Case("ssl", {"exc": requests.exceptions.SSLError}, details={"reason": "connection_error"}),
    Case("proxy", {"exc": requests.exceptions.ProxyError}, details={"reason": "connection_error"}),
    Case("chunked", {"exc": requests.exceptions.ChunkedEncodingError},
         details={"reason": "invalid_response"}),
    Case("200-html", {"status_code": 200, "text": HTML},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-truncated", {"status_code": 200, "text": '{"itemsResult": {"items": [{"asin": "B0'},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-empty", {"status_code": 200, "text": ""},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-list", {"json": [item(A1)]}, details={"reason": "invalid_response", "status": 200}),
    Case("200-no-result", {"json": {}}, details={"reason": "invalid_response", "status": 200}),
    Case("200-result-not-object", {"json": {"itemsResult": "x"}},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-items-not-list", {"json": {"itemsResult": {"items": {"asin": A1}}}},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-item-without-asin", {"json": {"itemsResult": {"items": [{"itemInfo": {}}]}}},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-item-not-object", {"json": {"itemsResult": {"items": [A1]}}},
         details={"reason": "invalid_response", "status": 200}),
    Case("200-errors-not-list", {"json": {"errors": {"code": "x"}}},
         details={"reason": "invalid_response", "status": 200}),
    Case("403-not-eligible", {"status_code": 403, "json": {
        "type": "AccessDeniedException", "message": "not eligible",
        "reason": "AssociateNotEligible"}},
         details={"reason": "associate_not_eligible", "status": 403,
                  "upstreamCode": "AssociateNotEligible"}, event="associate_not_eligible"),
    Case("403-not-eligible-paapi", {"status_code": 403, "json": {"Errors": [
        {"Code": "AssociateNotEligible", "Message": "..."}]}},
         details={"reason": "associate_not_eligible", "status": 403,
                  "upstreamCode": "AssociateNotEligible"}, event="associate_not_eligible"),
    Case("403-other", {"status_code": 403, "json": {"reason": "AccessDenied"}},
         details={"reason": "credentials_rejected", "status": 403, "upstreamCode": "AccessDenied"},
         event="credentials_rejected"),
    Case("403-html", {"status_code": 403, "text": HTML},
         details={"reason": "credentials_rejected", "status": 403}, event="credentials_rejected"),
    Case("400-partner-tag", {"status_code": 400, "json": {
        "type": "ValidationException", "message": "bad tag", "reason": "InvalidPartnerTag"}},
         details={"reason": "invalid_partner_tag", "status": 400,
                  "upstreamCode": "InvalidPartnerTag"}),
    Case("400-associate-paapi", {"status_code": 400, "json": {"Errors": [
        {"__type": "com.amazon.paapi5#ErrorData", "Code": "InvalidAssociate"}]}},
         details={"reason": "invalid_partner_tag", "status": 400,
                  "upstreamCode": "InvalidAssociate"}),
    Case("400-partner-tag-lowercase-list", {"status_code": 400,
                                            "json": {"errors": [{"code": "InvalidPartnerTag"}]}},
         details={"reason": "invalid_partner_tag", "status": 400,
                  "upstreamCode": "InvalidPartnerTag"}),
    Case("400-validation", {"status_code": 400, "json": {"reason": "FieldValidationFailed",
                                                         "message": "resources[0] invalid"}},
         details={"reason": "request_rejected", "status": 400,
                  "upstreamCode": "FieldValidationFailed"}),
    Case("404-html", {"status_code": 404, "text": HTML},
         details={"reason": "request_rejected", "status": 404}),
    Case("405", {"status_code": 405, "json": {}},
         details={"reason": "request_rejected", "status": 405}),
]  # fmt: skip


@pytest.mark.parametrize("case", GETITEMS_CASES, ids=lambda c: c.id)
def test_get_items_outcomes(world: World, case: Case) -> None:
    world.items(case.answer)
    error = world.fail()
    assert error.code is case.code
    assert error.details == case.details
    assert [name for name, _ in world.events] == ([case.event] if case.event else [])
    if case.code is ErrorCode.AMAZON_RATE_LIMITED:
        assert error.status == 429
        assert error.headers == {"Retry-After": str(case.details["retryAfter"])}
    else:
        assert error.status == 502
    last = world.calls[-1]
    assert last["kind"] == "getItems"
    expected_outcome = (
        "rate_limited" if case.code is ErrorCode.AMAZON_RATE_LIMITED else (case.details["reason"])
    )
    assert last["outcome"] == expected_outcome
    assert last["status"] == case.answer.get("status_code", None if "exc" in case.answer else 200)


TOKEN_CASES = [
    Case("500", {"status_code": 500, "text": HTML},
         details={"reason": "server_error", "status": 500}),
    Case("timeout", {"exc": requests.exceptions.ConnectTimeout}, details={"reason": "timeout"}),
    Case("refused", {"exc": requests.exceptions.ConnectionError},
         details={"reason": "connection_error"}),
    Case("429", {"status_code": 429, "headers": {"Retry-After": "30"}},
         ErrorCode.AMAZON_RATE_LIMITED, {"source": "amazon", "retryAfter": 30}),
    Case("no-access-token", {"json": {"token_type": "bearer"}},
         details={"reason": "invalid_response"}),
    Case("html", {"status_code": 200, "text": HTML}, details={"reason": "invalid_response"}),
    Case("invalid-scope", {"status_code": 400, "json": {"error": "invalid_scope"}},
         details={"reason": "credentials_rejected", "status": 400}, event="credentials_rejected"),
    Case("unauthorized-client", {"status_code": 401, "json": {"error": "unauthorized_client"}},
         details={"reason": "credentials_rejected", "status": 401}, event="credentials_rejected"),
    Case("404", {"status_code": 404, "text": "Not Found"},
         details={"reason": "request_rejected", "status": 404}),
]  # fmt: skip


@pytest.mark.parametrize("case", TOKEN_CASES, ids=lambda c: c.id)
def test_token_outcomes(world: World, case: Case) -> None:
    world.mock.post(world.token_url, [case.answer])
    error = world.fail()
    assert error.code is case.code
    assert error.details == case.details
    assert [name for name, _ in world.events] == ([case.event] if case.event else [])
    assert world.item_requests() == []
    assert world.calls[-1]["kind"] == "token"


def test_read_timeout_while_streaming_the_body_is_a_timeout() -> None:
    import urllib3.exceptions

    wrapped = requests.exceptions.ConnectionError(
        urllib3.exceptions.ReadTimeoutError(None, "/x", "Read timed out.")  # type: ignore[arg-type]
    )
    assert creators._is_timeout(wrapped)
    assert not creators._is_timeout(requests.exceptions.ConnectionError("refused"))


def test_body_trickling_past_the_time_budget_is_a_timeout(world: World) -> None:
    world.items({"json": items_body(A1)})

    def jump(credentials: Credentials) -> None:
        class Jumping(Clock):
            def __call__(self) -> float:
                self.now += 10.0  # each look at the clock finds 10 s gone
                return self.now

        world.client._clock = Jumping(world.clock.now)

    error = world.fail(before_call=jump)
    assert error.details["reason"] == "timeout"


def test_implausibly_large_body_is_invalid(world: World) -> None:
    world.items({"content": b"{" + b" " * (creators.MAX_BODY_BYTES + 1) + b"}"})
    assert world.fail().details["reason"] == "invalid_response"


def test_a_real_hanging_server_times_out_promptly() -> None:
    with loopback_servers() as start:
        token_server: Loopback = start(
            lambda seen: http_response(200, json.dumps({"access_token": TOKEN}).encode())
        )
        api_server: Loopback = start(lambda seen: HANG)
        settings = make_settings(
            AMAZON_CREATORS_API_HOST=api_server.url,
            AMAZON_TOKEN_URL=token_server.url + "/token",
            AMAZON_HTTP_TIMEOUT=[0.5, 0.3],
        )
        client = CreatorsClient(settings, CredentialProvider(Backend("3.1"), ttl_seconds=900))
        with pytest.raises(AmazonImportError) as info:
            client.get_items(MARKET, [A1])
        client.close()
    assert info.value.details["reason"] == "timeout"
    assert len(api_server.seen) == 1  # and no retry


# --- per-item errors ------------------------------------------------------------------------


def test_per_item_errors_map_to_asins(world: World) -> None:
    world.items({"json": items_body(A1, errors=[
        {"code": "ItemNotAccessible",
         "message": f"The ItemId {A2.lower()} is not accessible through the Creators API."},
        {"code": "InvalidParameterValue", "message": "The ItemId provided is invalid.",
         "itemId": A3},
    ])})  # fmt: skip
    result = world.get(A1, A2, A3)
    assert list(result.items) == [A1]
    assert result.errors == {
        A2: ItemError(
            "ItemNotAccessible",
            f"Amazon reports that item {A2} is not available through the Creators API.",
        ),
        A3: ItemError("InvalidParameterValue", f"Amazon did not accept ASIN {A3}."),
    }
    # our words, never Amazon's
    assert not any("is not accessible through" in e.message for e in result.errors.values())


def test_all_items_errored_without_items_result(world: World) -> None:
    world.items({"json": {"errors": [{"code": "ItemNotAccessible", "message": f"ItemId {A1}"}]}})
    result = world.get(A1)
    assert result.items == {}
    assert result.errors[A1].code == "ItemNotAccessible"


def test_unmapped_error_applies_to_the_asins_without_data(world: World) -> None:
    world.items({"json": items_body(A1, errors=[{"Code": "ItemNotAccessible", "Message": "nope"}])})
    result = world.get(A1, A2, A3)
    assert set(result.errors) == {A2, A3}
    assert {e.code for e in result.errors.values()} == {"ItemNotAccessible"}
    assert all(asin in error.message for asin, error in result.errors.items())


def test_asin_without_item_or_error_gets_item_not_returned(world: World) -> None:
    world.items({"json": items_body(A1)})
    result = world.get(A1, A2)
    assert result.errors == {
        A2: ItemError("ItemNotReturned", f"Amazon returned no data for item {A2}.")
    }


def test_error_for_an_asin_that_has_data_is_ignored(world: World) -> None:
    world.items({"json": items_body(A1, errors=[{"code": "ItemNotAccessible", "itemId": A1}])})
    result = world.get(A1)
    assert list(result.items) == [A1]
    assert result.errors == {}


def test_odd_error_codes_are_sanitized(world: World) -> None:
    world.items({"json": {"errors": [{"code": "<script>alert(1)</script>", "itemId": A1}]}})
    assert world.get(A1).errors[A1] == ItemError(
        "Unknown", f"Amazon could not return data for item {A1}."
    )


def test_items_we_did_not_ask_for_are_ignored_and_logged(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.items({"json": items_body(A1, "B0INTRUDER")})
    with caplog.at_level(logging.WARNING, logger="arda_amazon_bp.creators"):
        result = world.get(A1)
    assert list(result.items) == [A1]
    assert "B0INTRUDER" in caplog.text


def test_asins_in_items_are_matched_case_insensitively(world: World) -> None:
    world.items({"json": {"itemsResult": {"items": [item(A1.lower())]}}})
    assert list(world.get(A1).items) == [A1]


@pytest.mark.parametrize("status", [404, 400])
def test_a_4xx_listing_only_item_errors_is_a_result(world: World, status: int) -> None:
    message = f"The ItemId {A1} is not accessible."
    world.items(
        {
            "status_code": status,
            "json": {"errors": [{"code": "ItemNotAccessible", "message": message}]},
        }
    )
    result = world.get(A1)
    assert result.errors[A1].code == "ItemNotAccessible"
    assert world.calls[-1]["outcome"] == "ok"


def test_a_404_no_results_without_asin_is_a_result(world: World) -> None:
    world.items({"status_code": 404, "json": {"errors": [{"code": "NoResults", "message": "x"}]}})
    assert world.get(A1, A2).errors.keys() == {A1, A2}


def test_a_400_error_naming_no_asin_is_request_rejected(world: World) -> None:
    world.items({"status_code": 400, "json": {"errors": [{"code": "ItemNotAccessible"}]}})
    assert world.fail().details["reason"] == "request_rejected"


# --- observer and events ----------------------------------------------------------------------


def test_observer_gets_one_event_per_upstream_call(world: World) -> None:
    world.items({"json": items_body(A1, A2)})
    world.mock.post(world.token_url, [{"json": {"access_token": TOKEN, "expires_in": 3600}}])
    world.get(A1, A2)
    assert world.calls == [
        {"kind": "token", "marketplace": MARKET, "asins": [], "status": 200,
         "outcome": "ok", "elapsed": 0.0},
        {"kind": "getItems", "marketplace": MARKET, "asins": [A1, A2], "status": 200,
         "outcome": "ok", "elapsed": 0.0},
    ]  # fmt: skip


def test_observer_elapsed_comes_from_the_clock(world: World) -> None:
    def slow(request: Any, context: Any) -> dict[str, Any]:
        world.clock.now += 0.25
        return items_body(A1)

    world.mock.post(ITEMS_URL, json=slow)
    world.get()
    assert world.calls[-1]["elapsed"] == pytest.approx(0.25)


def test_observer_failures_never_break_an_import(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: Any) -> None:
        raise RuntimeError("metrics down")

    world.client._observer = broken
    world.client._on_event = lambda name, details: broken(details)
    world.items(
        {"json": items_body(A1)}, {"status_code": 403, "json": {"reason": "AssociateNotEligible"}}
    )
    assert list(world.get().items) == [A1]
    assert world.fail(A2).details["reason"] == "associate_not_eligible"
    assert "observer failed" in caplog.text
    assert "upstream-event handler failed" in caplog.text


def test_associate_not_eligible_event_details(world: World) -> None:
    world.items({"status_code": 403, "json": {"reason": "AssociateNotEligible"}})
    world.fail()
    ((name, details),) = world.events
    assert name == "associate_not_eligible"
    assert details == {
        "kind": "getItems",
        "status": 403,
        "marketplace": MARKET,
        "version": world.backend.version,
        "credentialKey": Credentials(CREDENTIAL_ID, SECRET, world.backend.version, TAG).quota_key,
        "partnerTag": TAG,
    }


def test_one_log_line_per_call_info_for_success_warning_for_failure(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    world.items({"json": items_body(A1)}, {"status_code": 503, "json": {}})
    with caplog.at_level(logging.INFO, logger="arda_amazon_bp.creators"):
        world.get()
        world.fail()
    lines = [r for r in caplog.records if r.getMessage().startswith("amazon upstream call")]
    assert [(r.levelno, r.amazon_call["kind"], r.amazon_call["outcome"]) for r in lines] == [  # type: ignore[attr-defined]
        (logging.INFO, "token", "ok"),
        (logging.INFO, "getItems", "ok"),
        (logging.WARNING, "getItems", "server_error"),
    ]
    assert "asins=1 status=503 outcome=server_error" in lines[-1].getMessage()


# --- secrets --------------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[World], None]] = {
    "success": lambda w: w.items({"json": items_body(A1)}),
    "401-echoing-token-twice": lambda w: (
        w.token_ok(TOKEN, TOKEN),
        w.items(*[{"status_code": 401, "json": {"message": f"Token {TOKEN} expired"}}] * 2),
    ),
    "401-then-ok": lambda w: (
        w.token_ok(TOKEN, TOKEN_2),
        w.items({"status_code": 401, "text": f"Authorization: Bearer {TOKEN}"},
                {"json": items_body(A1)}),
    ),
    "400-echoing-secret": lambda w: w.items(
        {"status_code": 400, "json": {"reason": "X", "message": f"client_secret={SECRET} bad"}}),
    "403-echoing-bearer": lambda w: w.items(
        {"status_code": 403, "json": {"message": f"header was Bearer {TOKEN}"}}),
    "403-not-eligible": lambda w: w.items(
        {"status_code": 403, "json": {"reason": "AssociateNotEligible", "message": TOKEN}}),
    "500-html-with-token": lambda w: w.items({"status_code": 500, "text": f"<p>{TOKEN}</p>"}),
    "200-garbage-with-secret": lambda w: w.items({"text": f"<html>{SECRET}</html>"}),
    "item-error-echoing-token": lambda w: w.items(
        {"json": {"errors": [{"code": "ItemNotAccessible", "message": f"{A1} {TOKEN} {SECRET}"}]}}),
    "long-message-cut-inside-the-secret": lambda w: w.items(
        {"status_code": 400, "json": {"message": "x" * 190 + SECRET}}),
    "timeout": lambda w: w.items({"exc": requests.exceptions.ReadTimeout(f"read {TOKEN}")}),
    "connection": lambda w: w.items({"exc": requests.exceptions.ConnectionError(SECRET)}),
    "token-invalid-client-echoing-secret": lambda w: w.mock.post(w.token_url, [
        {"status_code": 401, "json": {"error": "invalid_client",
                                      "error_description": f"bad secret {SECRET}"}}]),
    "token-500-echoing-secret": lambda w: w.mock.post(
        w.token_url, [{"status_code": 500, "text": SECRET}]),
    "token-429": lambda w: w.mock.post(w.token_url, [{"status_code": 429, "text": SECRET}]),
}  # fmt: skip


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_secret_or_token_in_logs_errors_events_or_reprs(
    world: World, caplog: pytest.LogCaptureFixture, scenario: str
) -> None:
    SCENARIOS[scenario](world)
    seen: list[str] = []
    error: AmazonImportError | None = None
    with caplog.at_level(logging.DEBUG):
        try:
            result = world.get()
            seen += [repr(result), str(result)]
        except AmazonImportError as exc:
            error = exc
    if error is not None:
        seen += [str(error), repr(error), json.dumps(error.to_dict()), repr(error.headers)]
        assert error.__cause__ is None  # no chained upstream exception text either
    seen += [caplog.text, repr(world.client), str(world.client)]
    seen += [repr(r.__dict__) for r in caplog.records]
    seen += [repr(world.calls), repr(world.events)]
    text = "\n".join(seen)
    for secret in (SECRET, TOKEN, TOKEN_2, SECRET[:24], TOKEN[5:20]):
        assert secret not in text
    assert len(caplog.records) >= 1


# --- process, session, lifecycle ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_url", "expected"),
    [
        (None, {API, *TOKEN_URLS.values()}),
        ("https://sandbox.test/token", {API, "https://sandbox.test/token"}),
    ],
)
def test_session_allows_only_the_api_and_token_urls(
    monkeypatch: pytest.MonkeyPatch, token_url: str | None, expected: set[str]
) -> None:
    made: list[set[str]] = []
    real = creators.make_session

    def spy(urls: Any) -> requests.Session:
        made.append(set(urls))
        return real(urls)

    monkeypatch.setattr(creators, "make_session", spy)
    client = CreatorsClient(
        make_settings(AMAZON_TOKEN_URL=token_url), CredentialProvider(Backend("2.1"), 900)
    )
    client._http()
    assert made == [expected]
    client.close()


def test_session_is_created_lazily_once_and_again_after_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[requests.Session] = []
    real = creators.make_session
    monkeypatch.setattr(creators, "make_session", lambda urls: made.append(real(urls)) or made[-1])
    client = CreatorsClient(make_settings(), CredentialProvider(Backend("2.1"), 900))
    assert made == []  # nothing at construction (gunicorn --preload imports before forking)
    first = client._http()
    assert client._http() is first
    monkeypatch.setattr(creators.os, "getpid", lambda: -42)  # as seen from a forked worker
    second = client._http()
    assert second is not first
    assert client._http() is second
    forks._after_fork_in_child()  # the at-fork hook resets too
    assert client._http() is not second
    client.close()


def test_close_forgets_tokens_and_the_client_stays_usable(world: World) -> None:
    world.token_ok(TOKEN, TOKEN_2)
    world.items({"json": items_body(A1)}, {"json": items_body(A1)})
    world.get()
    world.client.close()
    world.get()
    assert len(world.token_requests()) == 2


def test_repr_shows_nothing_secret(world: World) -> None:
    world.items({"json": items_body(A1)})
    result = world.get()
    text = repr(world.client) + repr(result) + repr(world.client._tokens)
    assert SECRET not in text
    assert TOKEN not in text
    assert "creatorsapi.amazon" in repr(world.client)
