"""``arda_amazon_bp.fast_hits``: repeat links answered from the front cache, exactly as the
full route answered them; everything else goes through webargs as before."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from fixtures_app import PARTNER_TAG, make_item, post_import
from flask import Flask, request
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from arda_amazon_bp import fast_hits
from arda_amazon_bp.fast_hits import MAX_FAST_BODY_BYTES, simple_url
from arda_amazon_bp.schemas import MAX_URL_LENGTH, AmazonImportRequestSchema

LINK = "https://www.amazon.com/dp/B0FASTAAA1"


def _url_of(app: Flask, data: bytes, content_type: str = "application/json", **kw: Any) -> Any:
    with app.test_request_context(
        "/api/amazon/import", method="POST", data=data, content_type=content_type, **kw
    ):
        return simple_url(request)


# -- the request-parse shortcut ------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"url": LINK}, LINK),
        ({"url": f"  {LINK}\n"}, LINK),  # trimmed as TrimmedString trims
        ({"url": "x" * MAX_URL_LENGTH}, "x" * MAX_URL_LENGTH),
    ],
)
def test_a_plain_link_body_is_read_as_the_schema_reads_it(
    app: Flask, body: dict[str, Any], expected: str
) -> None:
    data = json.dumps(body).encode()
    assert _url_of(app, data) == expected
    assert AmazonImportRequestSchema().load(body)["url"] == expected


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'"https://www.amazon.com/dp/B0FASTAAA1"',
        b"{}",
        b'{"url": null}',
        b'{"url": 5}',
        b'{"url": ["a"]}',
        b'{"url": "   "}',
        b'{"url": ""}',
        b'{"url": "a", "extra": 1}',
        json.dumps({"url": "x" * (MAX_URL_LENGTH + 1)}).encode(),
        b'{"url": "\xff\xfe"}',  # not UTF-8
        '{"url": "a"}'.encode("utf-16"),  # json.loads(bytes) would accept it; webargs not
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_anything_else_is_left_to_the_full_route(app: Flask, data: bytes) -> None:
    assert _url_of(app, data) is None


def test_other_content_types_and_big_or_chunked_bodies_are_left_to_the_full_route(
    app: Flask,
) -> None:
    data = json.dumps({"url": LINK}).encode()
    assert _url_of(app, data, "application/vnd.api+json") is None
    assert _url_of(app, data, "text/plain") is None
    padded = json.dumps({"url": LINK + " " * MAX_FAST_BODY_BYTES}).encode()
    assert _url_of(app, padded) is None
    app.config["MAX_CONTENT_LENGTH"] = 10
    assert _url_of(app, data) is None
    app.config["MAX_CONTENT_LENGTH"] = None
    chunked = {"HTTP_TRANSFER_ENCODING": "chunked"}
    assert _url_of(app, data, environ_overrides=chunked) is None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        JSON,
        st.fixed_dictionaries({"url": JSON}),
        st.fixed_dictionaries({"url": st.text()}, optional={"x": JSON}),
    )
)
def test_whatever_the_shortcut_accepts_the_schema_accepts_identically(body: Any) -> None:
    app = Flask("bare")
    url = _url_of(app, json.dumps(body).encode())
    try:
        loaded = AmazonImportRequestSchema().load(body)
    except ValidationError:
        assert url is None
    else:
        assert url in (None, loaded["url"])


# -- serving repeat links -----------------------------------------------------------------


class CacheReads:
    """Counts reads of the shared product cache (the Redis round trip of a hit)."""

    def __init__(self, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        cache = app.extensions["arda_amazon_bp"].cache
        original = cache.get_many

        def counted(keys: Any) -> Any:
            self.count += 1
            return original(keys)

        monkeypatch.setattr(cache, "get_many", counted)


def _client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer user-token-1"
    return client


def test_a_repeat_link_is_answered_from_memory_with_the_same_answer(
    make_app: Callable[..., Flask], amazon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    app = make_app()
    reads = CacheReads(app, monkeypatch)
    client = _client(app)
    first = post_import(client, {"url": LINK})
    assert first.status_code == 200 and reads.count >= 1
    after_miss = reads.count
    second = post_import(client, {"url": f" {LINK} "})
    assert reads.count == after_miss, "the repeat went to the shared cache"
    assert amazon.get_items_requests() == 1
    assert second.status_code == first.status_code
    assert second.get_data() == first.get_data()
    assert second.content_type == first.content_type
    for name in ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"):
        assert name in second.headers
    assert second.headers["X-Request-ID"] != first.headers["X-Request-ID"]


class FullRoutes:
    """Counts requests that took the full route (the view asks ``lookup.lookup``)."""

    def __init__(self, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        lookup = app.extensions["arda_amazon_bp"].lookup
        original = lookup.lookup

        def counted(ref: Any, **kwargs: Any) -> Any:
            self.count += 1
            return original(ref, **kwargs)

        monkeypatch.setattr(lookup, "lookup", counted)


@pytest.fixture
def front_clock(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [100.0]
    monkeypatch.setattr(app.extensions["arda_amazon_bp"].front_cache, "_clock", lambda: clock[0])
    return clock


def test_after_the_ttl_an_unchanged_record_is_revalidated_and_its_bytes_reused(
    app: Flask, amazon: Any, monkeypatch: pytest.MonkeyPatch, front_clock: list[float]
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    reads, full = CacheReads(app, monkeypatch), FullRoutes(app, monkeypatch)
    client = _client(app)
    first = post_import(client, {"url": LINK})
    after_miss = reads.count
    front_clock[0] += 1.9
    post_import(client, {"url": LINK})
    assert reads.count == after_miss and full.count == 1
    front_clock[0] += 0.2  # past the default 2 s
    again = post_import(client, {"url": LINK})
    assert again.get_data() == first.get_data() and again.status_code == 200
    assert reads.count == after_miss + 1, "the record was not revalidated"
    assert full.count == 1, "an unchanged record took the full route"
    post_import(client, {"url": LINK})  # kept for another TTL
    assert reads.count == after_miss + 1


def test_after_the_ttl_a_changed_record_takes_the_full_route(
    app: Flask, amazon: Any, monkeypatch: pytest.MonkeyPatch, front_clock: list[float]
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    client = _client(app)
    first = post_import(client, {"url": LINK}).get_json()
    cache = app.extensions["arda_amazon_bp"].cache
    cache.set("www.amazon.com:B0FASTAAA1", {**first, "title": "Renamed"}, 3600)
    assert post_import(client, {"url": LINK}).get_json()["title"] == first["title"]  # in TTL
    front_clock[0] += 2.1
    assert post_import(client, {"url": LINK}).get_json()["title"] == "Renamed"


def test_after_the_ttl_a_record_gone_from_the_shared_cache_is_fetched_again(
    app: Flask, amazon: Any, front_clock: list[float]
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    client = _client(app)
    post_import(client, {"url": LINK})
    app.extensions["arda_amazon_bp"].cache.clear()
    front_clock[0] += 2.1
    assert post_import(client, {"url": LINK}).status_code == 200
    assert amazon.get_items_requests() == 2


def test_a_ttl_of_zero_turns_the_shortcut_off(
    make_app: Callable[..., Flask], amazon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    app = make_app(AMAZON_FRONT_CACHE_TTL_SECONDS=0)
    reads = CacheReads(app, monkeypatch)
    client = _client(app)
    first = post_import(client, {"url": LINK}).get_data()
    after_miss = reads.count
    repeats = {post_import(client, {"url": LINK}).get_data() for _ in range(2)}
    assert reads.count == after_miss + 2 and repeats == {first}


def test_a_rotated_partner_tag_is_never_served_from_memory(
    make_app: Callable[..., Flask], amazon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    app = make_app()
    client = _client(app)
    assert post_import(client, {"url": LINK}).get_json()["detailPageUrl"].endswith(PARTNER_TAG)
    monkeypatch.setenv("AMAZON_CREATORS_PARTNER_TAG", "rotated-21")
    app.extensions["arda_amazon_bp"].credentials.reload()
    again = post_import(client, {"url": LINK})
    assert again.get_json()["detailPageUrl"].endswith("?tag=rotated-21")


def test_unavailable_products_stay_no_longer_than_the_negative_ttl(
    make_app: Callable[..., Flask], amazon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(AMAZON_NEGATIVE_CACHE_TTL_SECONDS=0)  # never kept: asked again each time
    client = _client(app)
    for _ in range(2):
        assert (
            post_import(client, {"url": "https://www.amazon.com/dp/B0GONEAAA1"}).status_code == 206
        )
    assert amazon.get_items_requests() == 2


def test_errors_are_not_kept(make_app: Callable[..., Flask], amazon: Any) -> None:
    app = make_app()
    client = _client(app)
    amazon.fail_get_items(status_code=503)
    assert post_import(client, {"url": LINK}).status_code == 502
    amazon.add(make_item("B0FASTAAA1"))
    amazon.fail_get_items(json=amazon.answer)
    assert post_import(client, {"url": LINK}).status_code == 200


def test_unauthenticated_repeats_are_still_refused(
    make_app: Callable[..., Flask], amazon: Any
) -> None:
    amazon.add(make_item("B0FASTAAA1"))
    app = make_app()
    assert post_import(_client(app), {"url": LINK}).status_code == 200
    refused = post_import(app.test_client(), {"url": LINK})
    assert refused.status_code == 401
    assert refused.get_json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_the_openapi_document_is_that_of_the_wrapped_view(app: Flask) -> None:
    view = app.view_functions["amazon_import.import_product"]
    assert view.__wrapped__._apidoc == view._apidoc  # type: ignore[attr-defined]
    spec = app.extensions["flask-smorest"]["apis"][""]["ext_obj"].spec.to_dict()
    operation = spec["paths"]["/api/amazon/import"]["post"]
    assert operation["summary"] == "Import one product from a pasted Amazon link."
    assert {"200", "206", "400", "401", "413", "422", "429", "500", "502"} <= set(
        operation["responses"]
    )


def test_an_answer_never_outlives_its_record_in_the_product_cache(
    app: Flask, amazon: Any, monkeypatch: pytest.MonkeyPatch, front_clock: list[float]
) -> None:
    """AMAZON_CACHE_TTL_SECONDS (3600 here) after retrievedAt the record is gone from the
    product cache; the front cache must not keep serving it past that moment."""
    amazon.add(make_item("B0FASTAAA1"))
    lookup = app.extensions["arda_amazon_bp"].lookup
    monkeypatch.setattr(
        lookup, "_now", lambda: datetime.now(timezone.utc) - timedelta(seconds=3599)
    )
    later = [0.0]
    monkeypatch.setattr(fast_hits, "_wall_clock", lambda: time.time() + later[0])
    full = FullRoutes(app, monkeypatch)
    client = _client(app)
    post_import(client, {"url": LINK})
    front_clock[0] += 1.01  # under the 2 s TTL, but past the record's last second
    later[0] += 1.01
    post_import(client, {"url": LINK})
    assert full.count == 2
