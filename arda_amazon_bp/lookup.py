"""Product lookups within Amazon's quota: cache, single-flight and coalescing.

A naive client spends one upstream call per import. Here:

* a **cache** hit (keyed by marketplace and ASIN) costs no call and no quota;
* concurrent imports of one ASIN share one upstream lookup (**single-flight**);
* misses wait in a per-marketplace FIFO; whenever a quota slot frees, one ``getItems``
  call carries every waiting ASIN, up to 10 (**coalescing**). A lone request goes out at
  once: nothing waits for company.

One dispatcher thread per served store (``stores.StoreRuntime``: that store's credentials,
client and cache) and process takes slots and forms batches; the
HTTP calls themselves run on threads of their own (at most :data:`MAX_CALLS_IN_FLIGHT`,
started per call, so nothing idles between imports), so a slow answer never holds the next slot
back when the configured rate allows more than one call in flight. A slot is taken only
once a call thread is free to send its call at once: the limiter spaces *slots*, and
Amazon counts *arrivals*, so a call that queued for a thread after its slot was taken
(the fifth of a burst under a 5/second limit, one call's duration late) would eat the
``AMAZON_RATE_MARGIN_SECONDS`` margin and could arrive inside Amazon's window.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

from . import products
from .budgets import PrincipalBudgets
from .cache import ProductCache
from .config import Settings
from .creators import CreatorsClient, GetItemsResult
from .credentials import CredentialProvider, Credentials, CredentialsError
from .errors import (
    AmazonImportError,
    ErrorCode,
    UpstreamReason,
    credentials_unavailable,
    upstream_unavailable,
)
from .links import ProductRef
from .logs import bind_request_ids, current_request_id
from .metrics import NULL_RECORDER, Recorder
from .quota import Quota, slots_for_retries
from .stores import StoreRuntime, unsupported_locale
from .waiting import WaitingGate

logger = logging.getLogger(__name__)

#: Concurrent getItems calls per process; the quota, not this, sets the pace.
MAX_CALLS_IN_FLIGHT = 4
#: How long ``close()`` waits for the dispatcher and calls in flight to end.
CLOSE_TIMEOUT_SECONDS = 5.0


@dataclass
class _Waiter:
    asin: str
    future: Future[dict[str, Any]]
    deadline: float  # monotonic time after which it is answered 429 rather than kept waiting
    request_ids: list[str] = field(default_factory=list)
    requeued: bool = False  # sent again once after a call refused over another ASIN


class _Dispatcher:
    """FIFO of ASINs waiting for one marketplace, drained by one thread per process."""

    @property
    def _store(self) -> StoreRuntime:
        # Read at each use: the lookup's store entry is what a replaced client serves.
        return self._lookup.stores[self._marketplace]

    def __init__(self, lookup: ProductLookup, marketplace: str) -> None:
        self._lookup = lookup
        self._marketplace = marketplace
        self._cond = threading.Condition()
        self._pending: OrderedDict[str, _Waiter] = OrderedDict()
        self._in_flight: dict[str, Future[dict[str, Any]]] = {}
        # Daemon threads named after the app, so a host can tell whose they are and an
        # interpreter never waits for them at exit (ThreadPoolExecutor's workers are joined).
        self._call_name = f"{lookup.thread_name}-call-{marketplace}"
        self._calls: set[threading.Thread] = set()
        # One permit per call thread: held from taking a slot until the call is done.
        self._free_threads = threading.BoundedSemaphore(MAX_CALLS_IN_FLIGHT)
        self._thread = threading.Thread(
            target=self._run, name=f"{lookup.thread_name}-dispatch-{marketplace}", daemon=True
        )
        self._closed = False
        self._thread.start()

    def submit(self, asins: Iterable[str], max_wait: float) -> dict[str, Future[dict[str, Any]]]:
        """A future per ASIN; an ASIN already waiting or in flight shares its future."""
        deadline = time.monotonic() + max_wait
        request_id = current_request_id()
        futures: dict[str, Future[dict[str, Any]]] = {}
        with self._cond:
            new = [a for a in asins if not self._join(a, deadline, request_id, futures)]
        if new:
            # A lookup may have finished between the caller's cache miss and now. Results
            # are cached before they leave ``_in_flight``, so a second look closes the gap.
            for asin, record in self._lookup.cached(self._marketplace, new).items():
                done: Future[dict[str, Any]] = Future()
                done.set_result(record)
                futures[asin] = done
        with self._cond:
            for asin in new:
                if asin in futures or self._join(asin, deadline, request_id, futures):
                    continue
                waiter = _Waiter(asin, Future(), deadline)
                self._pending[asin] = waiter
                if request_id:
                    waiter.request_ids.append(request_id)
                futures[asin] = waiter.future
            self._cond.notify_all()
        return futures

    def _join(
        self,
        asin: str,
        deadline: float,
        request_id: str | None,
        futures: dict[str, Future[dict[str, Any]]],
    ) -> bool:
        """Share the future of an ASIN already waiting or in flight (lock held)."""
        if asin in self._in_flight:
            futures[asin] = self._in_flight[asin]
            return True
        waiter = self._pending.get(asin)
        if waiter is None:
            return False
        # A later request must not be refused earlier than it asked for.
        waiter.deadline = max(waiter.deadline, deadline)
        if request_id:
            waiter.request_ids.append(request_id)
        futures[asin] = waiter.future
        return True

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Stop the dispatcher, answer the requests still queued, and wait (up to
        ``timeout`` in all) for the dispatcher and the calls in flight to end."""
        with self._cond:
            self._closed = True
            waiting = list(self._pending.values())
            self._pending.clear()
            self._cond.notify_all()
        self._fail(
            waiting,
            upstream_unavailable(UpstreamReason.CONNECTION_ERROR, "The import service stopped."),
        )
        deadline = time.monotonic() + timeout
        with self._cond:
            threads = [self._thread, *self._calls]
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                oldest = next(iter(self._pending.values()))
                # What this thread logs while loading credentials or taking a slot serves
                # the requests at the head of the queue (the next batch): name them.
                head = islice(self._pending.values(), self._lookup.settings.max_items_per_call)
                request_ids = sorted({rid for waiter in head for rid in waiter.request_ids})
            try:
                with bind_request_ids(request_ids):
                    self._dispatch_one(oldest)
            except Exception:  # the dispatcher must outlive any bug in one batch
                logger.exception("amazon lookup dispatcher failed; failing its batch")

    def _dispatch_one(self, oldest: _Waiter) -> None:
        try:
            credentials = self._store.credentials.get()
        except CredentialsError:
            self._fail(self._take(len(self._pending)), credentials_unavailable())
            return
        # A slot is taken only when its call can leave at once (see the module docstring).
        while not self._free_threads.acquire(timeout=0.5):
            if self._closed:
                return
        sent = False
        try:
            sent = self._take_slot_and_send(credentials, oldest)
        finally:
            if not sent:
                self._free_threads.release()

    def _take_slot_and_send(self, credentials: Credentials, oldest: _Waiter) -> bool:
        """With a free thread in hand: take a slot and start a call thread with a batch (True),
        or answer those who cannot wait any longer (False)."""
        budget = max(0.0, oldest.deadline - time.monotonic())
        try:
            slot_taken_at = self._lookup.quota.acquire(credentials.quota_key, max_wait=budget)
        except AmazonImportError as exc:
            # Those whose wait is used up are answered; later arrivals keep their place.
            # A spent daily quota will not free up within anyone's wait: answer everyone.
            everyone = exc.details.get("limit") not in (None, "second", "penalty")
            now = time.monotonic()
            with self._cond:
                expired = [
                    a for a, w in self._pending.items() if everyone or w.deadline <= now + 0.01
                ] or [oldest.asin]
                waiters = [self._pending.pop(a) for a in expired if a in self._pending]
            self._fail(waiters, exc)
            return False
        batch = self._take(self._lookup.settings.max_items_per_call, in_flight=True)
        if not batch:  # empty only if every waiter was answered meanwhile
            return False
        with self._cond:
            closed = self._closed
            if not closed:  # started under the lock: close() never joins an unstarted one
                thread = threading.Thread(
                    target=self._call,
                    args=(credentials, batch, slot_taken_at),
                    name=self._call_name,
                    daemon=True,
                )
                self._calls.add(thread)
                thread.start()
        if closed:  # close() ran meanwhile: answer rather than start a call
            stopped = upstream_unavailable(
                UpstreamReason.CONNECTION_ERROR, "The import service stopped."
            )
            self._finish(batch, error=stopped)
            return False
        return True

    def _take(self, limit: int, *, in_flight: bool = False) -> list[_Waiter]:
        """Pop up to ``limit`` waiters, FIFO; with ``in_flight`` they join ``_in_flight``
        in the same critical section, so a new request always finds its ASIN somewhere."""
        with self._cond:
            waiters = [self._pending.pop(asin) for asin in list(self._pending)[:limit]]
            if in_flight:
                for waiter in waiters:
                    self._in_flight[waiter.asin] = waiter.future
            return waiters

    def _call(self, credentials: Credentials, batch: list[_Waiter], slot_taken_at: float) -> None:
        try:
            self._call_upstream(credentials, batch, slot_taken_at)
        finally:
            with self._cond:
                self._calls.discard(threading.current_thread())
            self._free_threads.release()

    def _call_upstream(
        self, credentials: Credentials, batch: list[_Waiter], slot_taken_at: float
    ) -> None:
        asins = [w.asin for w in batch]
        request_ids = sorted({rid for w in batch for rid in w.request_ids})
        before_call = slots_for_retries(
            self._lookup.quota, slot_taken_at, max_wait=self._lookup.settings.max_wait_seconds
        )

        try:
            with bind_request_ids(request_ids):
                result = self._store.client.get_items(
                    self._marketplace, asins, before_call=before_call
                )
                again = _refused_over_others(batch, result)
                served = [w for w in batch if w not in again]
                outcome = self._lookup.store(self._marketplace, [w.asin for w in served], result)
        except AmazonImportError as exc:
            if exc.code is ErrorCode.AMAZON_RATE_LIMITED and exc.details.get("source") == "amazon":
                self._lookup.quota.penalize(
                    credentials.quota_key, float(exc.details.get("retryAfter", 1))
                )
            self._finish(batch, error=exc)
        except Exception as exc:  # a bug must still answer every waiter
            logger.exception("amazon lookup failed unexpectedly for %d ASIN(s)", len(asins))
            self._finish(batch, error=exc)
        else:
            self._requeue(again)
            self._finish(served, results=outcome)

    def _requeue(self, waiters: list[_Waiter]) -> None:
        """Put ``waiters`` back at the head of the queue, for one more call each."""
        if not waiters:
            return
        max_wait = self._lookup.settings.max_wait_seconds
        with self._cond:
            for waiter in reversed(waiters):
                # One critical section: a new request finds the ASIN in flight or pending.
                self._in_flight.pop(waiter.asin, None)
                waiter.requeued = True
                waiter.deadline = max(waiter.deadline, time.monotonic() + max_wait)
                self._pending[waiter.asin] = waiter
                self._pending.move_to_end(waiter.asin, last=False)
            self._cond.notify_all()
        logger.info(
            "amazon refused a getItems call over other ASINs; %d ASIN(s) it said nothing "
            "about are sent again",
            len(waiters),
        )

    def _finish(
        self,
        batch: list[_Waiter],
        *,
        results: dict[str, dict[str, Any]] | None = None,
        error: BaseException | None = None,
    ) -> None:
        with self._cond:
            for waiter in batch:
                self._in_flight.pop(waiter.asin, None)
        for waiter in batch:
            if results is not None:
                waiter.future.set_result(results[waiter.asin])
            elif error is not None:
                waiter.future.set_exception(error)

    @staticmethod
    def _fail(waiters: Sequence[_Waiter], error: BaseException) -> None:
        for waiter in waiters:
            waiter.future.set_exception(error)


class ProductLookup:
    """Turns product references into product records (or typed errors) within quota."""

    def __init__(
        self,
        settings: Settings,
        quota: Quota,
        stores: dict[str, StoreRuntime],
        *,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        thread_name: str = "arda-amazon",
        metrics: Recorder = NULL_RECORDER,
    ) -> None:
        self.settings = settings
        #: Served stores by host, ``settings.marketplace`` among them (the primary store,
        #: whose parts the ``client``, ``cache`` and ``credentials`` properties are: operator
        #: commands, single-store callers). The one place they are held.
        self.stores = stores
        self.thread_name = thread_name
        self.metrics = metrics
        #: Requests of this process waiting for Amazon (AMAZON_MAX_WAITING).
        self.waiting = WaitingGate(settings.max_waiting)
        #: Per-user budgets (AMAZON_PRINCIPAL_LIMITS), in the quota's storage.
        self.budgets = (
            PrincipalBudgets(settings.principal_limits, quota)
            if settings.principal_limits
            else None
        )
        self.quota = quota
        self._now = now
        self._lock = threading.Lock()
        self._dispatchers: dict[str, _Dispatcher] = {}
        self._pid = os.getpid()

    # The primary store's parts, read and replaced in ``stores`` itself: one place holds
    # them, so a replaced cache (a test's clock, a host's own) is the one lookups use.
    @property
    def _primary(self) -> StoreRuntime:
        return self.stores[self.settings.marketplace]

    def _replace_primary(self, **parts: Any) -> None:
        primary = self._primary
        self.stores[primary.marketplace] = dataclasses.replace(primary, **parts)

    @property
    def client(self) -> CreatorsClient:
        return self._primary.client

    @client.setter
    def client(self, client: CreatorsClient) -> None:
        self._replace_primary(client=client)

    @property
    def cache(self) -> ProductCache:
        return self._primary.cache

    @cache.setter
    def cache(self, cache: ProductCache) -> None:
        self._replace_primary(cache=cache)

    @property
    def credentials(self) -> CredentialProvider:
        return self._primary.credentials

    @credentials.setter
    def credentials(self, credentials: CredentialProvider) -> None:
        self._replace_primary(credentials=credentials)

    # -- public -------------------------------------------------------------------

    def lookup(self, ref: ProductRef, *, principal_key: str | None = None) -> dict[str, Any]:
        """One product record, or raise :class:`AmazonImportError`."""
        result = self.lookup_many([ref], principal_key=principal_key)[0]
        if isinstance(result, AmazonImportError):
            raise result
        return result

    def lookup_many(
        self, refs: Sequence[ProductRef], *, principal_key: str | None = None
    ) -> list[dict[str, Any] | AmazonImportError]:
        """A record or an error per reference, in input order; duplicates looked up once.

        Cache misses count against ``principal_key``'s budget when budgets are configured
        (``None``: not counted, for operator tools).
        """
        results: dict[ProductRef, dict[str, Any] | AmazonImportError] = {}
        wanted: list[ProductRef] = []
        for ref in dict.fromkeys(refs):
            if ref.marketplace not in self.stores:
                results[ref] = unsupported_locale(ref.marketplace, self.stores)
            else:
                wanted.append(ref)
        if wanted:
            results.update(self._resolve(wanted, principal_key))
        return [results[ref] for ref in refs]

    def close(self) -> None:
        with self._lock:
            dispatchers, self._dispatchers = list(self._dispatchers.values()), {}
        for dispatcher in dispatchers:
            dispatcher.close()

    # -- internals -----------------------------------------------------------------

    def _resolve(
        self, refs: list[ProductRef], principal_key: str | None
    ) -> dict[ProductRef, dict[str, Any] | AmazonImportError]:
        results: dict[ProductRef, dict[str, Any] | AmazonImportError] = {}
        hits = self._cache_get(refs)
        misses = [ref for ref in refs if _cache_key(ref) not in hits]
        if self.settings.cache_ttl_seconds > 0:  # off: no lookup took place
            self.metrics.cache_lookups(len(refs) - len(misses), len(misses))
        for ref in refs:
            if _cache_key(ref) in hits:
                results[ref] = self._with_current_tag(hits[_cache_key(ref)])
        if not misses:
            return results
        # Cache hits never wait. A miss holds this thread until Amazon answers, so only
        # AMAZON_MAX_WAITING requests per process may do that at once (waiting.py); the
        # gate comes first so that a request refused at once is not charged a budget.
        try:
            self.waiting.enter()
        except AmazonImportError as exc:
            results.update(dict.fromkeys(misses, exc))
            return results
        try:
            if self.budgets is not None and principal_key is not None:
                admitted, refusal = self.budgets.charge(principal_key, len(misses))
                if refusal is not None:
                    results.update(dict.fromkeys(misses[admitted:], refusal))
                misses = misses[:admitted]
            results.update(self._fetch(misses))
        finally:
            self.waiting.leave()
        return results

    def _fetch(
        self, misses: list[ProductRef]
    ) -> dict[ProductRef, dict[str, Any] | AmazonImportError]:
        """Records of ``misses`` from Amazon, through the dispatchers, waiting for them."""
        results: dict[ProductRef, dict[str, Any] | AmazonImportError] = {}
        by_marketplace: dict[str, list[ProductRef]] = {}
        for ref in misses:
            by_marketplace.setdefault(ref.marketplace, []).append(ref)
        futures: dict[ProductRef, Future[dict[str, Any]]] = {}
        for marketplace, group in by_marketplace.items():
            submitted = self._dispatcher(marketplace).submit(
                [ref.asin for ref in group], self.settings.max_wait_seconds
            )
            futures.update({ref: submitted[ref.asin] for ref in group})
        connect, read = self.settings.http_timeout
        # Slot wait, then up to a token call and two getItems attempts (401 retry); all of
        # it once more for an ASIN sent again after a call refused over another ASIN.
        bound = 2 * (self.settings.max_wait_seconds * 2 + 3 * (connect + read)) + 1
        deadline = time.monotonic() + bound
        for ref, future in futures.items():
            try:
                results[ref] = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except AmazonImportError as exc:
                results[ref] = exc
            except FutureTimeout:
                results[ref] = upstream_unavailable(
                    UpstreamReason.TIMEOUT, "Amazon did not answer in time."
                )
            except Exception as exc:  # surfaced as INTERNAL_ERROR by the blueprint
                internal = AmazonImportError(
                    ErrorCode.INTERNAL_ERROR, "Unexpected error while looking the product up."
                )
                internal.__cause__ = exc
                results[ref] = internal
        return results

    def _dispatcher(self, marketplace: str) -> _Dispatcher:
        with self._lock:
            if self._pid != os.getpid():  # forked (gunicorn): threads did not survive
                self._dispatchers, self._pid = {}, os.getpid()
            dispatcher = self._dispatchers.get(marketplace)
            if dispatcher is None:
                dispatcher = self._dispatchers[marketplace] = _Dispatcher(self, marketplace)
            return dispatcher

    def cached(self, marketplace: str, asins: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached records of ``asins`` by ASIN (misses left out)."""
        refs = [ProductRef(marketplace, asin) for asin in asins]
        hits = self._cache_get(refs)
        return {
            ref.asin: self._with_current_tag(hits[_cache_key(ref)])
            for ref in refs
            if _cache_key(ref) in hits
        }

    def _cache_get(self, refs: Sequence[ProductRef]) -> dict[str, dict[str, Any]]:
        """Hits by cache key, each store's refs read from that store's cache."""
        if self.settings.cache_ttl_seconds <= 0:
            return {}
        by_store: dict[str, list[str]] = {}
        for ref in refs:
            by_store.setdefault(ref.marketplace, []).append(_cache_key(ref))
        hits: dict[str, dict[str, Any]] = {}
        for marketplace, keys in by_store.items():
            try:
                hits.update(self.stores[marketplace].cache.get_many(keys))
            except Exception:  # a cache must never turn into an error
                logger.warning("amazon product cache read failed; treating as miss", exc_info=True)
        return hits

    def _with_current_tag(self, product: dict[str, Any]) -> dict[str, Any]:
        # The partner tag may have rotated since the record was cached; each store has its own.
        store = self.stores.get(product.get("marketplace", ""))
        if store is None:
            return product
        try:
            tag = store.credentials.get().partner_tag
        except CredentialsError:
            return product
        product["detailPageUrl"] = products.detail_page_url(
            product["marketplace"], product["asin"], tag
        )
        return product

    def store(
        self, marketplace: str, asins: Sequence[str], result: GetItemsResult
    ) -> dict[str, dict[str, Any]]:
        """Records for ``asins`` from one getItems answer, written to the cache."""
        retrieved_at = self._now()
        tag = result.credentials.partner_tag
        records: dict[str, dict[str, Any]] = {}
        for asin in asins:
            item = result.items.get(asin)
            if item is not None:
                record = products.to_product(
                    item, marketplace=marketplace, partner_tag=tag, retrieved_at=retrieved_at
                )
                ttl = self.settings.cache_ttl_seconds
            else:
                error = result.errors.get(asin)
                notice = (
                    {"code": error.code, "message": error.message}
                    if error is not None
                    else {
                        "code": "ItemNotReturned",
                        "message": "Amazon returned no data for this item.",
                    }
                )
                record = products.unavailable_product(
                    asin,
                    marketplace=marketplace,
                    partner_tag=tag,
                    retrieved_at=retrieved_at,
                    notice=notice,
                )
                # Only Amazon's own verdict on this ASIN is cached: an ASIN it said nothing
                # about (a call refused over another ASIN) is asked again next time.
                ttl = (
                    min(self.settings.negative_cache_ttl_seconds, self.settings.cache_ttl_seconds)
                    if asin in result.named
                    else 0
                )
            records[asin] = record
            if ttl > 0:
                try:
                    self.stores[marketplace].cache.set(
                        _cache_key(ProductRef(marketplace, asin)), record, ttl
                    )
                except Exception:
                    logger.warning("amazon product cache write failed", exc_info=True)
        return records


def _refused_over_others(batch: Sequence[_Waiter], result: GetItemsResult) -> list[_Waiter]:
    """Waiters of a call Amazon refused over *other* ASINs: no item came back, some ASINs
    were named in errors, and these were not (e.g. a 400 naming one invalid ASIN). One
    user's bad ASIN must not cost another user's product, so each goes out once more."""
    if result.items or not result.named:
        return []
    return [w for w in batch if w.asin not in result.named and not w.requeued]


def _cache_key(ref: ProductRef) -> str:
    return f"{ref.marketplace}:{ref.asin}"
