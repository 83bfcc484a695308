"""The import route end to end: every row of the error matrix, success shapes, OpenAPI."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from fixtures_app import (
    ACCESS_TOKEN,
    CREDENTIAL_SECRET,
    GET_ITEMS_URL,
    PARTNER_TAG,
    USER_TOKEN,
    make_item,
    post_import,
)
from flask import Flask, abort, g

from arda_amazon_bp import blueprint, hookimpl
from arda_amazon_bp.errors import ERROR_STATUSES, ErrorCode

US_LINK = "https://www.amazon.com/dp/B0TESTAAA1"


def assert_envelope(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error envelope: JSON, exact keys, the code's status, no traceback."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["details"]["requestId"] == response.headers["X-Request-ID"]
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and CREDENTIAL_SECRET not in text and ACCESS_TOKEN not in text
    return body["error"]


# -- success ----------------------------------------------------------------------------


def test_complete_product_is_200_with_every_field(client, amazon):
    amazon.add(make_item("B0TESTAAA1"))
    response = post_import(
        client, {"url": "  https://www.amazon.com/Gloves/dp/b0testaaa1/ref=x?tag=other-20  "}
    )
    assert response.status_code == 200
    product = response.get_json()
    assert product["asin"] == "B0TESTAAA1"
    assert product["marketplace"] == "www.amazon.com"
    assert product["detailPageUrl"] == f"https://www.amazon.com/dp/B0TESTAAA1?tag={PARTNER_TAG}"
    assert product["title"] == "Nitrile Gloves B0TESTAAA1"
    assert product["brand"] == "Medline"
    assert product["price"] == {"amount": 12.99, "currency": "USD", "display": "$12.99"}
    assert product["unitCount"] == 100
    assert product["upc"] == "080196735482"
    assert product["missingFields"] == []
    assert product["retrievedAt"].endswith("Z")
    assert amazon.get_items_calls[0]["partnerTag"] == PARTNER_TAG


def test_missing_price_is_206_and_listed(client, amazon):
    amazon.add(make_item("B0TESTAAA2", offersV2=None))
    response = post_import(client, {"url": "https://amazon.com/dp/B0TESTAAA2"})
    assert response.status_code == 206
    product = response.get_json()
    assert product["price"] is None
    assert product["missingFields"] == ["price"]
    assert product["title"] is not None


def test_item_not_accessible_is_206_with_null_fields_and_notice(client, amazon):
    response = post_import(client, {"url": "https://www.amazon.com/dp/B0NOTHERE1"})
    assert response.status_code == 206
    product = response.get_json()
    assert product["title"] is None and product["imageUrl"] is None and product["price"] is None
    assert sorted(product["missingFields"]) == ["imageUrl", "price", "title"]
    assert product["notices"][0]["code"] == "ItemNotAccessible"
    assert product["detailPageUrl"].endswith(f"?tag={PARTNER_TAG}")


def test_success_carries_daily_rate_limit_headers(client, amazon):
    amazon.add(make_item("B0TESTAAA1"))
    response = post_import(client, {"url": US_LINK})
    assert response.headers["RateLimit-Limit"] == "8640"
    assert int(response.headers["RateLimit-Remaining"]) == 8639
    assert int(response.headers["RateLimit-Reset"]) > 0


def test_request_id_from_host_header_is_echoed(client, amazon):
    response = post_import(
        client, {"url": "https://example.com/"}, headers={"X-Request-ID": "abc-123"}
    )
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.get_json()["error"]["details"]["requestId"] == "abc-123"


# -- the error matrix ---------------------------------------------------------------------


def test_no_principal_is_401_with_www_authenticate(app, amazon):
    response = post_import(app.test_client(), {"url": US_LINK})
    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
    assert response.headers["WWW-Authenticate"]
    assert amazon.get_items_calls == []


def test_auth_runs_before_body_validation(app):
    response = post_import(app.test_client(), None, data="not json", content_type="text/plain")
    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_no_auth_hook_refuses_everyone(make_app, amazon):
    app = make_app(auth=False)
    response = post_import(
        app.test_client(), {"url": US_LINK}, headers={"Authorization": f"Bearer {USER_TOKEN}"}
    )
    assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")


def test_auth_disabled_lets_demo_requests_through(make_app, amazon, caplog):
    amazon.add(make_item("B0TESTAAA1"))
    app = make_app(auth=False, AMAZON_IMPORT_AUTH_DISABLED=True)
    assert "AMAZON_IMPORT_AUTH_DISABLED" in caplog.text
    assert post_import(app.test_client(), {"url": US_LINK}).status_code == 200


class Answers:
    """An auth plugin that answers ``principal`` for every request."""

    def __init__(self, principal: Any) -> None:
        self.principal = principal

    @hookimpl
    def arda_amazon_authenticate(self, request: Any) -> Any:
        return self.principal


@pytest.mark.parametrize("principal", [False, "", 0, 0.0, {}, [], (), set(), b""], ids=repr)
def test_every_falsy_principal_is_401(make_app, amazon, principal):
    # A hook written as `return header == "Bearer good"` answers False for a stranger.
    app = make_app(auth=False)
    app.extensions["test_extension"].plugin_manager.register(Answers(principal))
    amazon.add(make_item("B0TESTAAA1"))
    for route, body in (("/import", {"url": US_LINK}), ("/import/batch", {"urls": [US_LINK]})):
        response = app.test_client().post(f"/api/amazon{route}", json=body)
        assert_envelope(response, 401, "AUTHENTICATION_REQUIRED")
    assert amazon.get_items_requests() == 0


def test_a_truthy_principal_passes_and_is_kept_for_the_view(make_app, amazon):
    app = make_app(auth=False, AMAZON_PRINCIPAL_LIMITS="10/day")
    app.extensions["test_extension"].plugin_manager.register(Answers({"id": "u-7"}))
    amazon.add(make_item("B0TESTAAA1"))
    with app.test_client() as client:
        assert post_import(client, {"url": US_LINK}).status_code == 200
        assert g.amazon_principal == {"id": "u-7"}
        assert g.amazon_principal_key == "u-7"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"data": "not json", "content_type": "text/plain"}, None),
        ({"data": "{not json", "content_type": "application/json"}, None),
        (
            {
                "data": '["https://www.amazon.com/dp/B0TESTAAA1"]',
                "content_type": "application/json",
            },
            None,
        ),
        ({"data": "{}", "content_type": "application/json"}, "url"),
        ({"data": '{"url": 12}', "content_type": "application/json"}, "url"),
        ({"data": '{"url": null}', "content_type": "application/json"}, "url"),
        ({"data": '{"url": "   "}', "content_type": "application/json"}, "url"),
        (
            {
                "data": json.dumps({"url": "https://www.amazon.com/dp/B0" + "x" * 2047}),
                "content_type": "application/json",
            },
            "url",
        ),
        (
            {"data": json.dumps({"url": US_LINK, "tag": "x"}), "content_type": "application/json"},
            "tag",
        ),
    ],
    ids=[
        "text-plain",
        "bad-json",
        "json-list",
        "url-missing",
        "url-number",
        "url-null",
        "url-blank",
        "url-too-long",
        "unknown-field",
    ],
)
def test_invalid_bodies_are_400(client, amazon, kwargs, field):
    error = assert_envelope(post_import(client, None, **kwargs), 400, "INVALID_REQUEST")
    if field is not None:
        assert field in error["details"]["fields"]
    assert amazon.get_items_calls == []


def test_url_of_exactly_2048_chars_after_trimming_is_accepted_by_validation(client, amazon):
    url = "https://www.amazon.com/dp/B0TESTAAA1?" + "a" * (
        2048 - len("https://www.amazon.com/dp/B0TESTAAA1?")
    )
    amazon.add(make_item("B0TESTAAA1"))
    assert post_import(client, {"url": f"  {url}\n"}).status_code == 200


@pytest.mark.parametrize("route", ["/api/amazon/import", "/api/amazon/import/batch"])
def test_a_1mb_body_without_a_host_limit_is_413_before_parsing(make_app, monkeypatch, route):
    app = make_app()
    assert app.config.get("MAX_CONTENT_LENGTH") is None
    parsed: list[int] = []
    original = blueprint._BodyParser._raw_load_json

    def spy(self: Any, req: Any) -> Any:
        parsed.append(1)
        return original(self, req)

    monkeypatch.setattr(blueprint._BodyParser, "_raw_load_json", spy)
    body = json.dumps({"urls": [US_LINK] * 30_000, "url": US_LINK})
    assert len(body) > 1_000_000
    started = time.monotonic()
    response = app.test_client().post(
        route,
        data=body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )
    assert time.monotonic() - started < 2  # a bound, not a benchmark: it was 9 s for 25 MB
    assert_envelope(response, 413, "INVALID_REQUEST")
    assert parsed == []  # refused before a byte was parsed
    # Just under the cap the body is parsed as usual (and refused for its content).
    small = app.test_client().post(
        route,
        data=json.dumps({"pad": "x" * 60_000}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )
    assert_envelope(small, 400, "INVALID_REQUEST")
    assert parsed == [1]


def test_the_body_cap_holds_before_an_auth_hook_could_read_the_body(app):
    response = app.test_client().post(
        "/api/amazon/import", data=b"x" * 100_000, content_type="application/json"
    )
    assert_envelope(response, 413, "INVALID_REQUEST")


def test_the_lower_of_the_two_body_limits_wins(make_app):
    app = make_app(MAX_CONTENT_LENGTH=10_000_000, AMAZON_MAX_BODY_BYTES=1000)
    response = post_import(
        app.test_client(),
        {"url": "x" * 2000},
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )
    assert_envelope(response, 413, "INVALID_REQUEST")


def test_oversized_body_is_413_in_the_envelope(make_app):
    app = make_app(MAX_CONTENT_LENGTH=1024)
    client = app.test_client()
    response = post_import(
        client, {"url": "x" * 4096}, headers={"Authorization": f"Bearer {USER_TOKEN}"}
    )
    assert_envelope(response, 413, "INVALID_REQUEST")


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://example.com/dp/B0TESTAAA1", "UNRECOGNIZED_AMAZON_URL"),
        ("https://www.amazon.com.evil.example/dp/B0TESTAAA1", "UNRECOGNIZED_AMAZON_URL"),
        ("javascript:alert(1)", "UNRECOGNIZED_AMAZON_URL"),
        ("https://www.amazon.com/s?k=gloves", "UNRECOGNIZED_AMAZON_URL"),
        ("https://amzn.to/3xYzAbC", "UNSUPPORTED_SHORT_LINK"),
        ("https://a.co/d/abc1234", "UNSUPPORTED_SHORT_LINK"),
        ("https://www.amazon.cn/dp/B0TESTAAA1", "UNSUPPORTED_AMAZON_LOCALE"),
        ("https://www.amazon.co.uk/dp/B0TESTAAA1", "UNSUPPORTED_AMAZON_LOCALE"),
    ],
)
def test_links_that_name_no_served_product_are_422(client, amazon, url, code):
    assert_envelope(post_import(client, {"url": url}), 422, code)
    assert amazon.get_items_calls == []


def test_other_marketplace_is_served_when_configured(make_app, amazon, monkeypatch):
    # A UK credential (EU region) serves www.amazon.co.uk and refuses .com.
    monkeypatch.setenv("AMAZON_CREATORS_VERSION", "3.2")
    amazon.mocker.post(
        "https://api.amazon.co.uk/auth/o2/token",
        json={"access_token": ACCESS_TOKEN, "token_type": "bearer", "expires_in": 3600},
    )
    amazon.add(make_item("B0TESTAAA1"))
    app = make_app(AMAZON_MARKETPLACE="www.amazon.co.uk")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    assert post_import(client, {"url": "https://amazon.co.uk/dp/B0TESTAAA1"}).status_code == 200
    assert amazon.mocker.request_history[-1].headers["x-marketplace"] == "www.amazon.co.uk"
    assert_envelope(post_import(client, {"url": US_LINK}), 422, "UNSUPPORTED_AMAZON_LOCALE")


def test_local_quota_exhausted_is_429_with_retry_after(make_app, amazon):
    amazon.add(make_item("B0TESTAAA1"), make_item("B0TESTAAA2"))
    app = make_app(AMAZON_RATE_LIMITS="100/second;1/day")
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    assert post_import(client, {"url": US_LINK}).status_code == 200
    response = post_import(client, {"url": "https://www.amazon.com/dp/B0TESTAAA2"})
    error = assert_envelope(response, 429, "AMAZON_RATE_LIMITED")
    assert error["details"]["source"] == "local"
    assert int(response.headers["Retry-After"]) >= 1
    assert len(amazon.get_items_calls) == 1


def test_amazon_throttling_is_429_with_source_amazon(client, amazon):
    amazon.fail_get_items(
        status_code=429, headers={"Retry-After": "7"}, json={"reason": "TooManyRequests"}
    )
    response = post_import(client, {"url": US_LINK})
    error = assert_envelope(response, 429, "AMAZON_RATE_LIMITED")
    assert error["details"]["source"] == "amazon"
    assert response.headers["Retry-After"] == "7"


@pytest.mark.parametrize(
    ("response_kwargs", "reason"),
    [
        ({"status_code": 500, "json": {"reason": "InternalFailure"}}, "server_error"),
        ({"status_code": 503, "text": "<html>down</html>"}, "server_error"),
        ({"status_code": 200, "text": "<html>not json</html>"}, "invalid_response"),
        (
            {"status_code": 403, "json": {"reason": "AssociateNotEligible", "message": "x"}},
            "associate_not_eligible",
        ),
        (
            {"status_code": 400, "json": {"reason": "InvalidPartnerTag", "message": "x"}},
            "invalid_partner_tag",
        ),
    ],
)
def test_upstream_failures_are_502_with_reason(client, amazon, response_kwargs, reason):
    amazon.fail_get_items(**response_kwargs)
    error = assert_envelope(
        post_import(client, {"url": US_LINK}), 502, "AMAZON_UPSTREAM_UNAVAILABLE"
    )
    assert error["details"]["reason"] == reason


def test_missing_credentials_are_502_and_name_the_variable_in_logs(
    client, amazon, monkeypatch, caplog
):
    monkeypatch.delenv("AMAZON_CREATORS_CREDENTIAL_SECRET")
    error = assert_envelope(
        post_import(client, {"url": US_LINK}), 502, "AMAZON_UPSTREAM_UNAVAILABLE"
    )
    assert error["details"]["reason"] == "credentials_unavailable"
    assert "AMAZON_CREATORS_CREDENTIAL_SECRET" in caplog.text
    assert CREDENTIAL_SECRET not in caplog.text


def test_unexpected_exception_is_500_with_request_id_and_no_traceback(
    app, client, monkeypatch, caplog
):
    def explode(ref):
        raise RuntimeError("boom at line 42")

    monkeypatch.setattr(app.extensions["arda_amazon_bp"].lookup, "lookup", explode)
    response = post_import(client, {"url": US_LINK})
    error = assert_envelope(response, 500, "INTERNAL_ERROR")
    assert "boom" not in response.get_data(as_text=True)
    failure = [r for r in caplog.records if r.exc_info]
    assert failure, "the unexpected exception was not logged"
    assert {r.request_id for r in failure} == {error["details"]["requestId"]}  # names the request


def test_every_error_code_has_a_test_above():
    tested = {
        "AUTHENTICATION_REQUIRED",
        "INVALID_REQUEST",
        "UNRECOGNIZED_AMAZON_URL",
        "UNSUPPORTED_SHORT_LINK",
        "UNSUPPORTED_AMAZON_LOCALE",
        "AMAZON_RATE_LIMITED",
        "AMAZON_UPSTREAM_UNAVAILABLE",
        "INTERNAL_ERROR",
    }
    assert tested == {code.value for code in ErrorCode} == {code.value for code in ERROR_STATUSES}


# -- host isolation and OpenAPI -----------------------------------------------------------


def test_host_error_format_is_untouched(app):
    @app.get("/host/missing")
    def host_missing():
        abort(404)

    response = app.test_client().get("/host/missing")
    assert response.status_code == 404
    assert "error" not in (response.get_json(silent=True) or {})


def test_openapi_document_lists_routes_schemas_and_errors(app: Flask):
    spec = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    operation = spec["paths"]["/api/amazon/import"]["post"]
    assert {"200", "206", "400", "401", "413", "422", "429", "500", "502"} <= set(
        operation["responses"]
    )
    assert "/api/amazon/import/batch" in spec["paths"]
    schemas = spec["components"]["schemas"]
    assert {"AmazonImportRequest", "AmazonImportProduct", "AmazonImportError"} <= set(schemas)
    assert operation["responses"]["502"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "AmazonImportError"
    )


def test_two_requests_coalesced_into_one_failing_call_each_get_their_own_request_id(client, amazon):
    """One error object answers every waiter of a call; each body must be built apart."""
    lookup = client.application.extensions["arda_amazon_bp"].lookup
    release = threading.Event()

    def failing(request: Any, context: Any) -> dict[str, Any]:
        release.wait(10)  # held until both requests wait on this very call
        context.status_code = 500
        return {"errors": [{"code": "InternalFailure", "message": "try later"}]}

    amazon.mocker.post(GET_ITEMS_URL, json=failing)
    responses: dict[str, Any] = {}

    def run(request_id: str) -> None:
        responses[request_id] = post_import(
            client, {"url": US_LINK}, headers={"X-Request-ID": request_id}
        )

    threads = [threading.Thread(target=run, args=(rid,)) for rid in ("req-a", "req-b")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while lookup.waiting.waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the second has joined the first's call by now (checked below)
    release.set()
    for thread in threads:
        thread.join(10)
    assert amazon.get_items_requests() == 1  # one call, one shared error object
    for request_id in ("req-a", "req-b"):
        error = assert_envelope(responses[request_id], 502, "AMAZON_UPSTREAM_UNAVAILABLE")
        assert error["details"]["requestId"] == request_id
        assert responses[request_id].headers["X-Request-ID"] == request_id
