"""Product cache: product records kept between lookups, so a repeat import costs no quota.

Amazon allows 1 request/second and 8,640/day per credential triple, so every record we
can serve again without asking is worth keeping. Three storages share one interface,
:class:`ProductCache`, and are chosen by ``AMAZON_CACHE_STORAGE_URI`` (like
``limits.storage.storage_from_string``) through :func:`cache_from_uri`:

``memory://`` → :class:`MemoryCache`
    One per extension instance (two apps in one process never share it), one per worker
    process. A bounded LRU with a per-entry TTL, thread-safe, with an injectable clock.

``redis://``, ``rediss://``, ``redis+unix://`` (or redis-py's ``unix://``),
``redis+cluster://``, ``redis+sentinel://`` → :class:`RedisCache`
    Shared by every worker and host that uses the same server and namespace. The URI
    forms are ``limits``' (docs/configuration.md, "Storage URIs"), so the quota's URI
    serves the cache too.

``null://`` → :class:`NullCache`
    Stores nothing. ``AMAZON_CACHE_TTL_SECONDS = 0`` turns the cache off; the caller
    picks :class:`NullCache` (or skips the cache) in that case.

Decisions
---------
* **A cache never fails an import.** Every storage error becomes a miss (``get``,
  ``get_many``) or a no-op (``set``, ``clear``, ``close``). A Redis outage is logged once
  at WARNING when it starts and once at INFO when Redis answers again, not per call.
  A stored value that is not JSON, or not a JSON object, is a miss (logged at WARNING);
  the next lookup overwrites it.
* **Callers get copies.** Values are plain JSON-able mappings (product records). Both
  storages keep the *encoded* record and decode it on every read, so neither the dict
  passed to ``set`` nor the one returned by ``get`` aliases what is cached. A value that
  is not a mapping, or not JSON-serialisable, is the caller's bug and raises
  :class:`TypeError`/:class:`ValueError` before anything is stored.
* **TTL.** ``ttl`` is in seconds and may be fractional. ``ttl <= 0`` (or NaN) stores
  nothing and removes any older value under that key, so a reader never gets a record
  the writer meant to replace. An infinite ``ttl`` is refused: Amazon's terms cap how
  long product data may be kept (``AMAZON_CACHE_TTL_SECONDS`` ≤ 86,400).
* **Memory layout.** ``MemoryCache`` stores each record as compact JSON (UTF-8),
  deflate-compressed with a preset dictionary of the product record's field names and
  URL prefixes, instead of a dict of dicts. ``benchmarks/bench_cache_memory.py``
  measures it: a record of ~1.6 KB of JSON costs ~1.0 KB of RSS (a ~0.67 KB payload
  plus the key and bookkeeping) instead of ~3.4 KB as a dict, or ~1.9 KB as plain JSON
  bytes; 100,000 entries add ~95 MB, well under 200 MB per worker. The price is
  ~30 µs of decompression and parsing per hit, nothing next to an upstream call. The
  bound is a number of entries (``AMAZON_CACHE_MAX_ENTRIES``), not bytes: records are
  all of one shape and size, so entries × the measured size is the memory bound.
* **Eviction.** Least recently used (``get`` counts as a use) once ``max_entries`` is
  reached, but expired entries go first: they are dropped when read, and every ``set``
  also drops whatever has expired (a min-heap by expiry makes that cheap).
* **Redis layout.** Key ``arda_amazon_bp:cache:{namespace}:{key}``; the value is the
  record's compact JSON (readable with ``redis-cli``), written with ``SET … PX`` (PX,
  milliseconds, so fractional TTLs work) and read with one ``MGET`` for a batch.
  Redis bounds itself by TTL and its ``maxmemory`` policy; ``max_entries`` does not
  apply. Namespaces may not contain ``:``, so no namespace is a prefix of another and
  ``clear()`` (``SCAN`` + ``UNLINK`` on the namespace) never touches a neighbour.
* **Cluster and Sentinel.** The client is built by ``limits``' ``RedisClusterStorage`` /
  ``RedisSentinelStorage`` from the same URI the quota takes (its storage object is
  only the builder), with the timeouts below for the sentinels too. Keys carry no hash
  tag, so a namespace's records spread over every primary: a batch read is one ``MGET``
  per slot (redis-py's ``mget_nonatomic``), ``clear()`` scans every primary. A
  malformed URI is refused at start-up without connecting; ``limits`` ignores a query
  string on these schemes, so one is refused instead of dropped.
* **Redis client per process, short timeouts, no retries.** The ``redis`` package is
  the optional ``redis`` extra and is imported only by :class:`RedisCache`. The client
  is built on first use and rebuilt when ``os.getpid()`` changes (after a gunicorn
  fork), so workers never share a socket. Connect and read timeouts are 0.25 s and
  redis-py's retries are off, so an unreachable Redis costs a request at most about a
  quarter of a second. After a failure the cache does not try Redis again for
  ``retry_interval`` (1 s): during an outage most calls return at once. Options in the
  URL's query string (``?socket_timeout=1``) override these defaults.
* **Fork safety.** Locks and state built in a parent are rebuilt in a forked child
  (:func:`.forks.reset_in_child`): a ``memory://`` cache starts empty in each worker.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit, urlunsplit

from .config import ConfigError
from .forks import reset_in_child

if TYPE_CHECKING:
    import redis

__all__ = [
    "KEY_PREFIX",
    "MemoryCache",
    "NullCache",
    "ProductCache",
    "RedisCache",
    "cache_from_uri",
]

logger = logging.getLogger(__name__)

#: Every Redis key this module writes starts with this, then ``{namespace}:{key}``.
KEY_PREFIX = "arda_amazon_bp:cache:"

_CONFIG_KEY = "AMAZON_CACHE_STORAGE_URI"
_T = TypeVar("_T")


@runtime_checkable
class ProductCache(Protocol):
    """What the lookup layer needs from a cache. No method raises on a storage failure."""

    def get(self, key: str) -> dict[str, Any] | None:
        """A copy of the live value under ``key``, or ``None``."""
        ...

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Copies of the live values among ``keys``; misses are absent from the result."""
        ...

    def set(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds; ``ttl <= 0`` stores nothing."""
        ...

    def clear(self) -> None:
        """Forget every value of this cache (its namespace, for Redis)."""
        ...

    def close(self) -> None:
        """Release connections or memory; the cache stays usable afterwards."""
        ...


# --- encoding ---------------------------------------------------------------------------


def _encode(value: Mapping[str, Any]) -> bytes:
    """Compact JSON as UTF-8 (non-ASCII titles stay 1-3 bytes a character, not 6)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"cache values must be mappings, got {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # A lone surrogate cannot be UTF-8; \u escapes keep it round-trippable.
        return json.dumps(value, separators=(",", ":")).encode()


def _decode(payload: bytes | str, where: str) -> dict[str, Any] | None:
    try:
        value = json.loads(payload)
    except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
        value = None
    if not isinstance(value, dict):
        logger.warning("product cache: ignoring a corrupted value at %s", where)
        return None
    return value


def _check_ttl(ttl: float) -> bool:
    """Whether ``ttl`` means "store"; NaN and ``<= 0`` mean "don't"."""
    if not ttl > 0:
        return False
    if math.isinf(ttl):
        raise ValueError("cache ttl must be finite (Amazon's terms cap how long data is kept)")
    return True


def _check_namespace(namespace: str) -> str:
    if not isinstance(namespace, str) or not namespace or ":" in namespace:
        raise ValueError(
            f"cache namespace must be a non-empty string without ':', got {namespace!r}"
        )
    return namespace


# Preset deflate dictionary: the strings every product record repeats (field names,
# Amazon's URL prefixes, common values). Deflate can then back-reference them from the
# first byte of each small record: ~20 % smaller than plain zlib on the benchmark's
# records. Only this process reads what it compresses, so changing it is always safe.
_ZDICT = (
    b'"unitPrice":{"amount":,"currency":"USD"},"upc":"","ean":"","features":["",""],'
    b'"manufacturer":"","brand":"","title":"","notices":[],"asin":"B0",'
    b'"images":["https://m.media-amazon.com/images/I/._SL500_.jpg","._AC_SL1500_.jpg"],'
    b'"imageUrl":"https://m.media-amazon.com/images/I/._SL500_.jpg",'
    b'"price":{"amount":,"currency":"USD","display":"$"},"unitCount":null,'
    b'"availability":"In Stock","minOrderQuantity":1,"missingFields":[],'
    b'"retrievedAt":"T:00Z"},{"asin":"B0","marketplace":"www.amazon.com",'
    b'"detailPageUrl":"https://www.amazon.com/dp/?tag=-20"'
)
_WBITS = -15  # raw deflate: no zlib header or checksum, 6 bytes less per entry


def _compress(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, _WBITS, 8, zlib.Z_DEFAULT_STRATEGY, _ZDICT)
    return compressor.compress(data) + compressor.flush()


def _decompress(data: bytes) -> bytes:
    decompressor = zlib.decompressobj(_WBITS, _ZDICT)
    return decompressor.decompress(data) + decompressor.flush()


# --- memory -----------------------------------------------------------------------------


class _Node:
    """One entry; the same object sits in the LRU map and in the expiry heap."""

    __slots__ = ("expires_at", "key", "payload")

    def __init__(self, expires_at: float, key: str, payload: bytes) -> None:
        self.expires_at = expires_at
        self.key = key
        self.payload = payload

    def __lt__(self, other: _Node) -> bool:
        return self.expires_at < other.expires_at


class MemoryCache:
    """A bounded, thread-safe LRU of compressed JSON records with a TTL per entry.

    ``clock`` (monotonic seconds) is injectable for tests. ``compress=False`` keeps the
    plain JSON bytes (the benchmark compares both).
    """

    def __init__(
        self,
        max_entries: int = 100_000,
        *,
        clock: Callable[[], float] = time.monotonic,
        compress: bool = True,
    ) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self._clock = clock
        self._compress = compress
        self._reset()
        reset_in_child(self._after_fork)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        # Least recently used first.
        self._data: OrderedDict[str, _Node] = OrderedDict()
        # Min-heap by expiry; may hold stale nodes (replaced or evicted), skipped by
        # identity and compacted when they outnumber the live ones.
        self._heap: list[_Node] = []

    def _after_fork(self) -> None:
        # Another thread may have held the lock mid-update at fork time: start afresh.
        self._reset()

    def __len__(self) -> int:
        """Entries held, expired ones not yet dropped included."""
        with self._lock:
            return len(self._data)

    def __repr__(self) -> str:
        return f"MemoryCache(max_entries={self.max_entries}, entries={len(self._data)})"

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            payload = self._live_payload(key, self._clock())
        return None if payload is None else self._load(key, payload)

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._lock:
            now = self._clock()
            payloads = {key: self._live_payload(key, now) for key in keys}
        # Decompress and parse outside the lock: other threads need not wait for it.
        found: dict[str, dict[str, Any]] = {}
        for key, payload in payloads.items():
            if payload is not None:
                value = self._load(key, payload)
                if value is not None:
                    found[key] = value
        return found

    def set(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        if not _check_ttl(ttl):
            with self._lock:
                self._remove(key)
            return
        payload = _encode(value)
        if self._compress:
            payload = _compress(payload)
        with self._lock:
            now = self._clock()
            node = _Node(now + ttl, key, payload)
            old = self._data.pop(key, None)
            if old is not None:
                old.payload = b""  # its heap twin is stale now; free the bytes early
            self._data[key] = node
            heapq.heappush(self._heap, node)
            self._drop_expired(now)
            while len(self._data) > self.max_entries:
                _, evicted = self._data.popitem(last=False)
                evicted.payload = b""
            if len(self._heap) > 2 * len(self._data) + 64:
                self._heap = list(self._data.values())
                heapq.heapify(self._heap)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._heap.clear()

    def close(self) -> None:
        self.clear()

    # Callers hold the lock.

    def _live_payload(self, key: str, now: float) -> bytes | None:
        node = self._data.get(key)
        if node is None:
            return None
        if node.expires_at <= now:
            self._remove(key)
            return None
        self._data.move_to_end(key)
        return node.payload

    def _remove(self, key: str) -> None:
        node = self._data.pop(key, None)
        if node is not None:
            node.payload = b""

    def _drop_expired(self, now: float) -> None:
        heap = self._heap
        while heap and heap[0].expires_at <= now:
            node = heapq.heappop(heap)
            if self._data.get(node.key) is node:
                del self._data[node.key]
                node.payload = b""

    # Lock not needed: payloads are immutable bytes.

    def _load(self, key: str, payload: bytes) -> dict[str, Any] | None:
        if self._compress:
            try:
                payload = _decompress(payload)
            except zlib.error:
                logger.warning("product cache: ignoring a corrupted value at memory %r", key)
                return None
        return _decode(payload, f"memory {key!r}")


# --- null -------------------------------------------------------------------------------


class NullCache:
    """Stores nothing: the cache turned off (``AMAZON_CACHE_TTL_SECONDS = 0``, ``null://``)."""

    def __repr__(self) -> str:
        return "NullCache()"

    def get(self, key: str) -> dict[str, Any] | None:
        return None

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return {}

    def set(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        pass

    def clear(self) -> None:
        pass

    def close(self) -> None:
        pass


# --- redis ------------------------------------------------------------------------------


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs, errors and ``repr``)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = f"{parts.username}:***@" if parts.username else ":***@"
        return urlunsplit(parts._replace(netloc=user + netloc))
    except ValueError:
        return "<unparseable URL>"


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\*?[]" else ch for ch in text)


class RedisCache:
    """Product records as JSON strings in Redis, shared across workers and hosts."""

    def __init__(
        self,
        url: str,
        *,
        namespace: str,
        connect_timeout: float = 0.25,
        socket_timeout: float = 0.25,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if url.startswith("redis+unix://"):
            url = "unix://" + url[len("redis+unix://") :]  # limits' spelling → redis-py's
        self._url = url
        self._topology = urlsplit(url).scheme if url.startswith(_TOPOLOGY_SCHEMES) else ""
        self._safe_url = redact_url(url)
        self.namespace = _check_namespace(namespace)
        self._prefix = f"{KEY_PREFIX}{namespace}:"
        self._connect_timeout = connect_timeout
        self._socket_timeout = socket_timeout
        self._retry_interval = retry_interval
        self._clock = clock
        self._module = _import_redis()
        self._validate_url()
        self._reset()
        reset_in_child(self._after_fork)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._client_obj: redis.Redis | None = None
        self._client_pid = 0
        self._down_since: float | None = None
        self._retry_at = 0.0

    def _after_fork(self) -> None:
        # Drop (don't close) the parent's client: its sockets belong to the parent.
        self._reset()

    def __repr__(self) -> str:
        return f"RedisCache({self._safe_url!r}, namespace={self.namespace!r})"

    def _client_kwargs(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        return {
            "socket_connect_timeout": self._connect_timeout,
            "socket_timeout": self._socket_timeout,
            # redis-py retries with backoff by default: an outage would hold every
            # request for seconds. Stale pooled sockets are still replaced at checkout.
            "retry": Retry(NoBackoff(), 0),
        }

    def _validate_url(self) -> None:
        # Fail at start-up, not at the first request: parse the URL and build (without
        # connecting) one connection, which checks every query-string option.
        if self._topology:
            _check_topology_url(self._url, self._safe_url)
            return
        try:
            pool = self._module.ConnectionPool.from_url(self._url, **self._client_kwargs())
            pool.connection_class(**pool.connection_kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{_CONFIG_KEY} is not a usable Redis URL ({self._safe_url}): {exc}"
            ) from None

    def _client(self) -> redis.Redis:
        pid = os.getpid()
        client = self._client_obj
        if client is None or self._client_pid != pid:
            with self._lock:
                if self._client_obj is None or self._client_pid != pid:
                    self._client_obj = self._new_client()
                    self._client_pid = pid
                client = self._client_obj
        return client

    def _new_client(self) -> redis.Redis:
        if not self._topology:
            client: redis.Redis = self._module.Redis.from_url(self._url, **self._client_kwargs())
            return client
        # limits builds the client from the same URI the quota takes, so both keys accept
        # exactly the same forms; its storage object is only the builder.
        from limits.storage import RedisClusterStorage, RedisSentinelStorage

        kwargs = self._client_kwargs()
        storage: Any
        if self._topology == "redis+cluster":
            # A cluster client connects while it is built (it asks for the slot map).
            storage = RedisClusterStorage(self._url, **kwargs)
        else:
            # The sentinels get the same short timeouts and no retries as the primary.
            storage = RedisSentinelStorage(self._url, sentinel_kwargs=kwargs, **kwargs)
        return storage.storage  # type: ignore[no-any-return]

    def _call(self, op: Callable[[redis.Redis], _T], default: _T) -> _T:
        """Run ``op``; any failure is logged once per outage and becomes ``default``."""
        if self._down_since is not None and self._clock() < self._retry_at:
            return default  # Redis failed a moment ago: don't pay a timeout per call
        try:
            result = op(self._client())
        except Exception as exc:  # a cache must never fail an import
            self._failed(exc)
            return default
        if self._down_since is not None:
            self._recovered()
        return result

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            now = self._clock()
            self._retry_at = now + self._retry_interval
            if self._down_since is not None:
                return
            self._down_since = now
        logger.warning(
            "product cache: Redis at %s is unavailable (%s: %s); serving misses until it "
            "answers again",
            self._safe_url,
            type(exc).__name__,
            exc,
        )

    def _recovered(self) -> None:
        with self._lock:
            since, self._down_since = self._down_since, None
        if since is not None:
            logger.info(
                "product cache: Redis at %s answers again after %.1f s",
                self._safe_url,
                self._clock() - since,
            )

    def _key(self, key: str) -> str:
        return self._prefix + key

    def get(self, key: str) -> dict[str, Any] | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        # MGET answers nil for a key holding another type, where GET would raise.
        full_keys = [self._key(k) for k in unique]
        raw: list[Any] = self._call(
            # A cluster spreads the keys over its nodes: one MGET per slot, in key order.
            lambda client: list(
                client.mget_nonatomic(full_keys)  # type: ignore[attr-defined]
                if self._topology == "redis+cluster"
                else client.mget(full_keys)
            ),
            [],
        )
        found: dict[str, dict[str, Any]] = {}
        if len(raw) != len(unique):  # Redis failed: every key is a miss
            return found
        for key, payload in zip(unique, raw, strict=True):
            if payload is not None:
                value = _decode(payload, self._key(key))
                if value is not None:
                    found[key] = value
        return found

    def set(self, key: str, value: Mapping[str, Any], ttl: float) -> None:
        full_key = self._key(key)
        if not _check_ttl(ttl):
            self._call(lambda client: client.delete(full_key), None)
            return
        payload = _encode(value)
        milliseconds = max(1, math.ceil(ttl * 1000))
        self._call(lambda client: client.set(full_key, payload, px=milliseconds), None)

    def clear(self) -> None:
        pattern = _glob_escape(self._prefix) + "*"

        def unlink_all(client: redis.Redis) -> None:
            batch: list[Any] = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)

        self._call(unlink_all, None)

    def close(self) -> None:
        with self._lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing must not fail a shutdown either
                logger.debug("product cache: error closing the Redis client", exc_info=True)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            f"{_CONFIG_KEY} names a Redis server, but the redis client is not installed: "
            "install the 'redis' extra (pip install 'arda-amazon-bp[redis]')"
        ) from None
    return redis


# --- factory ----------------------------------------------------------------------------

_TOPOLOGY_SCHEMES = ("redis+cluster", "redis+sentinel")
_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix", "unix", *_TOPOLOGY_SCHEMES})


def _check_topology_url(url: str, safe_url: str) -> None:
    """Refuse, without connecting, a cluster or sentinel URI ``limits`` could not use.

    The forms are ``limits``' (``RedisClusterStorage``, ``RedisSentinelStorage``):
    ``redis+cluster://[[user]:password@]host:port[,host:port…]`` and
    ``redis+sentinel://[[user]:password@]host:port[,host:port…]/service``. ``limits``
    ignores a query string there, so one is refused rather than silently dropped.
    """
    parts = urlsplit(url)
    problem = ""
    if parts.query:
        problem = "options in the query string are not supported for this scheme"
    elif parts.scheme == "redis+sentinel" and not parts.path.strip("/"):
        problem = "the service name is missing (redis+sentinel://host:port/service)"
    else:
        for location in parts.netloc.rpartition("@")[2].split(","):
            try:
                node = urlsplit(f"//{location.strip()}")
                usable = bool(node.hostname) and node.port is not None
            except ValueError:  # a port that is not a number or out of range
                usable = False
            if not usable:
                problem = f"every node needs host:port, got {location!r}"
                break
    if problem:
        raise ConfigError(f"{_CONFIG_KEY} is not a usable Redis URL ({safe_url}): {problem}")


def cache_from_uri(uri: str, *, namespace: str, max_entries: int) -> ProductCache:
    """The storage ``uri`` names; nothing connects until the first use.

    ``namespace`` separates caches that share a Redis server (the marketplace, say);
    ``max_entries`` bounds ``memory://`` only. Raises :class:`ConfigError` (a
    :class:`ValueError`) naming ``AMAZON_CACHE_STORAGE_URI`` for an unknown scheme or a
    malformed Redis URL, and :class:`ImportError` naming the ``redis`` extra when a Redis
    URI is given without the client installed.
    """
    _check_namespace(namespace)
    scheme, separator, rest = uri.strip().partition("://")
    scheme = scheme.lower() if separator else ""
    if scheme == "memory":
        return MemoryCache(max_entries)
    if scheme == "null":
        return NullCache()
    if scheme in _REDIS_SCHEMES:
        return RedisCache(f"{scheme}://{rest}", namespace=namespace)
    shown = f"{scheme!r}" if scheme else "none"
    raise ConfigError(
        f"{_CONFIG_KEY} has an unsupported scheme ({shown}); use memory://, redis://, "
        "rediss://, redis+unix://, redis+cluster://, redis+sentinel:// or null://"
    )
