"""Repeat imports answered from the front cache, before webargs and flask-smorest run.

A cached import used to pay, on every request, for webargs' parsing, a marshmallow load, a
Redis round trip and decode, a marshmallow dump and JSON encoding (docs/performance.md,
"Cache hits at the cost of a bare route"). Here a successful answer of the full route is
kept as its JSON bytes in the per-process :class:`~arda_amazon_bp.front_cache.FrontCache`
for a few seconds, keyed by the link as the request schema would load it. A repeat of that
link within the TTL is answered with those bytes and the current ``RateLimit-*`` headers.
After the TTL, one product-cache read revalidates it: an unchanged record keeps the bytes
for another TTL, anything else goes through the full route.

What the shortcut serves is exactly what the full route served a moment before: same
bytes, same status, same content type; the before/after-request hooks (request id,
authentication) run as for any request. Every other request, including every malformed
one, takes the full route unchanged: :func:`simple_url` accepts only bodies the request
schema certainly accepts, so every ``INVALID_REQUEST`` still comes from webargs.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from flask import Request, Response, current_app, g, request

from .credentials import CredentialsError
from .front_cache import FrontCache
from .schemas import MAX_URL_LENGTH

#: Bodies longer than this take the full route; a link body is far shorter.
MAX_FAST_BODY_BYTES = 4096

JSON_MIMETYPE = "application/json"

_RECORD_KEY = "amazon_front_cache_record"

#: The clock ``retrievedAt`` is compared with (replaced in tests).
_wall_clock = time.time


@dataclass(frozen=True)
class CachedAnswer:
    """A full-route answer as sent: body bytes, status, content type, the partner tag that
    was current when it was made (a rotated tag makes the entry unusable) and the record."""

    body: bytes
    status: int
    content_type: str
    partner_tag: str
    record: dict[str, Any]  # the product record it was made from, for revalidation


def simple_url(req: Request) -> str | None:
    """The link of a body that ``AmazonImportRequestSchema`` certainly accepts, trimmed as
    the schema trims it; ``None`` for anything else (the full route then answers).

    Accepted: ``Content-Type: application/json`` with a ``Content-Length`` of at most
    :data:`MAX_FAST_BODY_BYTES` (and within ``MAX_CONTENT_LENGTH``), a body of UTF-8 JSON
    (decoded as webargs decodes it) that is an object with exactly the key ``url``, whose
    value is a string of 1 to ``MAX_URL_LENGTH`` characters after trimming.
    """
    if req.mimetype != JSON_MIMETYPE:
        return None
    length = req.content_length
    limit = req.max_content_length
    if length is None or not 0 < length <= MAX_FAST_BODY_BYTES:
        return None
    if limit is not None and length > limit:
        return None
    data = req.get_data(cache=True)
    if len(data) != length:
        return None
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if type(doc) is not dict or len(doc) != 1:
        return None
    url = doc.get("url")
    if type(url) is not str:
        return None
    url = url.strip()
    if not 0 < len(url) <= MAX_URL_LENGTH:
        return None
    return url


def _state() -> Any:
    return current_app.extensions["arda_amazon_bp"]


def _answer_ttl(settings: Any, status: int, record: Mapping[str, Any]) -> float:
    """How long an answer may stay in front: at most the front-cache TTL, and never past
    the time the product cache would drop the record (``AMAZON_CACHE_TTL_SECONDS`` after
    ``retrievedAt``, the negative TTL for a 206 that may be an "unavailable" record), so
    nothing is served older than Amazon's terms allow."""
    life = settings.cache_ttl_seconds
    if status != 200:
        life = min(life, settings.negative_cache_ttl_seconds)
    try:
        retrieved = datetime.strptime(str(record["retrievedAt"]), "%Y-%m-%dT%H:%M:%SZ")
    except (KeyError, ValueError):
        return 0.0  # no known age: do not keep it
    age = _wall_clock() - retrieved.replace(tzinfo=timezone.utc).timestamp()
    return float(min(settings.front_cache_ttl_seconds, life - age))


def _partner_tag(state: Any, marketplace: Any = None) -> str | None:
    """The current partner tag of ``marketplace``'s store (the primary store's when it is
    not served); read only once the view or a hit needs credentials, so a miss loads them
    where it always did (the dispatcher thread)."""
    store = getattr(state, "stores", {}).get(marketplace)
    provider = store.credentials if store is not None else state.credentials
    try:
        tag: str = provider.get().partner_tag
    except CredentialsError:
        return None
    return tag


def _keep(state: Any, url: str, result: Response) -> None:
    """Keep a successful full-route answer, if it provably carries the current tag of
    its store."""
    front: FrontCache[Any] = state.front_cache
    settings = state.settings
    record = g.pop(_RECORD_KEY, None)
    if result.is_streamed or not isinstance(record, dict):
        return
    tag = _partner_tag(state, record.get("marketplace"))
    if tag is None:
        return
    ttl = _answer_ttl(settings, result.status_code, record)
    if ttl <= 0:
        return
    body = result.get_data()
    # The tag may have rotated between the view and now: keep only an answer that names
    # the tag it will be checked against (products.detail_page_url's query).
    if f'?tag={quote(tag, safe="")}"'.encode() not in body:
        return
    answer = CachedAnswer(body, result.status_code, result.content_type or "", tag, record)
    front.set(url, answer, ttl)


def _revalidated(state: Any, url: str, tag: str | None) -> CachedAnswer | None:
    """An expired answer whose record the product cache still holds unchanged, kept for
    another TTL: the bytes are reused, and only the product-cache read is paid again."""
    answer: CachedAnswer | None = state.front_cache.stale(url)
    if answer is None or answer.partner_tag != tag:
        return None
    record = answer.record
    current = state.lookup.cached(record["marketplace"], [record["asin"]]).get(record["asin"])
    if current != record:  # gone, refreshed, or tagged otherwise: the full route decides
        return None
    ttl = _answer_ttl(state.settings, answer.status, record)
    if ttl <= 0:
        return None
    state.front_cache.set(url, answer, ttl)
    return answer


def remember_record(view: Callable[..., Any]) -> Callable[..., Any]:
    """Innermost on the view: note the record it returns, so that a kept answer can later
    be revalidated against the product cache (:func:`_revalidated`)."""

    @functools.wraps(view)
    def remember(*args: Any, **kwargs: Any) -> Any:
        result = view(*args, **kwargs)
        if isinstance(result, tuple) and result and isinstance(result[0], dict):
            g.setdefault(_RECORD_KEY, result[0])
        return result

    return remember


def serve_from_front_cache(
    rate_limit_headers: Callable[[list[str]], dict[str, str]],
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate the (already documented) single-import view: answer a repeat link from the
    front cache, else run the view and keep its successful answer.

    ``functools.wraps`` copies flask-smorest's ``_apidoc`` along with the name and
    docstring, so the OpenAPI document is the same with or without this decorator.
    """

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def serve(*args: Any, **kwargs: Any) -> Any:
            state = _state()
            front = state.front_cache
            url = simple_url(request) if front.enabled else None
            if url is None:
                return view(*args, **kwargs)
            answer: CachedAnswer | None = front.get(url)
            known = answer if answer is not None else front.stale(url)
            if known is not None:
                # Each store has its own tag and bucket (docs/configuration.md, stores).
                marketplace = str(known.record.get("marketplace"))
                tag = _partner_tag(state, marketplace)
                if answer is None or answer.partner_tag != tag:
                    answer = _revalidated(state, url, tag)
                if answer is not None:
                    response = current_app.response_class(
                        answer.body, status=answer.status, content_type=answer.content_type
                    )
                    response.headers.extend(rate_limit_headers([marketplace]))
                    # Counted like any import answered from the cache (docs/metrics.md).
                    state.metrics.cache_lookups(1, 0)
                    state.metrics.import_succeeded(answer.status)
                    return response
            result = view(*args, **kwargs)
            if isinstance(result, Response) and result.status_code in (200, 206):
                _keep(state, url, result)
            return result

        return serve

    return decorate
