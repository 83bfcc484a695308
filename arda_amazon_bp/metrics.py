"""Prometheus metrics, when the ``prometheus`` extra (``prometheus_client``) is installed.

:func:`recorder_for` gives the extension one :class:`Recorder` per registry: the
metrics are created the first time a registry is asked for, and every app that names
the same registry (or none: prometheus_client's default ``REGISTRY``) shares them, so
several apps in one process never register a name twice. Without prometheus_client it
returns the no-op :class:`Recorder`, and nothing is imported.

Label values are bounded: each label takes values from a known set (error codes,
outcomes, event names, granularities) or from configuration (marketplace, backend), and
anything else is recorded as ``other``. Never an ASIN, a URL, a request id or free text;
a credential shows at most the last 4 characters of its id (:func:`.credentials.mask`).
Metric names, types and labels are documented in ``docs/metrics.md`` (a test compares).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import weakref
from collections.abc import Mapping
from typing import Any

from limits import parse as parse_limit

from .credentials import mask
from .errors import ErrorCode, UpstreamReason
from .marketplaces import MARKETPLACES

logger = logging.getLogger(__name__)

PREFIX = "arda_amazon_"
OTHER = "other"

#: Every metric: name (prefix included, as exposed) -> (type, labels, help).
METRICS: dict[str, tuple[str, tuple[str, ...], str]] = {
    PREFIX + "imports_total": (
        "counter",
        ("code",),
        "Imports (one per single import or batch item) by error code, or OK/PARTIAL.",
    ),
    PREFIX + "upstream_calls_total": (
        "counter",
        ("marketplace", "outcome"),
        "getItems attempts sent to Amazon (retries included) by outcome.",
    ),
    PREFIX + "upstream_call_seconds": (
        "histogram",
        (),
        "Duration of one getItems attempt, from sending to the interpreted answer.",
    ),
    PREFIX + "asins_per_call": ("histogram", (), "ASINs carried by one getItems attempt."),
    PREFIX + "token_requests_total": (
        "counter",
        ("outcome",),
        "OAuth token requests to Amazon by outcome.",
    ),
    PREFIX + "cache_lookups_total": (
        "counter",
        ("result",),
        "Product cache lookups, one per distinct product of an import: hit or miss.",
    ),
    PREFIX + "quota_wait_seconds": (
        "histogram",
        (),
        "Time from asking for an upstream slot to getting it.",
    ),
    PREFIX + "quota_departure_delay_seconds": (
        "histogram",
        (),
        "Time from taking an upstream slot to the call leaving (token fetch, scheduling).",
    ),
    PREFIX + "quota_refusals_total": (
        "counter",
        ("limit",),
        "Slots refused locally (429 AMAZON_RATE_LIMITED) by the limit that blocked.",
    ),
    PREFIX + "quota_remaining": (
        "gauge",
        ("window", "credential"),
        "Calls left in the quota window, as last read for the RateLimit-* headers.",
    ),
    PREFIX + "quota_limit": (
        "gauge",
        ("window", "credential"),
        "Calls the quota window allows (AMAZON_RATE_LIMITS).",
    ),
    PREFIX + "upstream_events_total": (
        "counter",
        ("event",),
        "Account-level events: eligibility lost, partner tag refused, credentials rejected.",
    ),
    PREFIX + "credential_loads_total": (
        "counter",
        ("backend", "outcome"),
        "Credential backend loads by backend and outcome (ok or error).",
    ),
}

UPSTREAM_CALL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 15.0)
ASINS_PER_CALL_BUCKETS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
QUOTA_WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
# Fine around the default margin (0.15 s): how close departures come to eating it.
DEPARTURE_DELAY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)

IMPORT_CODES = frozenset({"OK", "PARTIAL", *(code.value for code in ErrorCode)})
UPSTREAM_EVENTS = frozenset(
    {"associate_not_eligible", "invalid_partner_tag", "credentials_rejected"}
)
CALL_OUTCOMES = frozenset(
    {
        "ok",
        "rate_limited",
        "token_rejected",
        "disallowed_host",
        *(reason.value for reason in UpstreamReason),
    }
)
MARKETPLACE_HOSTS = frozenset(MARKETPLACES)
QUOTA_LIMITS = frozenset({"second", "minute", "hour", "day", "month", "year", "penalty"})
_CONFIG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")


def _bounded(value: object, allowed: frozenset[str]) -> str:
    return value if isinstance(value, str) and value in allowed else OTHER


def _config_name(value: object) -> str:
    return value if isinstance(value, str) and _CONFIG_NAME.match(value) else OTHER


@functools.lru_cache(maxsize=64)  # one entry per configured limit
def window_label(limit: str) -> str:
    """``"8640 per 1 day"`` (a ``limits`` item as text) -> ``"day"``."""
    try:
        return parse_limit(limit).GRANULARITY.name
    except ValueError:
        return OTHER


class Recorder:
    """Records nothing: the recorder without prometheus_client (and the interface)."""

    enabled = False

    def import_failed(self, code: str) -> None:
        """One import (or batch item) answered with error ``code``."""

    def import_succeeded(self, status: int) -> None:
        """One import (or batch item) answered with a product (200 OK or 206 PARTIAL)."""

    def upstream_call(self, event: Mapping[str, Any]) -> None:
        """One upstream HTTP call as reported to ``arda_amazon_upstream_call``."""

    def upstream_event(self, name: str) -> None:
        """One account-level event (counted every time, unlike the throttled log line)."""

    def cache_lookups(self, hits: int, misses: int) -> None:
        """The cache answered ``hits`` of ``hits + misses`` products."""

    def quota_waited(self, seconds: float) -> None:
        """A slot was granted after ``seconds``."""

    def quota_refused(self, limit: str) -> None:
        """A slot was refused because of ``limit`` (granularity or ``penalty``)."""

    def quota_departed(self, delay: float) -> None:
        """A call left ``delay`` seconds after its slot was taken."""

    def quota_window(self, credential_id: str, limit: str, amount: int, remaining: int) -> None:
        """A reading of quota window ``limit`` (``"8640 per 1 day"``) for a credential."""

    def credential_load(self, backend: str, ok: bool) -> None:
        """One load of credential backend ``backend`` finished."""


class PrometheusRecorder(Recorder):
    """The metrics of :data:`METRICS` in one prometheus_client registry."""

    enabled = True

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        def help_of(name: str) -> str:
            return METRICS[name][2]

        def labels_of(name: str) -> tuple[str, ...]:
            return METRICS[name][1]

        created: list[Any] = []

        def make(kind: Any, name: str, **options: Any) -> Any:
            metric = kind(
                name, help_of(name), labelnames=labels_of(name), registry=registry, **options
            )
            created.append(metric)
            return metric

        p = PREFIX
        try:
            self._imports = make(Counter, p + "imports_total")
            self._calls = make(Counter, p + "upstream_calls_total")
            self._call_seconds = make(
                Histogram, p + "upstream_call_seconds", buckets=UPSTREAM_CALL_BUCKETS
            )
            self._asins = make(Histogram, p + "asins_per_call", buckets=ASINS_PER_CALL_BUCKETS)
            self._tokens = make(Counter, p + "token_requests_total")
            self._cache = make(Counter, p + "cache_lookups_total")
            self._quota_wait = make(Histogram, p + "quota_wait_seconds", buckets=QUOTA_WAIT_BUCKETS)
            self._refusals = make(Counter, p + "quota_refusals_total")
            self._departures = make(
                Histogram, p + "quota_departure_delay_seconds", buckets=DEPARTURE_DELAY_BUCKETS
            )
            # Under gunicorn every worker reads the same shared windows (Redis): the most
            # recent reading is the freshest; see docs/metrics.md for memory://.
            self._remaining = make(Gauge, p + "quota_remaining", multiprocess_mode="mostrecent")
            self._limit = make(Gauge, p + "quota_limit", multiprocess_mode="mostrecent")
            self._events = make(Counter, p + "upstream_events_total")
            self._loads = make(Counter, p + "credential_loads_total")
        except ValueError:
            for metric in created:  # leave the registry as it was
                registry.unregister(metric)
            raise
        # labels() validates and locks on every call; a cache hit should not pay for that
        # several times over. Label values are bounded, so this dict is too.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        for result in ("hit", "miss"):  # both series exist from the start: rate() needs 0
            self._child(self._cache, result)

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def import_failed(self, code: str) -> None:
        self._child(self._imports, _bounded(code, IMPORT_CODES)).inc()

    def import_succeeded(self, status: int) -> None:
        self._child(self._imports, "OK" if status == 200 else "PARTIAL").inc()

    def upstream_call(self, event: Mapping[str, Any]) -> None:
        outcome = _bounded(event.get("outcome"), CALL_OUTCOMES)
        if event.get("kind") == "token":
            self._child(self._tokens, outcome).inc()
            return
        if event.get("kind") != "getItems":
            return
        marketplace = _bounded(event.get("marketplace"), MARKETPLACE_HOSTS)
        self._child(self._calls, marketplace, outcome).inc()
        elapsed = event.get("elapsed")
        if isinstance(elapsed, (int, float)):
            self._call_seconds.observe(max(0.0, float(elapsed)))
        asins = event.get("asins")
        if isinstance(asins, (list, tuple)):
            self._asins.observe(len(asins))
        if outcome == "invalid_partner_tag":  # a call outcome, not an emitted event
            self.upstream_event(outcome)

    def upstream_event(self, name: str) -> None:
        self._child(self._events, _bounded(name, UPSTREAM_EVENTS)).inc()

    def cache_lookups(self, hits: int, misses: int) -> None:
        if hits:
            self._child(self._cache, "hit").inc(hits)
        if misses:
            self._child(self._cache, "miss").inc(misses)

    def quota_waited(self, seconds: float) -> None:
        self._quota_wait.observe(max(0.0, seconds))

    def quota_refused(self, limit: str) -> None:
        self._child(self._refusals, _bounded(limit, QUOTA_LIMITS)).inc()

    def quota_departed(self, delay: float) -> None:
        self._departures.observe(max(0.0, delay))

    def quota_window(self, credential_id: str, limit: str, amount: int, remaining: int) -> None:
        labels = (window_label(limit), mask(credential_id))
        self._child(self._remaining, *labels).set(remaining)
        self._child(self._limit, *labels).set(amount)

    def credential_load(self, backend: str, ok: bool) -> None:
        self._child(self._loads, _config_name(backend), "ok" if ok else "error").inc()


NULL_RECORDER = Recorder()

_lock = threading.Lock()
_recorders: weakref.WeakKeyDictionary[Any, PrometheusRecorder] = weakref.WeakKeyDictionary()


def recorder_for(registry: Any = None) -> Recorder:
    """The recorder of ``registry`` (default: prometheus_client's ``REGISTRY``).

    Without prometheus_client: :data:`NULL_RECORDER`. If another library already
    registered one of our names in that registry, metrics are turned off for it with an
    ERROR log line rather than failing the app.
    """
    try:
        import prometheus_client
    except ImportError:
        return NULL_RECORDER
    if registry is None:
        registry = prometheus_client.REGISTRY
    with _lock:
        recorder = _recorders.get(registry)
        if recorder is None:
            try:
                recorder = PrometheusRecorder(registry)
            except ValueError as exc:
                logger.error("arda_amazon_bp metrics are off for this registry: %s", exc)
                return NULL_RECORDER
            _recorders[registry] = recorder
        return recorder


def exposition(registry: Any = None) -> tuple[bytes, str]:
    """``(body, content type)`` for a ``/metrics`` route.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn workers), every process's values
    summed as prometheus_client's multiprocess mode does; otherwise ``registry``
    (default ``REGISTRY``). Requires prometheus_client.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.registry import CollectorRegistry

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry if registry is not None else REGISTRY), CONTENT_TYPE_LATEST
