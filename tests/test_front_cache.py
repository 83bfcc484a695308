"""``arda_amazon_bp.front_cache``: TTL, the entry bound, and turning it off."""

from __future__ import annotations

import threading

import pytest
from forking import needs_fork, run_forked

from arda_amazon_bp.front_cache import FrontCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_value_lives_for_the_ttl_and_not_longer(clock: Clock) -> None:
    cache: FrontCache[str] = FrontCache(2.0, 10, clock=clock)
    cache.set("a", "product")
    clock.now += 1.999
    assert cache.get("a") == "product"
    clock.now += 0.001
    assert cache.get("a") is None


def test_a_shorter_ttl_per_entry_wins_but_never_a_longer_one(clock: Clock) -> None:
    cache: FrontCache[str] = FrontCache(2.0, 10, clock=clock)
    cache.set("short", "x", ttl=0.5)
    cache.set("long", "y", ttl=30)
    clock.now += 0.5
    assert cache.get("short") is None
    assert cache.get("long") == "y"
    clock.now += 1.5
    assert cache.get("long") is None  # capped at the cache's own 2 s


@pytest.mark.parametrize("ttl", [0, -1])
def test_a_ttl_of_zero_stores_nothing(clock: Clock, ttl: float) -> None:
    off: FrontCache[str] = FrontCache(0, 10, clock=clock)
    off.set("a", "x")
    assert not off.enabled
    assert off.get("a") is None and len(off) == 0
    on: FrontCache[str] = FrontCache(2, 10, clock=clock)
    on.set("a", "x", ttl=ttl)
    assert on.get("a") is None and len(on) == 0


def test_the_oldest_written_entries_go_first_past_the_bound(clock: Clock) -> None:
    cache: FrontCache[int] = FrontCache(2.0, 3, clock=clock)
    for n in range(3):
        cache.set(f"k{n}", n)
    cache.set("k0", 10)  # rewritten: now the newest
    cache.set("k3", 3)
    assert len(cache) == 3
    assert cache.get("k1") is None
    assert [cache.get(k) for k in ("k2", "k0", "k3")] == [2, 10, 3]


def test_clear_empties_it(clock: Clock) -> None:
    cache: FrontCache[int] = FrontCache(2.0, 3, clock=clock)
    cache.set("a", 1)
    cache.clear()
    assert cache.get("a") is None and len(cache) == 0


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        FrontCache(2.0, 0)


@pytest.mark.timeout(30)
def test_concurrent_writers_keep_the_bound() -> None:
    cache: FrontCache[int] = FrontCache(60.0, 50)

    def write(offset: int) -> None:
        for n in range(2000):
            cache.set(f"{offset}-{n % 300}", n)
            cache.get(f"{offset}-{(n * 7) % 300}")

    threads = [threading.Thread(target=write, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50


@needs_fork
@pytest.mark.timeout(30)
def test_a_forked_worker_starts_empty_with_a_free_lock() -> None:
    cache: FrontCache[int] = FrontCache(60.0, 10)
    cache.set("parent", 1)
    cache._lock.acquire()  # as if a parent thread were writing at the moment of fork
    try:

        def child() -> bool:
            empty = cache.get("parent") is None and len(cache) == 0
            cache.set("child", 2)  # would hang on the inherited lock
            return empty and cache.get("child") == 2

        assert run_forked(child)
    finally:
        cache._lock.release()
    assert cache.get("parent") == 1
