"""Cache, single-flight and coalescing: counted in upstream getItems calls."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from fixtures_app import GET_ITEMS_URL, PARTNER_TAG, USER_TOKEN, make_item, post_import
from flask import Flask

from arda_amazon_bp.errors import AmazonImportError, ErrorCode
from arda_amazon_bp.links import ProductRef

US = "www.amazon.com"


def asin(n: int) -> str:
    return f"B0LOOKUP{n:02d}"


def import_concurrently(app: Flask, urls: list[str]) -> list[Any]:
    """POST each link from its own thread, all released at once; responses in order."""
    barrier = threading.Barrier(len(urls))
    responses: list[Any] = [None] * len(urls)

    def worker(i: int) -> None:
        client = app.test_client()
        barrier.wait()
        responses[i] = post_import(
            client, {"url": urls[i]}, headers={"Authorization": f"Bearer {USER_TOKEN}"}
        )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(urls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return responses


@pytest.fixture
def one_per_second(make_app: Callable[..., Flask]) -> Flask:
    """Amazon's real per-second pace (no margin, to keep the test short)."""
    # 25 imports wait at once here: the waiting cap (tests/test_waiting.py) is lifted.
    return make_app(
        AMAZON_RATE_LIMITS="1/second", AMAZON_MAX_WAIT_SECONDS=10, AMAZON_MAX_WAITING=25
    )


def test_25_concurrent_distinct_imports_take_at_most_4_calls(one_per_second, amazon):
    amazon.add(*(make_item(asin(n)) for n in range(25)))
    responses = import_concurrently(
        one_per_second, [f"https://www.amazon.com/dp/{asin(n)}" for n in range(25)]
    )
    assert [r.status_code for r in responses] == [200] * 25
    assert [r.get_json()["asin"] for r in responses] == [asin(n) for n in range(25)]
    sizes = [len(call["itemIds"]) for call in amazon.get_items_calls]
    assert len(sizes) <= 4, sizes
    assert max(sizes) == 10 and sum(sizes) == 25


def test_25_concurrent_imports_of_one_asin_take_one_call(one_per_second, amazon):
    amazon.add(make_item(asin(1)))
    responses = import_concurrently(one_per_second, [f"https://amazon.com/dp/{asin(1)}"] * 25)
    assert {r.status_code for r in responses} == {200}
    assert len(amazon.get_items_calls) == 1
    assert amazon.get_items_calls[0]["itemIds"] == [asin(1)]


def test_one_item_per_call_is_the_naive_baseline(make_app, amazon):
    amazon.add(*(make_item(asin(n)) for n in range(3)))
    app = make_app(AMAZON_MAX_ITEMS_PER_CALL=1)
    lookup = app.extensions["arda_amazon_bp"].lookup
    results = lookup.lookup_many([ProductRef(US, asin(n)) for n in range(3)])
    assert [r["asin"] for r in results] == [asin(n) for n in range(3)]
    assert [len(call["itemIds"]) for call in amazon.get_items_calls] == [1, 1, 1]


def test_repeated_import_within_ttl_costs_no_call(client, amazon):
    amazon.add(make_item(asin(1)))
    first = post_import(client, {"url": f"https://www.amazon.com/dp/{asin(1)}"})
    second = post_import(client, {"url": f"https://www.amazon.com/gp/product/{asin(1)}"})
    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json()
    assert len(amazon.get_items_calls) == 1


def test_cache_ttl_zero_turns_the_cache_off(make_app, amazon):
    amazon.add(make_item(asin(1)))
    app = make_app(AMAZON_CACHE_TTL_SECONDS=0)
    client = app.test_client()
    for _ in range(2):
        post_import(
            client,
            {"url": f"https://www.amazon.com/dp/{asin(1)}"},
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
        )
    assert len(amazon.get_items_calls) == 2


def test_not_accessible_items_are_cached_briefly(client, amazon):
    for _ in range(2):
        response = post_import(client, {"url": f"https://www.amazon.com/dp/{asin(9)}"})
        assert response.status_code == 206
    assert len(amazon.get_items_calls) == 1


def test_cache_is_shared_between_apps_through_redis(make_app, amazon, redis_url):
    amazon.add(make_item(asin(1)))
    first, second = (make_app(AMAZON_CACHE_STORAGE_URI=redis_url) for _ in range(2))
    for app in (first, second):
        response = post_import(
            app.test_client(),
            {"url": f"https://www.amazon.com/dp/{asin(1)}"},
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
        )
        assert response.status_code == 200
    assert len(amazon.get_items_calls) == 1


def test_memory_cache_belongs_to_one_app(make_app, amazon):
    amazon.add(make_item(asin(1)))
    for app in (make_app(), make_app()):
        post_import(
            app.test_client(),
            {"url": f"https://www.amazon.com/dp/{asin(1)}"},
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
        )
    assert len(amazon.get_items_calls) == 2


def test_batched_answer_gives_each_request_only_its_own_item(app, amazon):
    amazon.add(make_item(asin(1)))
    lookup = app.extensions["arda_amazon_bp"].lookup
    results = lookup.lookup_many([ProductRef(US, asin(1)), ProductRef(US, asin(2))])
    assert results[0]["title"] is not None and results[0]["notices"] == []
    assert results[1]["title"] is None
    assert results[1]["notices"][0]["code"] == "ItemNotAccessible"
    assert asin(2) in results[1]["notices"][0]["message"]
    assert len(amazon.get_items_calls) == 1


def test_upstream_failure_reaches_every_request_of_the_batch(app, amazon):
    amazon.fail_get_items(status_code=500, json={"reason": "InternalFailure"})
    lookup = app.extensions["arda_amazon_bp"].lookup
    results = lookup.lookup_many([ProductRef(US, asin(1)), ProductRef(US, asin(2))])
    assert all(isinstance(r, AmazonImportError) for r in results)
    assert {r.code for r in results} == {ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE}


def test_amazon_throttling_pauses_the_limiter(app, amazon):
    amazon.fail_get_items(
        status_code=429, headers={"Retry-After": "30"}, json={"reason": "TooManyRequests"}
    )
    state = app.extensions["arda_amazon_bp"]
    with pytest.raises(AmazonImportError) as first:
        state.lookup.lookup(ProductRef(US, asin(1)))
    assert first.value.details["source"] == "amazon"
    with pytest.raises(AmazonImportError) as second:
        state.lookup.lookup(ProductRef(US, asin(2)))
    assert second.value.details["source"] == "local"  # no second call hammered Amazon
    assert 1 <= int(second.value.headers["Retry-After"]) <= 30
    assert amazon.get_items_requests() == 1


def test_spent_daily_quota_answers_every_waiter_at_once(make_app, amazon):
    amazon.add(*(make_item(asin(n)) for n in range(3)))
    app = make_app(AMAZON_RATE_LIMITS="100/second;1/day")
    lookup = app.extensions["arda_amazon_bp"].lookup
    assert lookup.lookup(ProductRef(US, asin(0)))["asin"] == asin(0)
    results = lookup.lookup_many([ProductRef(US, asin(1)), ProductRef(US, asin(2))])
    assert [r.code for r in results] == [ErrorCode.AMAZON_RATE_LIMITED] * 2
    assert {r.details["limit"] for r in results} == {"day"}


# -- the batch route -------------------------------------------------------------------


def post_batch(client: Any, urls: list[Any]) -> Any:
    return client.post("/api/amazon/import/batch", json={"urls": urls})


def test_batch_answers_in_input_order_with_per_link_status(client, amazon):
    amazon.add(make_item(asin(1)), make_item(asin(2), offersV2=None))
    urls = [
        f"https://www.amazon.com/dp/{asin(1)}",
        "https://example.com/nope",
        f"https://www.amazon.com/dp/{asin(2)}",
        "https://amzn.to/abc",
        f"https://amazon.com/gp/product/{asin(1)}",
    ]
    response = post_batch(client, urls)
    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["url"] for r in results] == urls
    assert [r["status"] for r in results] == [200, 422, 206, 422, 200]
    assert (
        results[1]["error"]["code"] == "UNRECOGNIZED_AMAZON_URL" and results[1]["product"] is None
    )
    assert results[3]["error"]["code"] == "UNSUPPORTED_SHORT_LINK"
    assert results[2]["product"]["missingFields"] == ["price"]
    assert len(amazon.get_items_calls) == 1  # duplicates and all: one upstream call
    assert sorted(amazon.get_items_calls[0]["itemIds"]) == [asin(1), asin(2)]


@pytest.mark.parametrize(
    "body",
    [{"urls": []}, {"urls": "x"}, {"urls": [1]}, {}, {"urls": ["x"], "more": 1}],
)
def test_batch_refuses_invalid_bodies(client, body):
    response = client.post("/api/amazon/import/batch", json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_REQUEST"


def test_batch_refuses_more_than_the_configured_links(make_app):
    app = make_app(AMAZON_BATCH_MAX_URLS=3)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    response = post_batch(client, [f"https://www.amazon.com/dp/{asin(n)}" for n in range(4)])
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "INVALID_REQUEST"


def test_batch_requires_authentication(app):
    response = post_batch(app.test_client(), [f"https://www.amazon.com/dp/{asin(1)}"])
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


# --- settings wired through init_app, and the paths around the cache ---------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def import_one(app: Flask, n: int) -> Any:
    return post_import(
        app.test_client(),
        {"url": f"https://www.amazon.com/dp/{asin(n)}"},
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )


def on_clock(app: Flask) -> Clock:
    """Give the app's lookup a memory cache on a clock the test moves."""
    from arda_amazon_bp.cache import MemoryCache

    clock = Clock()
    state = app.extensions["arda_amazon_bp"]
    state.lookup.cache = MemoryCache(state.settings.cache_max_entries, clock=clock)
    return clock


@pytest.mark.parametrize(
    ("config", "negative_ttl"),
    [
        ({"AMAZON_NEGATIVE_CACHE_TTL_SECONDS": 5}, 5),
        # never longer than the products' own TTL
        ({"AMAZON_NEGATIVE_CACHE_TTL_SECONDS": 300, "AMAZON_CACHE_TTL_SECONDS": 2}, 2),
    ],
)
def test_not_accessible_items_expire_after_the_negative_ttl(make_app, amazon, config, negative_ttl):
    amazon.add(make_item(asin(1)))
    app = make_app(AMAZON_FRONT_CACHE_TTL_SECONDS=0, **config)  # every repeat reaches the cache
    clock = on_clock(app)
    assert import_one(app, 1).status_code == 200
    assert import_one(app, 9).status_code == 206  # not accessible: cached briefly
    clock.now += negative_ttl - 0.1
    assert import_one(app, 9).status_code == 206
    assert len(amazon.get_items_calls) == 2
    clock.now += 0.2
    assert import_one(app, 9).status_code == 206  # expired: asked again
    assert len(amazon.get_items_calls) == 3
    if negative_ttl == 5:
        assert import_one(app, 1).status_code == 200  # a product keeps its own TTL
        assert len(amazon.get_items_calls) == 3


def test_cache_max_entries_reaches_the_memory_cache(make_app, amazon):
    amazon.add(*(make_item(asin(n)) for n in range(3)))
    app = make_app(AMAZON_CACHE_MAX_ENTRIES=2, AMAZON_FRONT_CACHE_TTL_SECONDS=0)
    assert app.extensions["arda_amazon_bp"].lookup.cache.max_entries == 2
    for n in (0, 1, 2, 0):  # the third evicts the first: it is fetched again
        assert import_one(app, n).status_code == 200
    assert len(amazon.get_items_calls) == 4
    assert import_one(app, 2).status_code == 200
    assert len(amazon.get_items_calls) == 4


@pytest.mark.parametrize(("ttl", "loads"), [(0, 3), (900, 0)])
def test_credentials_ttl_reaches_the_provider(make_app, amazon, ttl, loads):
    amazon.add(make_item(asin(1)))
    app = make_app(AMAZON_CREDENTIALS_TTL_SECONDS=ttl)
    assert import_one(app, 1).status_code == 200
    state = app.extensions["arda_amazon_bp"]
    before = state.credentials.loads
    for _ in range(3):
        assert asin(1) in state.lookup.cached(US, [asin(1)])  # a hit reads the current tag
    assert state.credentials.loads - before == loads


def test_a_cache_hit_carries_the_current_partner_tag(make_app, amazon, monkeypatch):
    amazon.add(make_item(asin(1)))
    app = make_app(AMAZON_CREDENTIALS_TTL_SECONDS=0)  # every request re-reads the env
    first = import_one(app, 1).get_json()
    assert first["detailPageUrl"] == f"https://www.amazon.com/dp/{asin(1)}?tag={PARTNER_TAG}"
    monkeypatch.setenv("AMAZON_CREATORS_PARTNER_TAG", "rotated-20")
    again = import_one(app, 1).get_json()
    assert len(amazon.get_items_calls) == 1  # a hit...
    assert again["detailPageUrl"] == f"https://www.amazon.com/dp/{asin(1)}?tag=rotated-20"
    assert {k: v for k, v in again.items() if k != "detailPageUrl"} == {
        k: v for k, v in first.items() if k != "detailPageUrl"
    }


def test_a_cache_hit_is_served_when_credentials_fail_without_ratelimit_headers(
    make_app, amazon, monkeypatch
):
    # A worker that never loaded its credentials (the backend fails from the start) still
    # serves what another worker cached. (A provider that loaded once keeps serving its
    # last good set when a re-read fails, so it needs a fresh app to reach this path.)
    amazon.add(make_item(asin(1)))
    warm = make_app()
    first = import_one(warm, 1)
    assert first.headers["RateLimit-Limit"] == "8640"
    monkeypatch.delenv("AMAZON_CREATORS_CREDENTIAL_SECRET")
    cold = make_app()
    cold.extensions["arda_amazon_bp"].lookup.cache = warm.extensions["arda_amazon_bp"].lookup.cache

    again = import_one(cold, 1)
    assert again.status_code == 200
    assert again.get_json() == first.get_json()  # with the tag it was stored with
    assert len(amazon.get_items_calls) == 1
    # the daily quota is kept per credential: without one the headers are left out
    assert [name for name, _ in again.headers if name.startswith("RateLimit-")] == []
    assert import_one(cold, 2).status_code == 502  # a miss does need the credentials


class BrokenCache:
    """A cache whose storage fails every call (a bug, or a storage without our guard)."""

    def get_many(self, keys: Any) -> Any:
        raise ConnectionError("cache down")

    def set(self, key: Any, value: Any, ttl: Any) -> None:
        raise ConnectionError("cache down")

    def close(self) -> None:
        pass


def test_cache_failures_become_misses_and_are_logged(make_app, amazon, caplog):
    amazon.add(make_item(asin(1)))
    app = make_app(AMAZON_FRONT_CACHE_TTL_SECONDS=0)
    app.extensions["arda_amazon_bp"].lookup.cache = BrokenCache()
    for _ in range(2):
        response = import_one(app, 1)
        assert response.status_code == 200
        assert response.get_json()["asin"] == asin(1)
    assert len(amazon.get_items_calls) == 2  # nothing could be kept
    by_request: dict[str, list[str]] = {}
    for record in caplog.records:
        if record.name == "arda_amazon_bp.lookup":
            request_id = getattr(record, "request_id", "")  # docs/configuration.md, Logging
            by_request.setdefault(request_id, []).append(record.getMessage())
    assert len(by_request) == 2
    for messages in by_request.values():  # each import: its reads missed, its write failed
        assert "amazon product cache read failed; treating as miss" in messages
        assert messages.count("amazon product cache write failed") == 1


# -- negative caching: only Amazon's own per-item verdicts -------------------------------


def test_an_asin_amazon_named_in_a_per_item_error_is_cached_as_not_accessible(app, amazon):
    lookup = app.extensions["arda_amazon_bp"].lookup
    amazon.add(make_item(asin(1)))
    refs = [ProductRef(US, asin(1)), ProductRef(US, asin(2))]  # asin(2): ItemNotAccessible
    first = lookup.lookup_many(refs)
    assert first[1]["notices"][0]["code"] == "ItemNotAccessible"
    again = lookup.lookup_many(refs)
    assert again[1]["notices"][0]["code"] == "ItemNotAccessible"
    assert amazon.get_items_requests() == 1  # both answers came from the cache


def refuse_over(*bad: str) -> dict[str, Any]:
    """Amazon's 400 for a getItems call with invalid ItemIds: one error per bad ASIN."""
    return {
        "errors": [
            {
                "code": "InvalidParameterValue",
                "message": f"The value [{asin}] provided in the request for ItemIds is invalid.",
            }
            for asin in bad
        ]
    }


class Script:
    """getItems answers: the queued (status, body) pairs first, then the catalog."""

    def __init__(self, amazon: Any, *answers: tuple[int, dict[str, Any]]) -> None:
        self.amazon = amazon
        self.answers = list(answers)
        amazon.mocker.post(GET_ITEMS_URL, json=self)

    def __call__(self, request: Any, context: Any) -> dict[str, Any]:
        if self.answers:
            self.amazon.get_items_calls.append(request.json())
            context.status_code, body = self.answers.pop(0)
            return body
        return self.amazon.answer(request, context)


def test_asins_a_refused_call_said_nothing_about_are_sent_again(app, amazon):
    """One user's bad ASIN must not cost another user's product coalesced with it."""
    lookup = app.extensions["arda_amazon_bp"].lookup
    amazon.add(make_item(asin(1)), make_item(asin(3)))
    bad = asin(2)
    Script(amazon, (400, refuse_over(bad)))
    refs = [ProductRef(US, asin(1)), ProductRef(US, bad), ProductRef(US, asin(3))]
    results = lookup.lookup_many(refs)
    assert [call["itemIds"] for call in amazon.get_items_calls] == [
        [asin(1), bad, asin(3)],
        [asin(1), asin(3)],
    ]
    assert results[0]["title"] == f"Nitrile Gloves {asin(1)}"
    assert results[2]["title"] == f"Nitrile Gloves {asin(3)}"
    assert results[1]["notices"][0]["code"] == "InvalidParameterValue"
    # The ASIN Amazon named keeps its verdict: asking again costs no call.
    assert lookup.lookup_many([ProductRef(US, bad)])[0]["notices"][0]["code"] == (
        "InvalidParameterValue"
    )
    assert amazon.get_items_requests() == 2


def test_a_whole_call_refusal_caches_nothing_for_the_asins_it_did_not_name(app, amazon):
    """Refused over asin(2), then (sent again) over asin(4): asin(1) was never looked at,
    so it answers empty once, is not cached, and the next import asks Amazon again."""
    lookup = app.extensions["arda_amazon_bp"].lookup
    amazon.add(make_item(asin(1)))
    Script(amazon, (400, refuse_over(asin(2))), (400, refuse_over(asin(4))))
    refs = [ProductRef(US, asin(n)) for n in (1, 2, 4)]
    first = lookup.lookup_many(refs)
    assert [call["itemIds"] for call in amazon.get_items_calls] == [
        [asin(1), asin(2), asin(4)],
        [asin(1), asin(4)],
    ]
    assert first[0]["title"] is None  # sent once again already; Amazon said nothing
    assert first[0]["notices"][0]["code"] == "ItemNotReturned"
    again = lookup.lookup_many([ProductRef(US, asin(1))])
    assert again[0]["title"] == f"Nitrile Gloves {asin(1)}"
    assert amazon.get_items_calls[-1]["itemIds"] == [asin(1)]


def test_a_call_leaving_late_does_not_bring_the_next_within_amazons_second(sandbox_app, sandbox):
    """The first call fetches a token for 0.6 s after taking its slot; the second slot
    frees 1.15 s after the first. Spaced by slots, the two would reach Amazon 0.55 s apart
    and the second would be throttled; the late call holds the next slot instead."""
    sandbox.configure(rate=1)  # Amazon's own 1 call/second, arrivals in a sliding window
    sandbox.fault("delay", endpoint="token", delay=0.6)
    app = sandbox_app(
        AMAZON_RATE_LIMITS="1/second;8640/day",
        AMAZON_RATE_MARGIN_SECONDS=0.15,
        AMAZON_MAX_ITEMS_PER_CALL=1,
        AMAZON_MAX_WAIT_SECONDS=5,
    )
    links = [f"https://www.amazon.com/dp/B0SYN{n:05d}" for n in (901, 902)]
    start = threading.Barrier(2)

    def one(link):
        client = app.test_client()
        start.wait(5)
        return client.post(
            "/api/amazon/import",
            json={"url": link},
            headers={"Authorization": f"Bearer {USER_TOKEN}"},
        )

    results = [None, None]
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, one(links[i]))) for i in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert [r.status_code for r in results] == [200, 200], [r.get_json() for r in results]
    stats = sandbox.stats()
    assert stats["total_calls"] == 2
    assert stats["throttled_calls"] == 0
    assert stats["max_calls_in_window"] == 1
