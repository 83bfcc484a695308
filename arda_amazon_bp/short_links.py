"""Pasted text → :class:`~arda_amazon_bp.links.ProductRef`, resolving Amazon short links
when ``AMAZON_SHORT_LINKS = resolve`` (docs/api.md, *Short links*).

``refuse`` (the default) answers a short link with ``UNSUPPORTED_SHORT_LINK`` and sends
nothing. ``resolve`` asks the shortener where the link goes, one redirect at a time:

* a ``GET`` over HTTPS to the short host itself, with redirects never followed by the
  HTTP client; only the ``Location`` of a 301/302/303/307/308 is read (the body never);
* at most :data:`MAX_HOPS` requests, each to one of
  :data:`~arda_amazon_bp.links.SHORT_LINK_HOSTS`. A ``Location`` on one of the 22
  marketplaces ends the chain and goes through the link parser, so locale and store
  rules apply unchanged; a marketplace page is never requested. Anything else stops:
  another host or a lookalike (``off_amazon``), a loop or a chain longer than
  :data:`MAX_HOPS` (``too_many_redirects``), a marketplace page naming no product, a
  page served by the shortener itself or a 404/410 (``not_a_product``), any other
  4xx/5xx or a garbled answer (``unreachable``), the time budget spent (``timeout``);
* the whole resolution fits in ``AMAZON_SHORT_LINK_TIMEOUT_SECONDS``: each request gets
  what is left of it as its connect and read timeout;
* the session is :func:`~arda_amazon_bp.transport.make_session`'s, restricted to the
  short hosts' origins (or the ``AMAZON_SHORT_LINK_BASE_URL`` origin), so even a bug
  could not reach another host; it sends no cookie and no credential, and the Creators
  API quota is never touched;
* results, and the refusals that cannot change (``off_amazon``, ``not_a_product``,
  ``too_many_redirects``, a store outside the 22), are kept in a bounded per-process
  cache for ``AMAZON_SHORT_LINK_CACHE_TTL_SECONDS``, so a popular link costs one
  resolution; ``unreachable`` and ``timeout`` are never kept;
* resolutions are rate-limited per process (``AMAZON_SHORT_LINK_RATE_LIMIT``, a
  ``limits`` moving window in memory); over it the answer is ``AMAZON_RATE_LIMITED``
  (``source: local``, ``limit: short_link``) with ``Retry-After``, and nothing is sent.

``AMAZON_SHORT_LINK_BASE_URL`` is a test seam like ``AMAZON_CREATORS_API_HOST``: when
set, every request goes to that origin instead, keeping the path and query, while hosts
in ``Location`` headers are judged as Amazon wrote them.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from collections import OrderedDict

import requests
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from .config import Settings
from .errors import AmazonImportError, ErrorCode, rate_limited
from .forks import reset_in_child
from .links import (
    SHORT_LINK_HOSTS,
    ProductRef,
    ShortLink,
    find_link,
    short_link_refused,
)
from .marketplaces import marketplace_for_host
from .transport import DisallowedHostError, make_session

__all__ = ["CACHE_MAX_ENTRIES", "MAX_HOPS", "REASONS", "ShortLinks"]

logger = logging.getLogger(__name__)

#: Requests one resolution may make (each one redirect).
MAX_HOPS = 3
#: Resolutions remembered per process; the oldest is dropped first.
CACHE_MAX_ENTRIES = 10_000

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GONE = frozenset({404, 410})
_NAMESPACE = "arda-amazon-short-links"
_AMAZON_NON_STORE_HOSTS = frozenset({"amzn.com", "www.amzn.com"})

#: ``details.reason`` of a short link that could not be resolved, and what the shopper reads.
REASONS: dict[str, str] = {
    "off_amazon": "That short link leads away from Amazon, so it cannot be imported.",
    "too_many_redirects": (
        "That short link goes round in circles; open it and paste the product page's "
        "address instead."
    ),
    "not_a_product": (
        "That short link does not lead to a product page; open it and paste the "
        "product's link instead."
    ),
    "unreachable": (
        "Amazon did not open that short link just now; try again, or paste the product "
        "page's address."
    ),
    "timeout": (
        "Amazon took too long to open that short link; try again, or paste the product "
        "page's address."
    ),
}
#: Reasons that a second try cannot change, so they are cached like a product.
_LASTING = frozenset({"off_amazon", "too_many_redirects", "not_a_product"})


class _Unresolved(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def unresolved(host: str, reason: str) -> AmazonImportError:
    """``UNSUPPORTED_SHORT_LINK`` with ``details.reason``, in words a shopper follows."""
    return AmazonImportError(
        ErrorCode.UNSUPPORTED_SHORT_LINK, REASONS[reason], {"host": host, "reason": reason}
    )


class ShortLinks:
    """Per-app link reading: :meth:`parse` is what the import routes call."""

    def __init__(self, settings: Settings) -> None:
        self.resolve_enabled = settings.short_links == "resolve"
        self.timeout = settings.short_link_timeout_seconds
        self.ttl = settings.short_link_cache_ttl_seconds
        self.base_url = settings.short_link_base_url
        self._limits: tuple[RateLimitItem, ...] = tuple(parse_many(settings.short_link_rate_limit))
        self.requests_sent = 0  # for operators' curiosity and the tests' assertions
        self._reset()
        reset_in_child(self._reset)

    def _reset(self) -> None:
        # Built again in a forked child: the parent's lock, sockets and windows are its own.
        self._lock = threading.Lock()
        self._cache: OrderedDict[ShortLink, tuple[float, ProductRef | AmazonImportError]] = (
            OrderedDict()
        )
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._session: requests.Session | None = None

    def close(self) -> None:
        """Close the HTTP session (a new one is made if used again)."""
        with self._lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # -- the one entry point

    def parse(self, text: str) -> ProductRef:
        """The product named by pasted ``text``: a product link as is, a short link
        refused or resolved as configured. Raises only :class:`AmazonImportError`."""
        found = find_link(text)
        if isinstance(found, ProductRef):
            return found
        if not self.resolve_enabled:
            raise short_link_refused(found.host)
        return self.resolve(found)

    def resolve(self, link: ShortLink) -> ProductRef:
        """Where ``link`` leads, from the cache or by asking the shortener."""
        cached = self._cached(link)
        if cached is None:
            self._take_slot()
            try:
                cached = self._follow(link)
            except _Unresolved as exc:
                error = unresolved(link.host, exc.reason)
                logger.info("short link unresolved host=%s reason=%s", link.host, exc.reason)
                if exc.reason not in _LASTING:
                    raise error from None
                cached = error
            except AmazonImportError as exc:  # a product on a store outside the 22
                cached = exc
            self._remember(link, cached)
        if isinstance(cached, AmazonImportError):
            raise AmazonImportError(cached.code, cached.message, cached.details)
        return cached

    # -- cache and rate limit

    def _cached(self, link: ShortLink) -> ProductRef | AmazonImportError | None:
        with self._lock:
            entry = self._cache.get(link)
            if entry is None:
                return None
            expires, value = entry
            if expires <= time.monotonic():
                del self._cache[link]
                return None
            self._cache.move_to_end(link)
            return value

    def _remember(self, link: ShortLink, value: ProductRef | AmazonImportError) -> None:
        if self.ttl <= 0:
            return
        with self._lock:
            self._cache[link] = (time.monotonic() + self.ttl, value)
            self._cache.move_to_end(link)
            while len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)

    def _take_slot(self) -> None:
        for item in self._limits:
            if not self._limiter.hit(item, _NAMESPACE):
                reset_at = self._limiter.get_window_stats(item, _NAMESPACE).reset_time
                raise rate_limited(
                    int(reset_at - time.time() + 0.999),
                    "local",
                    "Too many short links are being opened right now; try again in a moment "
                    "or paste the product page's address.",
                    limit="short_link",
                    quota=str(item),
                )

    # -- resolution

    def _http(self) -> requests.Session:
        with self._lock:
            if self._session is None:
                allowed = (
                    [self.base_url]
                    if self.base_url
                    else [f"https://{host}/" for host in sorted(SHORT_LINK_HOSTS)]
                )
                session = make_session(allowed)
                session.headers["Accept"] = "text/html,*/*;q=0.8"
                self._session = session
            return self._session

    def _request_url(self, link: ShortLink) -> str:
        return (self.base_url + link.target) if self.base_url else link.url

    def _follow(self, link: ShortLink) -> ProductRef:
        deadline = time.monotonic() + self.timeout
        seen = {link}
        current = link
        for _hop in range(MAX_HOPS):
            location = self._ask(current, deadline)
            try:
                target = urllib.parse.urljoin(current.url, location)
            except ValueError:  # e.g. an unbalanced "[" in the host
                raise _Unresolved("off_amazon") from None
            found = self._judge(target)
            if isinstance(found, ProductRef):
                logger.info(
                    "short link resolved host=%s hops=%d asin=%s", link.host, _hop + 1, found.asin
                )
                return found
            if found in seen:
                raise _Unresolved("too_many_redirects")
            seen.add(found)
            current = found
        raise _Unresolved("too_many_redirects")

    def _ask(self, link: ShortLink, deadline: float) -> str:
        """One request; the ``Location`` it answers with."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Unresolved("timeout")
        self.requests_sent += 1
        try:
            response = self._http().get(
                self._request_url(link),
                allow_redirects=False,
                stream=True,  # the body is never read
                timeout=(remaining, remaining),
            )
        except requests.Timeout:
            raise _Unresolved("timeout") from None
        except DisallowedHostError:  # cannot happen: hosts are checked before asking
            raise _Unresolved("off_amazon") from None
        except (requests.RequestException, ValueError):
            # ValueError: even with allow_redirects=False, requests parses the Location to
            # prepare its next request (Response.next), and an unparsable one raises.
            raise _Unresolved("unreachable") from None
        try:
            status = response.status_code
            location = response.headers.get("Location")
        finally:
            response.close()
        if status in _REDIRECTS:
            if not location or any(ch.isspace() for ch in location):
                raise _Unresolved("unreachable")
            return location
        if 200 <= status < 300 or status in _GONE:
            raise _Unresolved("not_a_product")
        raise _Unresolved("unreachable")

    @staticmethod
    def _judge(target: str) -> ProductRef | ShortLink:
        """Where a ``Location`` points: a product, another short link, or a refusal."""
        try:
            return find_link(target)
        except AmazonImportError as exc:
            if exc.code is ErrorCode.UNSUPPORTED_AMAZON_LOCALE:
                raise
            host = _hostname(target)
            if marketplace_for_host(host) is not None or host in _AMAZON_NON_STORE_HOSTS:
                raise _Unresolved("not_a_product") from None
            raise _Unresolved("off_amazon") from None


def _hostname(url: str) -> str:
    try:
        return (urllib.parse.urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
