"""A small per-process cache with a short TTL, in front of the shared product cache.

A cache hit that goes to Redis pays a round trip and a decode on every request. Hot
products are asked for again within seconds, so each worker keeps the few it served last
for ``AMAZON_FRONT_CACHE_TTL_SECONDS`` (docs/configuration.md). What that costs in
staleness is written down in docs/performance.md ("The front cache").

Reads take no lock: a ``dict.get`` is atomic under the GIL, and an entry is a tuple that is
replaced, never changed. Writes take a lock and evict the oldest entries past
``max_entries``: with a TTL of seconds, "oldest written" is close enough to "least recently
used", and a read stays one dictionary lookup.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .forks import reset_in_child

V = TypeVar("V")


class FrontCache(Generic[V]):
    """At most ``max_entries`` values, each for at most ``ttl`` seconds (0 turns it off)."""

    def __init__(
        self,
        ttl: float,
        max_entries: int,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[float, V]] = {}
        self._lock = threading.Lock()
        reset_in_child(self._reset_after_fork)

    def _reset_after_fork(self) -> None:
        # A lock held by a parent thread at fork time would stay held (forks.py); the
        # entries describe the parent's recent answers, so a worker starts empty.
        self._lock = threading.Lock()
        self._entries = {}

    @property
    def enabled(self) -> bool:
        return self.ttl > 0

    def get(self, key: str) -> V | None:
        """The value stored under ``key`` if it has not expired, else ``None``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            return None
        return entry[1]

    def stale(self, key: str) -> V | None:
        """The value stored under ``key`` even if expired (for revalidation), else ``None``."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1]

    def set(self, key: str, value: V, ttl: float | None = None) -> None:
        """Keep ``value`` for ``min(ttl, self.ttl)`` seconds; a TTL <= 0 stores nothing."""
        ttl = self.ttl if ttl is None else min(ttl, self.ttl)
        if ttl <= 0:
            return
        expires = self._clock() + ttl
        with self._lock:
            self._entries.pop(key, None)  # re-inserted last: the newest entry
            self._entries[key] = (expires, value)
            while len(self._entries) > self.max_entries:
                del self._entries[next(iter(self._entries))]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
