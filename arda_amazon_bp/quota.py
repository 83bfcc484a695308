"""Amazon's request quota per credential triple: 1 request/second and 8,640/day.

:class:`Quota` hands out upstream slots. Every Creators API call takes one with
:meth:`Quota.acquire` first; a 429 from Amazon is fed back with :meth:`Quota.penalize`.
Limits come from ``AMAZON_RATE_LIMITS`` (``limits`` notation, parsed with
:func:`limits.parse_many`), state lives in the ``limits`` storage named by
``AMAZON_RATE_LIMIT_STORAGE_URI`` under keys ``arda_amazon_bp/{<credential key>}/<limit>``.

Strategy: moving window
    A fixed window counts per calendar second, so two calls 1 ms apart on either side of a
    boundary both pass: a burst of 2 inside one second, which Amazon (counting arrivals in
    its own window) may refuse. The moving window keeps the timestamp of each call and
    admits one only when fewer than *N* calls lie in the last window length, whatever the
    phase. The sliding-window counter is an approximation that can also let two calls
    through inside a second. So: moving window, and only storages that support it
    (``memory://``, ``redis://``/``rediss://``/``redis+unix://``/``redis+sentinel://``/
    ``redis+cluster://``/``valkey…``, ``mongodb://``); ``memcached://`` is refused.

Taking a slot atomically
    ``acquire`` first *reads* every window and any penalty (so a spent daily quota is
    reported without consuming anything), then *takes* the slot with an atomic
    test-and-add, so processes and hosts never both get the last one. On Redis one Lua
    script checks every window of the key and records the call in all of them, or in none;
    it stamps the call with the Redis server's clock at the moment it decides, so neither
    clock skew between hosts nor a process descheduled between reading its clock and
    reaching Redis can let a call through (a stale client stamp, in ``limits``' own script,
    disagrees with the key's TTL, which Redis counts from the moment of the write: the
    multi-process test caught exactly that under CPU load). The windows' keys carry the
    credential key as a Redis Cluster hash tag, so that script also works on a cluster.
    Other storages take the windows one by one, shortest first: if a longer one refuses
    after a shorter one was hit — another process took the last daily slot between our read
    and our hit — the shorter hit stays consumed: a wasted per-second slot, never an extra
    call. The in-memory storage never races: one process's requests for a key take turns.

Margin (``AMAZON_RATE_MARGIN_SECONDS``, default 0.15)
    Amazon counts arrivals; calls sent 1.0 s apart can arrive 0.9 s apart. Every window
    shorter than a minute is therefore made ``margin`` seconds longer: "1/second" becomes
    one call per 1.15 s moving window, "5/second" five per 1.15 s. ``limits``' items only
    know whole seconds, so the window length is carried here as a float and passed to the
    storage's moving-window primitives (``acquire_entry``/``get_moving_window``): the
    memory and MongoDB storages only do float arithmetic with it (checked in their source),
    and ``limits``' Redis reader takes it as a float too. ``limits``' Redis *acquire*
    script ends with ``EXPIRE key <expiry>``, which Redis rejects for a non-integer (after
    the entry was pushed, leaving a key without TTL), so Redis-family storages run the
    script described above instead: ``PEXPIRE``, same keys and list layout, read back by
    ``limits``' own reader. A subclass of ``RateLimitItem`` with a fractional expiry was not
    used: its ``get_expiry`` is typed ``int`` and would hit the same ``EXPIRE`` problem.
    Readers use the local clock against the server's stamps: skew between them only shifts
    when a waiter wakes up (early wake-ups are refused and retried after a few ms).

Waiting, fairly
    When a window is busy, a request waits for the next slot up to ``max_wait`` (default
    ``AMAZON_MAX_WAIT_SECONDS``). Within a process the waiters of one credential key form
    a FIFO line: only the head talks to the storage, sleeping until the computed moment a
    slot frees (never polling); the others wait on a condition. Across processes the heads
    compete through the storage. A waiter whose turn cannot come before its deadline —
    the head waits until *T*, and the *k*-th in line needs at least ``k // N`` more window
    lengths — is refused at once instead of holding its worker for ``max_wait``. A refusal
    is ``AMAZON_RATE_LIMITED`` (``details.source="local"``, ``details.limit`` the
    granularity that blocked: ``"second"``, ``"day"``…, or ``"penalty"``) with
    ``Retry-After`` = whole seconds until a slot frees. A spent daily quota is refused
    immediately: its slot frees hours later, beyond any ``max_wait``.

Late sends
    The limiter spaces *slots*; Amazon counts *arrivals*. Between the two lie a thread
    start, maybe a token fetch, and the scheduling of a busy process: on an overloaded
    host (every thread of a gunicorn worker serving hits, fewer cores than workers) that
    delay alone can outgrow the margin, and two arrivals then land inside one of Amazon's
    seconds (the load run in docs/reliability.md showed exactly that). So the call
    reports when it actually leaves (:meth:`Quota.sending`, right before the HTTP send),
    and the key's next slot is held until one short window after that departure, in the
    same storage, so every process waits for it. With one call per window (Amazon's
    default 1/second) every call does this: the window then runs from departure to
    departure, and the margin is left for what happens after the send (the network, the
    far end). With several calls per window only a call later than the margin holds the
    next slot, which is conservative: it delays every next slot, not only the one that
    could collide. A call later than the margin is also logged (a WARNING at most once a
    minute). A margin of 0 turns the check off with the margin itself.

Penalties
    :meth:`Quota.penalize` records "no slot before now + Retry-After" for the key in the
    same storage, so every process and host pauses; waiting on it behaves like a busy
    window (wait if it ends within ``max_wait``, else 429 with the rest of the penalty).

Storage per process, and outages
    Storages are built lazily on first use and rebuilt when ``os.getpid()`` changes (a
    gunicorn worker forked after import must not share the parent's Redis sockets or its
    in-memory state). Every :class:`Quota` of a process that limits in memory shares one
    ``memory://`` storage (:class:`_ProcessMemory`), so two apps in one process with one
    credential share its windows, keyed by credential key, as Amazon counts them; it is
    released when the last of them closes. Redis connections get short socket timeouts
    (:data:`REDIS_SOCKET_TIMEOUT`, :data:`REDIS_CONNECT_TIMEOUT`; query parameters in
    the URI win). With a shared storage each process also keeps an in-memory copy of its
    own calls. If the shared storage fails, the quota logs one WARNING for the outage and
    limits from that copy — the same limits, per process: with *N* processes the combined
    rate can reach *N* times the limit until the storage answers again. It probes the
    storage at most every :data:`PROBE_INTERVAL_SECONDS` and switches back when it answers;
    the calls made during the outage are then added to the shared windows of a minute or
    longer (the daily count), and the local copy keeps guarding the short windows, so the
    switch itself cannot produce a burst. :meth:`Quota.status` answers from the local copy
    meanwhile; :attr:`Quota.degraded` says which one is in use.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import (
    MemoryStorage,
    MovingWindowSupport,
    RedisStorage,
    Storage,
    storage_from_string,
)

from .config import ConfigError, Settings
from .credentials import Credentials
from .errors import AmazonImportError, rate_limited
from .forks import reset_in_child
from .metrics import NULL_RECORDER, Recorder

__all__ = [
    "NAMESPACE",
    "PROBE_INTERVAL_SECONDS",
    "REDIS_CONNECT_TIMEOUT",
    "REDIS_SOCKET_TIMEOUT",
    "Quota",
    "WindowStatus",
    "reset_process_memory",
]

logger = logging.getLogger(__name__)

#: Prefix of every key this package writes into the rate-limit storage.
NAMESPACE = "arda_amazon_bp"
#: Socket timeouts for Redis-family storages: an unreachable Redis costs at most this.
REDIS_SOCKET_TIMEOUT = 0.5
REDIS_CONNECT_TIMEOUT = 0.5
#: While the shared storage is down, ask it again at most this often.
PROBE_INTERVAL_SECONDS = 5.0

_MARGIN_BELOW_SECONDS = 60  # windows shorter than this get the arrival-jitter margin
_LATE_WARNING_INTERVAL_SECONDS = 60.0  # at most one "call left late" warning per process
_WAKE_EPSILON = 0.001  # storages refuse *at* the reset instant (>=); wake just after it
_MIN_SLEEP = 0.005  # a head refused by a race retries after this, never in a tight loop
_MAX_PENALTY_SECONDS = 86_400.0

_T = TypeVar("_T")

# limits' acquire_moving_window.lua, for all of a key's windows in one step, with two
# changes: the stamp is the Redis server's clock (TIME), taken when the decision is made,
# so entries are in order and agree with the key's TTL whatever the callers' clocks or
# scheduling delays; and PEXPIRE, because Redis refuses EXPIRE with a fractional window.
# ARGV: amount, then (limit, expiry) per key. Returns 0, or the index of the full window.
_ACQUIRE_LUA = b"""
if redis.replicate_commands then redis.replicate_commands() end -- TIME before writes, Redis<5
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local amount = tonumber(ARGV[1])
for i = 1, #KEYS do
    local limit = tonumber(ARGV[2 * i])
    local expiry = tonumber(ARGV[2 * i + 1])
    if amount > limit then
        return i
    end
    local entry = redis.call('lindex', KEYS[i], limit - amount)
    if entry and tonumber(entry) >= now - expiry then
        return i
    end
end
local entries = {}
for j = 1, amount do
    entries[j] = string.format('%.6f', now)
end
for i = 1, #KEYS do
    local limit = tonumber(ARGV[2 * i])
    for j = 1, #entries, 5000 do
        redis.call('lpush', KEYS[i], unpack(entries, j, math.min(j + 4999, #entries)))
    end
    redis.call('ltrim', KEYS[i], 0, limit - 1)
    redis.call('pexpire', KEYS[i], math.ceil(tonumber(ARGV[2 * i + 1]) * 1000))
end
return 0
"""

# A penalty is a key that lives until the penalty ends; a shorter one never cuts it short.
_PENALIZE_LUA = b"""
local ms = tonumber(ARGV[1])
if redis.call('pttl', KEYS[1]) < ms then
    redis.call('set', KEYS[1], '1', 'PX', ms)
end
return 1
"""


@dataclass(frozen=True)
class WindowStatus:
    """One configured limit as the storage sees it for a credential key.

    ``reset_at`` (epoch seconds) is when the oldest call in the window leaves it — when a
    slot frees if ``remaining`` is 0 — or now if the window is empty.
    """

    limit: str
    amount: int
    used: int
    remaining: int
    reset_at: float


@dataclass(frozen=True)
class _Window:
    """A parsed limit and its moving-window length, margin included (may be fractional)."""

    item: RateLimitItem
    expiry: float

    @property
    def amount(self) -> int:
        return self.item.amount

    @property
    def label(self) -> str:
        return self.item.GRANULARITY.name

    def key(self, key: str) -> str:
        # The braces are a Redis Cluster hash tag: all windows of a key share one slot, so
        # one script can take them together.
        return self.item.key_for(f"{{{key}}}")


@dataclass(frozen=True)
class _Busy:
    """No slot before ``reset_at``, because of ``window`` (``None``: a penalty)."""

    reset_at: float
    window: _Window | None

    @property
    def label(self) -> str:
        return self.window.label if self.window is not None else "penalty"


def _later(a: _Busy | None, b: _Busy | None) -> _Busy | None:
    if a is None or (b is not None and b.reset_at > a.reset_at):
        return b
    return a


class _Line:
    """The FIFO of one process's requests waiting for a slot of one credential key."""

    __slots__ = ("head_busy", "waiters")

    def __init__(self) -> None:
        self.waiters: deque[object] = deque()
        self.head_busy: _Busy | None = None  # what the head is sleeping for, if anything


def _parse_windows(
    notation: str, margin: float, key: str = "AMAZON_RATE_LIMITS"
) -> tuple[_Window, ...]:
    try:
        items = parse_many(notation)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    windows = []
    for parsed in items:
        if parsed.amount < 1:
            raise ConfigError(f"{key}: {parsed} allows no call at all")
        item = type(parsed)(parsed.amount, parsed.multiples, namespace=NAMESPACE)
        seconds = item.get_expiry()
        windows.append(_Window(item, seconds + (margin if seconds < _MARGIN_BELOW_SECONDS else 0)))
    if not windows:
        raise ConfigError(f"{key}: no limit given")
    return tuple(sorted(windows, key=lambda w: w.expiry))


def _storage_class(uri: str) -> type[Storage]:
    """The storage class for ``uri``, checked without building it (nothing connects yet)."""
    # limits' scheme registry is private; without it, building the storage checks the same.
    try:
        from limits._storage_scheme import SCHEMES
    except ImportError:  # pragma: no cover - another limits layout
        return Storage
    cls = SCHEMES.get(urllib.parse.urlparse(uri).scheme)
    if cls is None:
        raise ConfigError(
            f"AMAZON_RATE_LIMIT_STORAGE_URI: unknown storage scheme in {_redact(uri)!r}"
        )
    if not (issubclass(cls, Storage) and issubclass(cls, MovingWindowSupport)):
        raise ConfigError(
            f"AMAZON_RATE_LIMIT_STORAGE_URI: {_redact(uri)!r} does not support the moving "
            "window this quota needs; use memory://, redis://… or mongodb://…"
        )
    return cast(type[Storage], cls)


def _redact(uri: str) -> str:
    """The URI without credentials, for log lines and errors."""
    return re.sub(r"//[^@/]*@", "//***@", uri)


def _penalty_key(key: str) -> str:
    return f"{NAMESPACE}/{{{key}}}/penalty"


def _spacing_key(key: str) -> str:
    """The hold a late call puts on the key's next slot (see "Late sends")."""
    return f"{NAMESPACE}/{{{key}}}/spacing"


class _Store:
    """A ``limits`` storage seen as moving windows and penalties with float lengths."""

    def __init__(self, storage: Storage) -> None:
        if not isinstance(storage, MovingWindowSupport):  # pragma: no cover - checked earlier
            raise ConfigError("AMAZON_RATE_LIMIT_STORAGE_URI: storage has no moving window")
        self.storage = storage
        self._moving: MovingWindowSupport = storage
        self.errors = self._errors(storage)
        self._redis: Any = None
        self._acquire: Any = None
        self._penalize: Any = None
        if isinstance(storage, RedisStorage):
            self._redis = storage.get_connection()
            self._acquire = self._redis.register_script(_ACQUIRE_LUA)
            self._penalize = self._redis.register_script(_PENALIZE_LUA)

    @staticmethod
    def _errors(storage: Storage) -> tuple[type[BaseException], ...]:
        if isinstance(storage, MemoryStorage):
            return ()  # in-process: it cannot become unreachable
        try:
            base = storage.base_exceptions
        except NotImplementedError:  # pragma: no cover
            base = ()
        found = base if isinstance(base, tuple) else (base,)
        return (*found, StorageError, ConnectionError, TimeoutError)

    def _redis_key(self, key: str) -> str:
        """The key as limits' own Redis reader spells it (its prefix included)."""
        storage = cast(RedisStorage, self.storage)
        prefixed = getattr(storage, "prefixed_key", None)  # limits >= 5; older: same format
        if prefixed is not None:
            return str(prefixed(key))
        return f"{getattr(storage, 'key_prefix', 'LIMITS')}:{key}"

    def hit(self, windows: tuple[_Window, ...], key: str, amount: int = 1) -> _Window | None:
        """Add ``amount`` calls to every window if all have room; else the one that refused.

        Redis decides for all windows in one script. Other storages take them one by one,
        shortest first: if a longer one then refuses (another process took its last slot
        meanwhile), the shorter hits stay — a wasted short slot, never an extra call.
        """
        if self._redis is not None:
            keys = [self._redis_key(w.key(key)) for w in windows]
            args: list[float] = [amount]
            for w in windows:
                args += [w.amount, w.expiry]
            refused = int(self._acquire(keys, args))
            return windows[refused - 1] if refused else None
        for w in windows:
            # limits annotates expiry as int; memory/MongoDB only compute with it.
            if not self._moving.acquire_entry(
                w.key(key), w.amount, cast(int, w.expiry), amount=amount
            ):
                return w
        return None

    def window(self, window: _Window, key: str) -> tuple[float, int]:
        """(timestamp of the oldest call still in the window, calls in the window)."""
        return self._moving.get_moving_window(
            window.key(key), window.amount, cast(int, window.expiry)
        )

    def hold(self, name: str, until: float, now: float) -> None:
        """Make ``name`` (a penalty or spacing key) last until ``until``; never shorter."""
        if self._redis is not None:
            ms = max(1, math.ceil((until - now) * 1000))
            self._penalize([self._redis_key(name)], [ms])
            return
        if self.held_until([name], now)[0] >= until:
            return
        self.storage.clear(name)
        self.storage.incr(name, cast(int, until - now))

    def held_until(self, names: Sequence[str], now: float) -> list[float]:
        """End of each hold (epoch seconds), or 0.0 for none; one round trip on Redis."""
        if self._redis is not None:
            pipeline = self._redis.pipeline(transaction=False)
            for name in names:
                pipeline.pttl(self._redis_key(name))
            return [now + int(ms) / 1000 if int(ms) > 0 else 0.0 for ms in pipeline.execute()]
        return [
            self.storage.get_expiry(name) if self.storage.get(name) > 0 else 0.0 for name in names
        ]

    def check(self) -> bool:
        return self.storage.check()

    def close(self) -> None:
        timer = getattr(self.storage, "timer", None)  # MemoryStorage's expiry thread
        if isinstance(timer, threading.Timer):
            timer.cancel()
        if self._redis is not None:
            try:
                self._redis.close()
            except Exception:  # pragma: no cover - closing is best effort
                logger.debug("closing the rate-limit storage failed", exc_info=True)


class _ProcessMemory:
    """The one in-memory ``limits`` storage of this process, shared by reference count.

    Amazon counts calls per credential, not per Flask app: two apps of one process with
    one credential must see each other's calls. Keys carry the credential key and the
    limit, so apps with other credentials or other limits never collide.
    """

    def __init__(self) -> None:
        self._reset()
        reset_in_child(self._reset)

    def _reset(self) -> None:
        # In a forked child: the parent's storage and its timer thread are not ours.
        self._lock = threading.Lock()
        self._storage: MemoryStorage | None = None
        self._users = 0
        self._pid = os.getpid()

    def acquire(self) -> MemoryStorage:
        with self._lock:
            if self._pid != os.getpid():  # a fork without the at-fork hook (Quota checks too)
                self._storage, self._users, self._pid = None, 0, os.getpid()
            if self._storage is None:
                self._storage = MemoryStorage()
            self._users += 1
            return self._storage

    def release(self, storage: Storage) -> bool:
        """Drop one use of ``storage``; True when it was the last (then close it)."""
        with self._lock:
            if storage is not self._storage:
                return False
            self._users -= 1
            if self._users > 0:
                return False
            self._storage = None
            return True


_PROCESS_MEMORY = _ProcessMemory()


def reset_process_memory() -> None:
    """Forget every in-memory window and penalty of this process, for test suites that
    build an app per test: the next quota starts from a fresh storage. Quotas still open
    keep the storage they had (close apps with ``AmazonImport.close(app)``)."""
    with _PROCESS_MEMORY._lock:
        _PROCESS_MEMORY._storage, _PROCESS_MEMORY._users = None, 0


class Quota:
    """Upstream slots per credential key, within Amazon's limits (see the module docs).

    ``clock`` and ``sleep`` are injectable for tests; ``clock`` must be epoch seconds on
    the same base as the storages' own ``time.time()`` calls.
    """

    #: Seconds between probes of a shared storage that failed (instances may override).
    probe_interval: float = PROBE_INTERVAL_SECONDS

    _primary: _Store | None
    _next_late_warning: float
    _local: _Store | None

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        metrics: Recorder = NULL_RECORDER,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._windows = _parse_windows(settings.rate_limits, settings.rate_margin_seconds)
        self._uri = settings.rate_limit_storage_uri
        storage_class = _storage_class(self._uri)
        self._shared = not issubclass(storage_class, MemoryStorage)
        self._redis_family = issubclass(storage_class, RedisStorage)
        self._reset_process_state()
        reset_in_child(self._reset_process_state)

    # -- public API ---------------------------------------------------------------------

    def acquire(self, key: str, *, max_wait: float | None = None) -> float:
        """Take one upstream slot for ``key``, waiting up to ``max_wait`` seconds, and
        return when it was taken (this quota's clock), for :meth:`sending`.

        Raises ``AMAZON_RATE_LIMITED`` (``source="local"``) when no slot frees in time.
        """
        budget = self._settings.max_wait_seconds if max_wait is None else max_wait
        started = self._clock()
        deadline = started + max(0.0, budget)
        self._stores()  # a forked child gets fresh locks before it queues on them
        ticket = object()
        with self._cond:
            line = self._lines.setdefault(key, _Line())
            line.waiters.append(ticket)
            try:
                self._wait_turn(line, ticket, deadline)
            except BaseException:
                self._leave(key, line, ticket)
                raise
        try:
            self._take_slot(key, line, deadline)
            taken = self._clock()
        finally:
            self._daily_snapshots.pop(key, None)  # our own call changed the count
            with self._cond:
                line.head_busy = None
                self._leave(key, line, ticket)
        self._metrics.quota_waited(taken - started)
        return taken

    def sending(self, key: str, slot_taken_at: float) -> None:
        """The call holding the slot taken at ``slot_taken_at`` leaves now: hold the key's
        next slot until one short window from now, in every process, when the limit is one
        call per window or the call left more than the margin late (module docs, "Late
        sends")."""
        now = self._clock()
        late = now - slot_taken_at
        self._metrics.quota_departed(late)
        margin = self._settings.rate_margin_seconds
        shortest = self._windows[0]
        if not margin > 0 or shortest.expiry >= _MARGIN_BELOW_SECONDS:
            return
        # One call per window: the window restarts when the call leaves, always (a few ms
        # each). Several: only a call later than the margin holds them all (conservative).
        if late <= (0.0 if shortest.amount == 1 else margin):
            return
        if late > margin and now >= self._next_late_warning:
            self._next_late_warning = now + _LATE_WARNING_INTERVAL_SECONDS
            logger.warning(
                "amazon call left %.3f s after its quota slot (margin %.3f s); the next slot "
                "waits for it. Raise AMAZON_RATE_MARGIN_SECONDS if this repeats",
                late,
                margin,
            )
        self._hold(_spacing_key(key), now + shortest.expiry, now)

    def penalize(self, key: str, retry_after: float) -> None:
        """Amazon answered 429: no slot for ``key`` for ``retry_after`` seconds, anywhere."""
        if not retry_after > 0:  # also refuses NaN
            return
        now = self._clock()
        self._hold(_penalty_key(key), now + min(float(retry_after), _MAX_PENALTY_SECONDS), now)

    def status(self, key: str) -> list[WindowStatus]:
        """One entry per configured limit, shortest window first."""
        return self._run(lambda store: [self._status(store, w, key) for w in self._windows])

    def daily(self, key: str, *, max_age: float = 0.0) -> WindowStatus:
        """The longest configured window (the daily quota by default).

        With ``max_age`` a reading up to that many seconds old may be returned instead of
        a storage round trip (advisory ``RateLimit-*`` headers on cache hits); a slot
        taken by this process always forces a fresh reading.
        """
        if max_age > 0:
            snapshot = self._daily_snapshots.get(key)
            if snapshot is not None and time.monotonic() - snapshot[0] < max_age:
                return snapshot[1]
        status = self._run(lambda store: self._status(store, self._windows[-1], key))
        self._daily_snapshots[key] = (time.monotonic(), status)
        return status

    def penalized_until(self, key: str) -> float:
        """End of the current penalty for ``key`` (epoch seconds), or 0.0 without one."""
        now = self._clock()
        return self._run(lambda store: store.held_until([_penalty_key(key)], now)[0])

    def waiting(self, key: str) -> int:
        """Requests of this process currently queued for a slot of ``key``."""
        with self._cond:
            line = self._lines.get(key)
            return len(line.waiters) if line is not None else 0

    def take(self, windows: tuple[_Window, ...], key: str, amount: int) -> _Window | None:
        """Count ``amount`` in every one of ``windows`` of ``key`` if all have room (else
        the window that refused), in this quota's storage.

        For other budgets kept beside the quota (``budgets.py``): same storage, same
        atomic multi-window step on Redis, same per-process fallback during an outage.
        """
        return self._run(lambda store: store.hit(windows, key, amount))

    def usage(self, window: _Window, key: str) -> tuple[float, int]:
        """(start of the oldest entry, entries) of ``window`` for ``key``; see :meth:`take`."""
        return self._run(lambda store: store.window(window, key))

    @property
    def degraded(self) -> bool:
        """True while the shared storage is unreachable and limits are per process."""
        return self._down

    def close(self) -> None:
        """Close the storages; a later call builds them again."""
        with self._lock:
            stores = [s for s in (self._primary, self._local) if s is not None]
            self._primary = self._local = None
        for store in stores:
            if not isinstance(store.storage, MemoryStorage) or _PROCESS_MEMORY.release(
                store.storage
            ):
                store.close()

    def _hold(self, name: str, until: float, now: float) -> None:
        local = self._stores()[1]
        if local is not None:
            local.hold(name, until, now)  # kept in case the shared storage fails
        self._run(lambda store: store.hold(name, until, now))

    # -- per-process state --------------------------------------------------------------

    def _reset_process_state(self) -> None:
        # After a fork, locks may have been held by threads that no longer exist and the
        # storages' sockets belong to the parent: start over without closing anything.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._cond = threading.Condition(threading.Lock())
        self._lines: dict[str, _Line] = {}
        self._primary = None
        self._local = None
        self._down = False
        self._next_probe = 0.0
        self._outage_calls: Counter[str] = Counter()
        self._next_late_warning = 0.0
        # key -> (monotonic time read, status): the daily window for response headers
        self._daily_snapshots: dict[str, tuple[float, WindowStatus]] = {}

    def _stores(self) -> tuple[_Store, _Store | None]:
        """(the configured storage, this process's copy when the former is shared)."""
        if self._pid != os.getpid():
            self._reset_process_state()
        primary = self._primary
        if primary is None:
            with self._lock:
                if self._primary is None:
                    memory = _Store(_PROCESS_MEMORY.acquire())
                    self._local = memory if self._shared else None
                    self._primary = (
                        _Store(self._build(self._uri, timeouts=self._redis_family))
                        if self._shared
                        else memory
                    )
                primary = self._primary
        return primary, self._local

    @staticmethod
    def _build(uri: str, *, timeouts: bool = False) -> Storage:
        options: dict[str, float] = {}
        if timeouts:
            options = {
                "socket_timeout": REDIS_SOCKET_TIMEOUT,
                "socket_connect_timeout": REDIS_CONNECT_TIMEOUT,
            }
        try:
            storage = storage_from_string(uri, **options)
        except ConfigurationError as exc:
            raise ConfigError(f"AMAZON_RATE_LIMIT_STORAGE_URI: {_redact(str(exc))}") from None
        if not isinstance(storage, Storage):
            raise ConfigError(
                f"AMAZON_RATE_LIMIT_STORAGE_URI: {_redact(uri)!r} is an async storage; "
                "use the synchronous scheme"
            )
        return storage

    # -- outage handling ----------------------------------------------------------------

    def _run(self, fn: Callable[[_Store], _T]) -> _T:
        """``fn`` on the shared storage, or on this process's copy while it is down."""
        primary, local = self._stores()
        if local is None:
            return fn(primary)
        if self._primary_usable(primary):
            try:
                return fn(primary)
            except primary.errors as exc:
                self._went_down(exc)
        return fn(local)

    def _primary_usable(self, primary: _Store) -> bool:
        if not self._down:
            return True
        now = self._clock()
        with self._lock:
            if not self._down:
                return True
            if now < self._next_probe:
                return False
            self._next_probe = now + self.probe_interval  # one prober per interval
        if not primary.check():
            return False
        self._recovered(primary)
        return True

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            self._next_probe = self._clock() + self.probe_interval
            if self._down:
                return
            self._down = True
        logger.warning(
            "rate-limit storage %s is unreachable (%s: %s); limiting per process in memory "
            "until it answers again - with several processes the combined rate may exceed "
            "Amazon's quota",
            _redact(self._uri),
            type(exc).__name__,
            exc,
        )

    def _recovered(self, primary: _Store) -> None:
        with self._lock:
            if not self._down:
                return
            self._down = False
            owed = dict(self._outage_calls)
            self._outage_calls.clear()
        logger.warning(
            "rate-limit storage %s answers again; limits are shared again", _redact(self._uri)
        )
        # Calls made during the outage still count against the long windows (the daily
        # quota), timestamped now: conservative. Short windows are bridged by the local copy.
        try:
            for key, calls in owed.items():
                for window in self._windows:
                    if window.expiry < _MARGIN_BELOW_SECONDS:
                        continue
                    _, used = primary.window(window, key)
                    amount = min(calls, window.amount - used)
                    if amount > 0:
                        primary.hit((window,), key, amount)
        except primary.errors as exc:
            self._went_down(exc)

    # -- taking a slot ------------------------------------------------------------------

    def _leave(self, key: str, line: _Line, ticket: object) -> None:
        line.waiters.remove(ticket)
        if not line.waiters and self._lines.get(key) is line:
            del self._lines[key]
        self._cond.notify_all()

    def _wait_turn(self, line: _Line, ticket: object, deadline: float) -> None:
        """Under ``self._cond``: return once ``ticket`` heads the line, or refuse."""
        shortest = self._windows[0]
        while line.waiters[0] is not ticket:
            now = self._clock()
            # Nobody behind the head is served before it, and the k-th in line needs at
            # least k // N more window lengths: a lower bound on this request's slot.
            ahead = line.waiters.index(ticket)
            head = line.head_busy
            start = max(now, head.reset_at) if head is not None else now
            earliest = start + (ahead // shortest.amount) * shortest.expiry
            if earliest > deadline or now >= deadline:
                blocked_by = head.window if head is not None and head.reset_at > now else shortest
                raise self._refusal(_Busy(max(earliest, now), blocked_by), now)
            self._cond.wait(deadline - now)

    def _take_slot(self, key: str, line: _Line, deadline: float) -> None:
        """As head of the line: get a slot from the storage, sleeping until one frees."""
        while True:
            busy = self._attempt(key)
            if busy is None:
                return
            now = self._clock()
            if busy.reset_at > deadline:
                raise self._refusal(busy, now)
            with self._cond:
                line.head_busy = busy
                self._cond.notify_all()  # those behind may now know they cannot make it
            self._sleep(max(busy.reset_at + _WAKE_EPSILON - now, _MIN_SLEEP))

    def _attempt(self, key: str) -> _Busy | None:
        """Take a slot now (``None``) or say until when none is free."""
        primary, local = self._stores()
        now = self._clock()
        if local is None:
            return self._attempt_on(primary, key, now, shadow=None)
        if self._primary_usable(primary):
            try:
                return self._attempt_on(primary, key, now, shadow=local)
            except primary.errors as exc:
                self._went_down(exc)
        busy = self._attempt_on(local, key, now, shadow=None)
        if busy is None:
            with self._lock:
                self._outage_calls[key] += 1
        return busy

    def _attempt_on(
        self, store: _Store, key: str, now: float, shadow: _Store | None
    ) -> _Busy | None:
        busy = self._busy(store, key, now)
        if shadow is not None:  # our own recent calls, e.g. made while the storage was down
            busy = _later(busy, self._busy(shadow, key, now))
        if busy is not None:
            return busy
        refused = store.hit(self._windows, key)
        if refused is not None:  # the read said free: another process won the race
            start, used = store.window(refused, key)
            return _Busy(max(start + refused.expiry, now) if used else now, refused)
        if shadow is not None:
            shadow.hit(self._windows, key)
        return None

    def _busy(self, store: _Store, key: str, now: float) -> _Busy | None:
        penalty, spacing = store.held_until([_penalty_key(key), _spacing_key(key)], now)
        busy = _Busy(penalty, None) if penalty > now else None
        if spacing > now:  # a late call's hold counts as the short window it protects
            busy = _later(busy, _Busy(spacing, self._windows[0]))
        for window in self._windows:
            start, used = store.window(window, key)
            if used >= window.amount:
                busy = _later(busy, _Busy(start + window.expiry, window))
        return busy

    def _status(self, store: _Store, window: _Window, key: str) -> WindowStatus:
        start, used = store.window(window, key)
        return WindowStatus(
            limit=str(window.item),
            amount=window.amount,
            used=used,
            remaining=max(0, window.amount - used),
            reset_at=start + window.expiry if used else self._clock(),
        )

    def _refusal(self, busy: _Busy, now: float) -> AmazonImportError:
        self._metrics.quota_refused(busy.label)
        seconds = math.ceil(busy.reset_at - now)
        if busy.window is None:
            message = (
                f"Amazon throttled these credentials (HTTP 429); retry in {max(1, seconds)} s."
            )
            return rate_limited(seconds, "local", message, limit=busy.label)
        message = (
            f"Amazon allows {busy.window.item} for these credentials; "
            f"the next slot frees in {max(1, seconds)} s."
        )
        return rate_limited(
            seconds, "local", message, limit=busy.label, quota=str(busy.window.item)
        )


def slots_for_retries(
    quota: Quota, slot_taken_at: float, *, max_wait: float | None = None
) -> Callable[[Credentials], None]:
    """A ``before_call`` for a call whose first attempt already holds a slot.

    The caller took a slot before sending (at ``slot_taken_at``, what
    :meth:`Quota.acquire` returned); a retry (after a fresh token or reloaded credentials)
    is another arrival at Amazon, so each retry takes one of its own. Each attempt tells
    the quota when it leaves (:meth:`Quota.sending`).
    """
    first_attempt = True

    def before_call(used: Credentials) -> None:
        nonlocal first_attempt
        taken = slot_taken_at
        if first_attempt:
            first_attempt = False
        else:
            taken = quota.acquire(used.quota_key, max_wait=max_wait)
        quota.sending(used.quota_key, taken)

    return before_call
