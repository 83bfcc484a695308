"""Product cache (``arda_amazon_bp.cache``): one contract, memory and Redis storages.

Behaviour both storages share runs against each (the ``backend`` fixture); Redis is the
real server from ``fixtures_redis``. Memory tests move an injected clock; Redis tests
use TTLs of a few tens of milliseconds or read ``PTTL``, never long sleeps.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from fixtures_app import USER_TOKEN, make_item, post_import
from fixtures_redis import RedisServer, redis_server_binary
from forking import run_forked
from hypothesis import given, settings
from hypothesis import strategies as st
from stack import free_port

from arda_amazon_bp import cache as cache_module
from arda_amazon_bp.cache import (
    KEY_PREFIX,
    MemoryCache,
    NullCache,
    ProductCache,
    RedisCache,
    cache_from_uri,
)
from arda_amazon_bp.config import ConfigError

LOGGER = "arda_amazon_bp.cache"


def product(asin: str = "B0EXAMPLE1", **changes: Any) -> dict[str, Any]:
    """A product record as the lookup layer caches it."""
    record: dict[str, Any] = {
        "asin": asin,
        "marketplace": "www.amazon.com",
        "detailPageUrl": f"https://www.amazon.com/dp/{asin}?tag=arda-20",
        "title": "Pilot G2 gel pens, fine point — 12 pack (日本語 ✓)",
        "imageUrl": "https://m.media-amazon.com/images/I/41abcDEF+gL._SL500_.jpg",
        "images": ["https://m.media-amazon.com/images/I/41abcDEF+gL._SL500_.jpg"],
        "price": {"amount": 12.99, "currency": "USD", "display": "$12.99"},
        "unitCount": 12,
        "unitPrice": None,
        "features": ["Smooth writing", "Retractable"],
        "missingFields": [],
    }
    record.update(changes)
    return record


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def warnings_from(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


@dataclass
class Backend:
    """Makes caches of one storage and lets time pass for them."""

    name: str
    make: Callable[[str], ProductCache]  # namespace -> a fresh cache
    advance: Callable[[float], None]
    made: list[ProductCache] = field(default_factory=list)


#: Redis topologies and the fixture that gives each one's URI (tests/fixtures_redis.py).
REDIS_URIS = {
    "redis": "redis_url",
    "redis-cluster": "redis_cluster_uri",
    "redis-sentinel": "redis_sentinel_uri",
}


@pytest.fixture(params=["memory", *REDIS_URIS])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    made: list[ProductCache] = []
    if request.param == "memory":
        clock = FakeClock()

        def make(namespace: str) -> ProductCache:
            made.append(MemoryCache(100, clock=clock))
            return made[-1]

        result = Backend("memory", make, clock.advance, made)
    else:
        url = request.getfixturevalue(REDIS_URIS[request.param])

        def make(namespace: str) -> ProductCache:
            made.append(RedisCache(url, namespace=namespace))
            return made[-1]

        result = Backend(request.param, make, time.sleep, made)
    yield result
    for cache in made:
        cache.close()


@pytest.fixture
def cache(backend: Backend) -> ProductCache:
    return backend.make("www.amazon.com")


@pytest.fixture
def raw_redis(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


# --- the shared contract ----------------------------------------------------------------


def test_is_a_product_cache(cache: ProductCache) -> None:
    assert isinstance(cache, ProductCache)
    assert isinstance(NullCache(), ProductCache)


def test_round_trip(cache: ProductCache) -> None:
    one, two = product("B0EXAMPLE1"), product("B0EXAMPLE2", title=None, unitCount=None)
    cache.set("www.amazon.com:B0EXAMPLE1", one, 60)
    cache.set("www.amazon.com:B0EXAMPLE2", two, 60)

    assert cache.get("www.amazon.com:B0EXAMPLE1") == one
    assert cache.get("www.amazon.com:B0EXAMPLE2") == two
    assert cache.get("www.amazon.com:B0MISSING0") is None
    # only hits; duplicates and misses in the request are harmless
    assert cache.get_many(
        ["www.amazon.com:B0EXAMPLE2", "www.amazon.com:B0MISSING0", "www.amazon.com:B0EXAMPLE2"]
    ) == {"www.amazon.com:B0EXAMPLE2": two}
    assert cache.get_many([]) == {}


def test_text_that_is_not_valid_utf8_round_trips(cache: ProductCache) -> None:
    # A lone surrogate (from a badly cut emoji, say) cannot be UTF-8; it must survive anyway.
    record = product(title="broken \ud83d emoji", brand="Ünïcode ✓")
    cache.set("k", record, 60)
    assert cache.get("k") == record


def test_set_replaces_the_value(cache: ProductCache) -> None:
    cache.set("k", product(title="old"), 60)
    cache.set("k", product(title="new"), 60)
    assert cache.get("k") == product(title="new")


def test_entries_expire_after_their_ttl(backend: Backend, cache: ProductCache) -> None:
    cache.set("short", product(), 0.05)
    cache.set("long", product(), 60)
    assert cache.get("short") == product()
    backend.advance(0.1)
    assert cache.get("short") is None
    assert cache.get_many(["short", "long"]) == {"long": product()}


@pytest.mark.parametrize("ttl", [0, -1, math.nan])
def test_ttl_not_positive_stores_nothing_and_drops_the_old_value(
    cache: ProductCache, ttl: float
) -> None:
    cache.set("new", product(), ttl)
    assert cache.get("new") is None
    cache.set("replaced", product(title="old"), 60)
    cache.set("replaced", product(title="new"), ttl)
    assert cache.get("replaced") is None  # never the value the writer meant to replace


def test_caller_bugs_raise_and_store_nothing(cache: ProductCache) -> None:
    with pytest.raises(ValueError, match="finite"):
        cache.set("k", product(), math.inf)
    with pytest.raises(TypeError, match="mappings"):
        cache.set("k", ["not", "a", "record"], 60)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        cache.set("k", {"when": object()}, 60)
    assert cache.get("k") is None


def test_values_are_copies_not_aliases(cache: ProductCache) -> None:
    record = product()
    cache.set("k", record, 60)
    record["title"] = "changed by the writer"
    record["images"].append("changed too")
    assert cache.get("k") == product()

    first = cache.get("k")
    assert first is not None
    first["price"]["amount"] = 0
    first["features"].clear()
    assert cache.get("k") == product()
    assert cache.get_many(["k"])["k"] is not cache.get_many(["k"])["k"]


def test_clear_forgets_everything(cache: ProductCache) -> None:
    for i in range(5):
        cache.set(f"k{i}", product(), 60)
    cache.clear()
    assert cache.get_many([f"k{i}" for i in range(5)]) == {}


def test_usable_after_close(cache: ProductCache) -> None:
    cache.set("k", product(), 60)
    cache.close()
    cache.set("k2", product(), 60)
    assert cache.get("k2") == product()


def test_two_caches_do_not_share(backend: Backend) -> None:
    # memory: two instances (two apps in one process); Redis: two namespaces on one server
    left, right = backend.make("www.amazon.com"), backend.make("www.amazon.co.uk")
    left.set("B0EXAMPLE1", product(title="left"), 60)
    right.set("B0EXAMPLE1", product(title="right"), 60)
    right.set("only-right", product(), 60)

    assert left.get("B0EXAMPLE1") == product(title="left")
    assert left.get("only-right") is None
    left.clear()
    assert right.get("B0EXAMPLE1") == product(title="right")


def test_many_threads(backend: Backend) -> None:
    cache = backend.make("www.amazon.com")
    threads, rounds, keys = 16, 150 if backend.name == "memory" else 30, 40
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            start.wait()
            for i in range(rounds):
                key = f"k{(n * 7 + i) % keys}"
                cache.set(key, {"key": key, "writer": n, "round": i}, 60)
                got = cache.get(key)
                assert got is None or got["key"] == key
                for hit_key, hit in cache.get_many([f"k{j}" for j in range(0, keys, 3)]).items():
                    assert hit["key"] == hit_key  # never another key's value, never torn
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors
    assert len(cache.get_many([f"k{j}" for j in range(keys)])) == keys


# --- memory -----------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_memory_evicts_the_least_recently_used(clock: FakeClock) -> None:
    cache = MemoryCache(3, clock=clock)
    for key in "abc":
        cache.set(key, {"k": key}, 60)
    assert cache.get("a") is not None  # a read is a use: "b" is now the oldest
    cache.set("d", {"k": "d"}, 60)
    assert len(cache) == 3
    assert cache.get("b") is None
    assert cache.get_many(["c"]) == {"c": {"k": "c"}}  # get_many counts as a use too
    cache.set("e", {"k": "e"}, 60)
    assert sorted(cache.get_many(list("abcde"))) == ["c", "d", "e"]


def test_memory_set_of_an_existing_key_refreshes_its_recency(clock: FakeClock) -> None:
    cache = MemoryCache(2, clock=clock)
    cache.set("a", {}, 60)
    cache.set("b", {}, 60)
    cache.set("a", {"again": True}, 60)
    cache.set("c", {}, 60)
    assert sorted(cache.get_many(list("abc"))) == ["a", "c"]


def test_memory_evicts_expired_entries_before_live_ones(clock: FakeClock) -> None:
    cache = MemoryCache(3, clock=clock)
    cache.set("oldest-live", {}, 60)
    cache.set("expiring", {}, 1)
    cache.set("live", {}, 60)
    clock.advance(2)
    cache.set("new", {}, 60)  # full: the expired entry goes, not the least recently used
    assert sorted(cache.get_many(["oldest-live", "expiring", "live", "new"])) == [
        "live",
        "new",
        "oldest-live",
    ]


def test_memory_drops_expired_entries_on_access(clock: FakeClock) -> None:
    cache = MemoryCache(10, clock=clock)
    cache.set("a", {}, 1)
    cache.set("b", {}, 1)
    clock.advance(1)  # expiry is inclusive: at exactly ttl the entry is gone
    assert len(cache) == 2  # nothing has touched them yet
    assert cache.get("a") is None
    assert cache.get_many(["b"]) == {}
    assert len(cache) == 0


def test_memory_writes_drop_whatever_has_expired(clock: FakeClock) -> None:
    cache = MemoryCache(100, clock=clock)
    for i in range(50):
        cache.set(f"k{i}", {}, 1)
    clock.advance(5)
    cache.set("fresh", {}, 60)
    assert len(cache) == 1


def test_memory_overwrites_do_not_grow_without_bound(clock: FakeClock) -> None:
    cache = MemoryCache(10, clock=clock)
    for i in range(10_000):
        cache.set(f"k{i % 3}", {"i": i}, 3600)
    assert len(cache) == 3
    assert len(cache._heap) <= 2 * 3 + 64  # stale expiry records are compacted away
    assert cache.get("k0") == {"i": 9999}


def test_memory_stores_compressed_json_not_dicts(clock: FakeClock) -> None:
    cache = MemoryCache(10, clock=clock)
    record = product()
    cache.set("k", record, 60)
    payload = cache._data["k"].payload
    assert isinstance(payload, bytes)
    assert len(payload) < len(json.dumps(record, ensure_ascii=False).encode())
    plain = MemoryCache(10, clock=clock, compress=False)
    plain.set("k", record, 60)
    assert json.loads(plain._data["k"].payload) == record


@pytest.mark.parametrize("payload", [b"\x00garbage", b""])
def test_memory_corrupted_payload_is_a_miss(
    clock: FakeClock, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = MemoryCache(10, clock=clock)
    cache.set("k", product(), 60)
    cache._data["k"].payload = payload  # what a bug or a bit flip would leave behind
    assert cache.get("k") is None
    assert cache.get_many(["k"]) == {}
    assert warnings_from(caplog)


@pytest.mark.parametrize("max_entries", [0, -1, 1.5, True])
def test_memory_refuses_a_bad_bound(max_entries: Any) -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryCache(max_entries)


def test_memory_forked_child_starts_afresh() -> None:
    cache = MemoryCache(10)
    cache.set("parent", product(), 60)

    def child() -> bool:  # must neither deadlock nor see half-made state
        cache.set("child", product(), 60)
        return cache.get("child") == product() and cache.get("parent") is None

    with cache._lock:  # as if another thread were mid-update when the worker forks
        assert run_forked(child)
    assert cache.get("parent") == product()
    assert cache.get("child") is None


class _Model:
    """The specification, slowly: LRU order, expired entries gone first, inclusive expiry."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries: OrderedDict[str, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, key: str, now: float) -> dict[str, Any] | None:
        entry = self.entries.get(key)
        if entry is None or entry[0] <= now:
            self.entries.pop(key, None)
            return None
        self.entries.move_to_end(key)
        return entry[1]

    def set(self, key: str, value: dict[str, Any], ttl: float, now: float) -> None:
        self.entries.pop(key, None)
        if ttl <= 0:
            return
        self.entries[key] = (now + ttl, value)
        for stale in [k for k, (expires, _) in self.entries.items() if expires <= now]:
            del self.entries[stale]
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)


_KEYS = st.sampled_from(["a", "b", "c", "d", "e"])
_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), _KEYS, st.sampled_from([-1.0, 0.5, 1.0, 2.0, 10.0])),
        st.tuples(st.just("get"), _KEYS),
        st.tuples(st.just("get_many"), st.lists(_KEYS, max_size=4)),
        st.tuples(st.just("advance"), st.sampled_from([0.25, 0.5, 1.0])),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=_OPS)
def test_memory_behaves_like_the_model(ops: list[tuple[Any, ...]]) -> None:
    clock = FakeClock()
    cache, model = MemoryCache(3, clock=clock), _Model(3)
    for n, op in enumerate(ops):
        if op[0] == "set":
            cache.set(op[1], {"n": n}, op[2])
            model.set(op[1], {"n": n}, op[2], clock.now)
        elif op[0] == "get":
            assert cache.get(op[1]) == model.get(op[1], clock.now)
        elif op[0] == "get_many":
            expected = {k: v for k in op[1] if (v := model.get(k, clock.now)) is not None}
            assert cache.get_many(op[1]) == expected
        else:
            clock.advance(op[1])
        assert len(cache) <= 3


# --- redis ------------------------------------------------------------------------------


def test_redis_key_layout_json_value_and_px_ttl(redis_url: str, raw_redis: redis.Redis) -> None:
    cache = RedisCache(redis_url, namespace="www.amazon.com")
    cache.set("www.amazon.com:B0EXAMPLE1", product(), 3600)
    cache.set("fractional", product(), 1.5)
    cache.set("tiny", product(), 0.0001)  # rounds up to 1 ms rather than "forever"

    key = f"{KEY_PREFIX}www.amazon.com:www.amazon.com:B0EXAMPLE1"
    assert key == "arda_amazon_bp:cache:www.amazon.com:www.amazon.com:B0EXAMPLE1"
    assert json.loads(raw_redis.get(key)) == product()  # readable JSON, not pickles
    assert 3_599_000 < raw_redis.pttl(key) <= 3_600_000
    assert 1_400 < raw_redis.pttl(f"{KEY_PREFIX}www.amazon.com:fractional") <= 1_500
    assert raw_redis.pttl(f"{KEY_PREFIX}www.amazon.com:tiny") in (-2, 0, 1)
    cache.close()


def test_redis_clear_stays_inside_its_namespace(redis_url: str, raw_redis: redis.Redis) -> None:
    # "a*" must be matched literally, or clearing it would wipe "ab" too
    star, neighbour = (RedisCache(redis_url, namespace=ns) for ns in ("a*", "ab"))
    star.set("k", product(), 60)
    neighbour.set("k", product(), 60)
    raw_redis.set("someone-else:k", b"theirs")
    star.clear()
    assert star.get("k") is None
    assert neighbour.get("k") == product()
    assert raw_redis.get("someone-else:k") == b"theirs"


@pytest.mark.parametrize(
    "stored",
    [b"not json", b"[1, 2, 3]", b'"a string"', b"\xff\xfe\x00", b'{"truncated": '],
)
def test_redis_corrupted_value_is_a_miss(
    redis_url: str, raw_redis: redis.Redis, stored: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisCache(redis_url, namespace="ns")
    raw_redis.set(f"{KEY_PREFIX}ns:bad", stored)
    cache.set("good", product(), 60)
    assert cache.get("bad") is None
    assert cache.get_many(["bad", "good"]) == {"good": product()}
    assert any("corrupted" in message for message in warnings_from(caplog))
    cache.set("bad", product(), 60)  # the next lookup's write heals it
    assert cache.get("bad") == product()


def test_redis_value_of_another_type_is_a_miss(redis_url: str, raw_redis: redis.Redis) -> None:
    cache = RedisCache(redis_url, namespace="ns")
    raw_redis.hset(f"{KEY_PREFIX}ns:hash", "field", "value")
    assert cache.get("hash") is None
    cache.set("hash", product(), 60)  # SET replaces any type
    assert cache.get("hash") == product()


@pytest.fixture(params=list(REDIS_URIS))
def topology(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[redis.Redis]]]:
    """(a flushed Redis URI of each topology, plain clients of every primary behind it)."""
    uri = request.getfixturevalue(REDIS_URIS[request.param])
    if request.param == "redis-cluster":
        clients = request.getfixturevalue("redis_cluster_nodes").clients()
    elif request.param == "redis-sentinel":
        clients = [redis.Redis.from_url(request.getfixturevalue("redis_sentinel_pair").primary.url)]
    else:
        clients = [redis.Redis.from_url(uri)]
    yield uri, clients
    for client in clients:
        client.close()


def test_redis_clear_removes_more_than_one_batch(topology: tuple[str, list[redis.Redis]]) -> None:
    # clear() unlinks in batches of 500; on a cluster the keys sit on every primary.
    uri, primaries = topology
    cache, neighbour = (RedisCache(uri, namespace=ns) for ns in ("www.amazon.com", "other"))
    keys = [f"B0CLEAR{n:04d}" for n in range(1234)]
    for key in keys:
        cache.set(key, {"k": key}, 60)
    neighbour.set("kept", product(), 60)
    pattern = f"{KEY_PREFIX}www.amazon.com:*"
    per_node = [sum(1 for _ in client.scan_iter(match=pattern, count=1000)) for client in primaries]
    assert sum(per_node) == len(keys)
    assert all(count > 0 for count in per_node)  # spread over every primary

    cache.clear()
    assert [sum(1 for _ in c.scan_iter(match=pattern, count=1000)) for c in primaries] == [0] * len(
        primaries
    )
    assert cache.get_many(keys[:50]) == {}
    assert neighbour.get("kept") == product()
    cache.close()
    neighbour.close()


@pytest.mark.parametrize("scheme", ["redis+cluster", "redis+sentinel"])
def test_unreachable_cluster_or_sentinel_is_a_quick_miss_logged_once(
    scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    uri = f"{scheme}://:s3cret@127.0.0.1:{port}" + ("/arda" if scheme == "redis+sentinel" else "")
    cache = cache_from_uri(uri, namespace="ns", max_entries=1)
    started = time.monotonic()
    for _ in range(5):
        assert cache.get("k") is None
        cache.set("k", product(), 60)
    assert time.monotonic() - started < 2.0  # loose: refused connections fail at once
    assert len(warnings_from(caplog)) == 1
    assert "s3cret" not in caplog.text
    assert "s3cret" not in repr(cache)


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("redis+cluster://", "host:port"),
        ("redis+cluster://127.0.0.1", "host:port"),
        ("redis+cluster://127.0.0.1:7000,127.0.0.1", "host:port"),
        ("redis+cluster://:s3cret@127.0.0.1:notaport", "host:port"),
        ("redis+cluster://127.0.0.1:99999", "host:port"),
        ("redis+cluster://127.0.0.1:7000?socket_timeout=1", "query string"),
        ("redis+sentinel://:s3cret@127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/", "service name"),
        ("redis+sentinel://127.0.0.1/arda", "host:port"),
    ],
)
def test_malformed_cluster_or_sentinel_uri_fails_at_start(uri: str, problem: str) -> None:
    with pytest.raises(ConfigError, match="AMAZON_CACHE_STORAGE_URI") as raised:
        cache_from_uri(uri, namespace="ns", max_entries=10)
    assert problem in str(raised.value)
    assert "s3cret" not in str(raised.value)


@pytest.mark.parametrize("config_key", ["redis_cluster_uri", "redis_sentinel_uri"])
def test_one_uri_shares_quota_and_cache_between_two_apps(
    config_key: str, request: pytest.FixtureRequest, make_app: Any, amazon: Any
) -> None:
    uri = request.getfixturevalue(config_key)
    amazon.add(make_item("B0SHARED01"), make_item("B0SHARED02"))
    first, second = (
        make_app(
            AMAZON_RATE_LIMIT_STORAGE_URI=uri,
            AMAZON_CACHE_STORAGE_URI=uri,
            # one call a minute: the second app's own call must find the slot taken
            AMAZON_RATE_LIMITS="1/minute;100/day",
            AMAZON_MAX_WAIT_SECONDS=0,
        )
        for _ in range(2)
    )
    auth = {"Authorization": f"Bearer {USER_TOKEN}"}

    def fetch(app: Any, asin: str) -> Any:
        return post_import(
            app.test_client(), {"url": f"https://www.amazon.com/dp/{asin}"}, headers=auth
        )

    assert fetch(first, "B0SHARED01").status_code == 200
    assert fetch(second, "B0SHARED01").get_json()["asin"] == "B0SHARED01"  # from the cache
    assert len(amazon.get_items_calls) == 1

    refused = fetch(second, "B0SHARED02")  # first's call holds the minute's only slot
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert (error["code"], error["details"]["limit"]) == ("AMAZON_RATE_LIMITED", "minute")
    assert len(amazon.get_items_calls) == 1


def test_redis_is_shared_with_another_process(redis_url: str) -> None:
    cache = RedisCache(redis_url, namespace="www.amazon.com")
    cache.set("from-parent", product("B0PARENT01"), 60)
    script = textwrap.dedent(
        """
        import json, sys
        from arda_amazon_bp.cache import RedisCache
        cache = RedisCache(sys.argv[1], namespace="www.amazon.com")
        cache.set("from-child", {"asin": "B0CHILD001", "pid": 1}, 60)
        print(json.dumps(cache.get("from-parent")))
        """
    )
    child = subprocess.run(
        [sys.executable, "-c", script, redis_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(child.stdout) == product("B0PARENT01")
    assert cache.get("from-child") == {"asin": "B0CHILD001", "pid": 1}


def test_redis_forked_child_uses_its_own_connection(redis_url: str) -> None:
    cache = RedisCache(redis_url, namespace="ns")
    cache.set("parent", product(), 60)  # the parent now holds a pooled connection
    parent_client = cache._client()

    def child() -> bool:
        if cache._client() is parent_client or cache.get("parent") != product():
            return False
        cache.set("child", product("B0CHILD001"), 60)
        return True

    assert run_forked(child)
    # the parent's socket was not used by the child: its replies still line up
    assert cache.get("parent") == product()
    assert cache.get("child") == product("B0CHILD001")
    assert cache._client() is parent_client


def test_redis_client_is_rebuilt_when_the_pid_changes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Covers forks that run no at-fork hooks: the pid check alone must suffice.
    cache = RedisCache(redis_url, namespace="ns")
    first = cache._client()
    monkeypatch.setattr(cache_module.os, "getpid", lambda: -1)
    assert cache._client() is not first
    cache.set("k", product(), 60)
    assert cache.get("k") == product()


def test_redis_outage_is_a_miss_logged_once(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = RedisCache(own_redis.url, namespace="ns", retry_interval=0)  # try Redis every call
    retry = cache._client().get_retry()
    assert retry is not None
    assert retry.get_retries() == 0  # redis-py's backoff retries would hold each call
    cache.set("k", product(), 60)
    assert cache.get("k") == product()

    own_redis.stop()
    for _ in range(20):
        started = time.monotonic()
        assert cache.get("k") is None
        assert cache.get_many(["k", "other"]) == {}
        cache.set("k2", product(), 60)  # a no-op, not an error
        cache.clear()
        assert time.monotonic() - started < 1.0  # loose: refused connections fail at once
    assert len(warnings_from(caplog)) == 1
    assert "unavailable" in warnings_from(caplog)[0]
    assert warnings_from(caplog, logging.INFO) == []

    own_redis.start()
    cache.set("k", product(), 60)
    assert cache.get("k") == product()
    assert len(warnings_from(caplog)) == 1
    assert len(warnings_from(caplog, logging.INFO)) == 1
    assert "answers again" in warnings_from(caplog, logging.INFO)[0]
    cache.close()


def test_redis_outage_waits_retry_interval_before_trying_again(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = FakeClock()
    cache = RedisCache(own_redis.url, namespace="ns", retry_interval=5, clock=clock)
    own_redis.stop()
    assert cache.get("k") is None  # fails, and opens the 5 s window

    own_redis.start()
    with contextlib.closing(redis.Redis.from_url(own_redis.url)) as raw:
        raw.set(f"{KEY_PREFIX}ns:k", json.dumps(product()))
    clock.advance(4.9)
    assert cache.get("k") is None  # Redis is back, but not asked yet
    assert warnings_from(caplog, logging.INFO) == []
    clock.advance(0.2)
    assert cache.get("k") == product()
    assert len(warnings_from(caplog)) == 1
    assert len(warnings_from(caplog, logging.INFO)) == 1


def test_redis_restart_between_calls_is_not_an_outage(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisCache(own_redis.url, namespace="ns")
    cache.set("k", product(), 60)  # leaves a pooled connection to the old server
    own_redis.stop()
    own_redis.start()
    cache.set("k", product(), 60)  # the dead socket is replaced at checkout
    assert cache.get("k") == product()
    assert warnings_from(caplog) == []


def test_redis_that_never_answers_costs_a_fraction_of_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that accepts connections and then says nothing (a hung or overloaded host).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        cache = RedisCache(f"redis://127.0.0.1:{port}/0", namespace="ns", retry_interval=0)
        started = time.monotonic()
        assert cache.get("k") is None
        cache.set("k", product(), 60)
        elapsed = time.monotonic() - started
    assert elapsed < 2.0  # two calls, each bounded by the 0.25 s timeouts
    assert len(warnings_from(caplog)) == 1


def test_redis_over_a_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--unixsocket", str(sock), "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        cache = cache_from_uri(f"redis+unix://{sock}", namespace="ns", max_entries=1)
        assert isinstance(cache, RedisCache)
        cache.set("k", product(), 60)
        assert cache.get("k") == product()
        cache.close()
    finally:
        server.kill()
        server.wait(timeout=10)


def test_redis_needs_the_redis_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis", None)  # as if the extra were not installed
    with pytest.raises(ImportError, match=r"'redis' extra.*arda-amazon-bp\[redis\]"):
        cache_from_uri("redis://127.0.0.1:6379/0", namespace="ns", max_entries=10)
    assert isinstance(cache_from_uri("memory://", namespace="ns", max_entries=10), MemoryCache)


# --- choosing a storage -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        ("memory://", MemoryCache),
        ("null://", NullCache),
        ("redis://127.0.0.1:1/0", RedisCache),  # nothing listens: nothing connects yet
        ("rediss://user:pw@127.0.0.1:1/0", RedisCache),
        ("redis+unix:///tmp/nowhere.sock", RedisCache),
        ("unix:///tmp/nowhere.sock?db=1", RedisCache),
        ("REDIS://127.0.0.1:1", RedisCache),
    ],
)
def test_cache_from_uri_picks_the_storage(uri: str, kind: type) -> None:
    cache = cache_from_uri(uri, namespace="www.amazon.com", max_entries=7)
    assert type(cache) is kind
    if isinstance(cache, MemoryCache):
        assert cache.max_entries == 7
    if isinstance(cache, RedisCache):
        assert cache.namespace == "www.amazon.com"


def test_memory_uri_gives_each_caller_its_own_cache() -> None:
    first = cache_from_uri("memory://", namespace="ns", max_entries=10)
    second = cache_from_uri("memory://", namespace="ns", max_entries=10)
    first.set("k", product(), 60)
    assert second.get("k") is None


@pytest.mark.parametrize(
    "uri", ["memcached://127.0.0.1:11211", "valkey+cluster://h:7000", "127.0.0.1:6379", ""]
)
def test_unknown_scheme_names_the_config_key(uri: str) -> None:
    with pytest.raises(ConfigError, match="AMAZON_CACHE_STORAGE_URI") as raised:
        cache_from_uri(uri, namespace="ns", max_entries=10)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "uri",
    ["redis://:s3cret@127.0.0.1:notaport/0", "redis://:s3cret@127.0.0.1/0?no_such_option=1"],
)
def test_malformed_redis_uri_fails_at_start_with_the_password_hidden(uri: str) -> None:
    with pytest.raises(ConfigError, match="AMAZON_CACHE_STORAGE_URI") as raised:
        cache_from_uri(uri, namespace="ns", max_entries=10)
    assert "s3cret" not in str(raised.value)
    assert "***" in str(raised.value)


def test_redis_repr_and_logs_hide_the_password(caplog: pytest.LogCaptureFixture) -> None:
    cache = RedisCache("redis://user:s3cret@127.0.0.1:1/0", namespace="ns")
    assert cache.get("k") is None  # nothing listens on port 1
    assert "s3cret" not in repr(cache)
    assert "s3cret" not in caplog.text
    assert warnings_from(caplog)


@pytest.mark.parametrize("namespace", ["", "a:b"])
def test_namespace_must_be_unambiguous(namespace: str) -> None:
    with pytest.raises(ValueError, match="namespace"):
        cache_from_uri("memory://", namespace=namespace, max_entries=10)


def test_null_cache_stores_nothing() -> None:
    cache = NullCache()
    cache.set("k", product(), 60)
    assert cache.get("k") is None
    assert cache.get_many(["k"]) == {}
    cache.clear()
    cache.close()
