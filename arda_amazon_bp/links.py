"""Pasted text → :class:`ProductRef` (marketplace, ASIN), or a typed refusal.

This module only *parses*: it never fetches the link, follows a redirect or resolves a
name, so it is safe to call on anything a user pastes. It is pure and fast.

What text is accepted
    Unicode format characters (category ``Cf``, e.g. U+200E or U+FEFF that phones paste
    around links) are removed anywhere, whitespace is trimmed at both ends, and the
    result must be at most 2048 characters with no control characters but whitespace.
    It may be a bare link or text around one, as the Amazon app's Share button writes
    it ("Check out this deal on Amazon: <title> https://a.co/d/…"):

    * the text is split at whitespace; from each token, quotes, brackets and trailing
      punctuation (``"'([{<«“`` in front, ``"')]}>».,;:!?…`` behind, and their
      full-width forms) are trimmed;
    * a token is a *link* when it then starts with ``http://`` or ``https://`` (any
      case) or with a bare Amazon host (``www.amazon.de/…``, ``//amzn.to/…``). A URL
      nested inside a token (``?url=https://…``, ``#https://…``, ``href="https://…"``,
      ``[title](https://…)``) is part of that token, never a link of its own;
    * exactly one distinct product link, or exactly one distinct short link: that link
      is the answer. Two or more distinct links among them (two products, or a product
      and a short link, which could name different products) are refused with
      ``UNRECOGNIZED_AMAZON_URL`` asking for one link. Tokens that are links but not
      product links (a search page, another site) are ignored when a product link is
      found, and otherwise give their own refusal; text with no link at all is
      ``UNRECOGNIZED_AMAZON_URL``.

    * scheme ``http``/``https`` (any case) or none at all (``www.amazon.de/dp/…``,
      ``//www.amazon.de/dp/…``);
    * host: one of the 22 marketplaces (:data:`~arda_amazon_bp.marketplaces.MARKETPLACES`)
      bare or with ``www.``, ``smile.`` or ``m.``, any case, one trailing dot allowed;
      ``amzn.com`` / ``www.amzn.com`` when the path names the ASIN → ``www.amazon.com``;
    * port: absent, empty, or the scheme's default (443, or 80 for ``http``; a link
      without a scheme is taken as ``https``);
    * path (segments percent-decoded one by one, empty segments ignored, an optional
      ``/-/<language>/`` prefix such as ``/-/es/`` skipped, keywords in any case)::

          /dp/ASIN                      /<slug>/dp/ASIN
          /dp/product/ASIN              /<slug>/dp/product/ASIN
          /gp/product/ASIN              /gp/aw/d/ASIN
          /gp/offer-listing/ASIN        /product-reviews/ASIN   /<slug>/product-reviews/ASIN
          /exec/obidos/ASIN/ASIN        /exec/obidos/tg/detail/-/ASIN
          /o/ASIN                       /o/ASIN/ASIN

      with anything after the ASIN (``/ref=…``); also ``/gp/customer-reviews/<review>``
      with an ``ASIN=`` query parameter, and ``/sspa/click?…&url=<path>`` (sponsored
      search results), whose ``url`` must be a path on the same host, parsed once.
    * query and fragment are otherwise ignored (``?th=1&psc=1``, someone else's
      ``tag=``); the product record carries our own partner tag later.
    * ASIN: ``B`` + 9 letters/digits, or an ISBN-10 (9 digits + digit or ``X``; the check
      digit is not verified — Amazon is the judge of that), any case, returned uppercase.

What is refused, and with which code
    * ``UNSUPPORTED_SHORT_LINK`` from :func:`parse_product_link`: ``amzn.to``, ``a.co``,
      ``amzn.eu``, ``amzn.asia``, ``amzn.in`` (exact hosts), and ``amzn.com`` links whose
      path names no ASIN: they only resolve by fetching them. :func:`find_link` instead
      returns a :class:`ShortLink` for the five shortener hosts, which
      :mod:`~arda_amazon_bp.short_links` may resolve when configured to.
    * ``UNSUPPORTED_AMAZON_LOCALE``: a product link on a real Amazon store outside the 22
      (:data:`~arda_amazon_bp.marketplaces.UNSUPPORTED_STORES`: amazon.cn,
      amazon.co.za). A page on such a store that names no product is
      ``UNRECOGNIZED_AMAZON_URL`` like on any store: the link is not a product link.
    * ``UNRECOGNIZED_AMAZON_URL``: everything else — empty text, text over 2048
      characters, control characters, no link or several links, schemes other than
      http(s), **any userinfo** (``user@host``, in either direction: there is no honest
      reason for it in a product link and it is the classic lookalike trick), a
      non-default port, IP-literal hosts, non-ASCII hosts (homoglyphs such as a
      Cyrillic ``а``, full-width dots) and punycode, lookalike domains, other Amazon
      properties (aws, music, developer, sellercentral, images and media hosts, …),
      Amazon pages naming no product (home, search, cart, stores, wishlists, Prime
      Video ``/gp/video/…``), a backslash in the host part.

Messages are short and never repeat the pasted text; ``details`` carries at most a
``host`` (at most 100 characters). Which marketplace the configured credentials serve is
decided later, not here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from .errors import AmazonImportError, ErrorCode
from .marketplaces import is_unsupported_store, marketplace_for_host, store_domain

__all__ = [
    "MAX_LINK_LENGTH",
    "SHORT_LINK_HOSTS",
    "ProductRef",
    "ShortLink",
    "find_link",
    "parse_product_link",
    "short_link_refused",
]

#: Longest accepted text after stripping and trimming (the HTTP layer refuses longer
#: bodies first; the parser still has to be total).
MAX_LINK_LENGTH = 2048

#: Amazon's link shorteners: resolving them needs a fetch, which the parser never does.
SHORT_LINK_HOSTS: frozenset[str] = frozenset({"amzn.to", "a.co", "amzn.eu", "amzn.asia", "amzn.in"})

# amzn.com redirects to www.amazon.com with the path kept, so an ASIN in its path is enough.
_AMZN_COM_HOSTS = frozenset({"amzn.com", "www.amzn.com"})
_AMZN_COM_MARKETPLACE = "www.amazon.com"

_DETAIL_LIMIT = 100

_ASIN_RE = re.compile(r"[Bb][0-9A-Za-z]{9}|[0-9]{9}[0-9Xx]")
# A scheme followed by "//" (RFC 3986 scheme syntax).
_HIER_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")
# "javascript:", "data:", "mailto:"…: a scheme with no "//". A token with a dot is not
# one of those but a schemeless "host:port" ("www.amazon.com:443/dp/…").
_OPAQUE_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-]*:")
_PORT_RE = re.compile(r"[0-9]{0,5}")
# Language selector Amazon puts in front of the path: /-/es/, /-/en/, /-/zh_TW/, /-/pt-BR/.
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,3}(?:[_-][A-Za-z]{2,4})?")
_DEFAULT_PORTS = {"https": 443, "http": 80}
# Trimmed from a token of pasted text: opening quotes and brackets in front; closing ones
# and sentence punctuation behind (ASCII, typographic and full-width forms).
_LEADING = "\"'([{<\u00ab\u2039\u201c\u2018\u201e\u201a\u300c\u300e\u3010\u3008\u300a\uff08*_"
_TRAILING = (
    "\"'.,;:!?)]}>\u00bb\u203a\u201d\u2019\u2026\u300d\u300f\u3011\u3009\u300b"
    "\u3002\u3001\uff0c\uff01\uff1f\uff1a\uff1b\uff09*_"
)
# The host part of a token without a scheme: everything before the first of "/?#:".
_BARE_HOST_RE = re.compile(r"[^/?#:]*")

# Path keywords that precede the ASIN, lowercase. Order matters only for speed.
_SHAPES: tuple[tuple[str, ...], ...] = (
    ("dp",),
    ("gp", "product"),
    ("gp", "aw", "d"),
    ("dp", "product"),
    ("gp", "offer-listing"),
    ("product-reviews",),
    ("exec", "obidos", "asin"),
    ("exec", "obidos", "tg", "detail", "-"),
    ("o",),
    ("o", "asin"),
)
# Shapes Amazon also serves behind a one-segment product-name slug.
_SLUG_SHAPES = frozenset({("dp",), ("dp", "product"), ("product-reviews",)})


@dataclass(frozen=True)
class ProductRef:
    """A product named by a link: canonical marketplace host and uppercase ASIN."""

    marketplace: str
    asin: str


@dataclass(frozen=True)
class ShortLink:
    """A link on one of Amazon's shorteners: only fetching it tells which product it is.

    ``host`` is one of :data:`SHORT_LINK_HOSTS` (lowercase, no trailing dot); ``target``
    is the path and query as pasted (``/d/3V4ITBv``), ``/`` when there was none. The
    fragment is dropped: it never reaches a server.
    """

    host: str
    target: str

    @property
    def url(self) -> str:
        """The link over HTTPS, whatever scheme was pasted."""
        return f"https://{self.host}{self.target}"


def parse_product_link(text: str) -> ProductRef:
    """Parse pasted ``text`` into a :class:`ProductRef`, never fetching anything.

    Raises :class:`~arda_amazon_bp.errors.AmazonImportError` with code
    ``UNRECOGNIZED_AMAZON_URL``, ``UNSUPPORTED_SHORT_LINK`` or
    ``UNSUPPORTED_AMAZON_LOCALE``, and nothing else, for any input (see the module
    docstring for the exact rules).
    """
    found = find_link(text)
    if isinstance(found, ShortLink):
        raise short_link_refused(found.host)
    return found


def find_link(text: str) -> ProductRef | ShortLink:
    """The one product link, or the one short link, in pasted ``text``; never fetches.

    Like :func:`parse_product_link`, but a short link is returned rather than refused.
    """
    if not isinstance(text, str):
        raise _unrecognized("Paste an Amazon product link.")
    try:
        text = _clean(text)
        if not text:
            raise _unrecognized("Paste an Amazon product link.")
        if len(text) > MAX_LINK_LENGTH:
            raise _unrecognized("That text is too long to hold an Amazon product link.")
        if any(unicodedata.category(ch) == "Cc" and not ch.isspace() for ch in text):
            raise _unrecognized("That text contains control characters; paste just the link.")
        tokens = text.split()
        if len(tokens) == 1:
            # A lone token is the link, whatever it looks like: its refusal names its host.
            return _parse(_trim(tokens[0]))
        return _from_text(tokens)
    except (ValueError, UnicodeError) as exc:  # belt and braces: the function is total
        raise _unrecognized("That is not an Amazon product link.") from exc


def short_link_refused(host: str) -> AmazonImportError:
    """``UNSUPPORTED_SHORT_LINK`` for a short link that is not resolved (the default)."""
    return AmazonImportError(
        ErrorCode.UNSUPPORTED_SHORT_LINK,
        "Short links cannot be imported: open the link and paste the product page's "
        "address instead.",
        {"host": host[:_DETAIL_LIMIT]},
    )


def _clean(text: str) -> str:
    if not text.isascii():  # ASCII has no Cf characters; skip the scan for the usual case
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.strip()


def _trim(token: str) -> str:
    return token.lstrip(_LEADING).rstrip(_TRAILING)


def _is_link(token: str) -> bool:
    """Whether a trimmed token of text counts as a link (see the module docstring)."""
    if token[:8].lower().startswith(("http://", "https://")):
        return True
    match = _BARE_HOST_RE.match(token.removeprefix("//"))
    host = match.group(0).lower().removesuffix(".") if match else ""
    return host.isascii() and (
        marketplace_for_host(host) is not None
        or host in SHORT_LINK_HOSTS
        or host in _AMZN_COM_HOSTS
        or is_unsupported_store(host)
    )


def _from_text(tokens: list[str]) -> ProductRef | ShortLink:
    """The one distinct link among ``tokens``; refusals of non-product links are kept
    for when there is none."""
    found: dict[ProductRef | ShortLink, None] = {}  # an ordered set
    refusals: list[AmazonImportError] = []
    for token in tokens:
        candidate = _trim(token)
        if not candidate or not _is_link(candidate):
            continue
        try:
            found[_parse(candidate)] = None
        except AmazonImportError as exc:
            refusals.append(exc)
    if len(found) > 1:
        raise _unrecognized("That text holds several Amazon links; paste just one of them.")
    if found:
        return next(iter(found))
    if refusals:
        # An Amazon-specific answer (a store outside the 22) says more than "not a link".
        specific = [r for r in refusals if r.code is not ErrorCode.UNRECOGNIZED_AMAZON_URL]
        raise (specific or refusals)[0]
    raise _unrecognized("That text holds no Amazon product link; paste the product's link.")


def _parse(text: str) -> ProductRef | ShortLink:
    """One link, already trimmed: a product, a short link, or a refusal."""
    if not text:
        raise _unrecognized("Paste an Amazon product link.")

    scheme, rest = _split_scheme(text)
    end = _first_index(rest, "/?#")
    authority, tail = rest[:end], rest[end:]
    host = _host(authority, scheme)

    path_end = _first_index(tail, "?#")
    path = tail[:path_end]
    query = tail[path_end + 1 :].split("#", 1)[0] if tail[path_end:].startswith("?") else ""

    marketplace = marketplace_for_host(host)
    if marketplace is not None:
        asin = _asin_from_path(path, query, allow_sponsored=True)
        if asin is None:
            raise _unrecognized(
                "That Amazon link does not point to a product page.", marketplace.host
            )
        return ProductRef(marketplace.host, asin)

    if host.removesuffix(".") in _AMZN_COM_HOSTS:
        asin = _asin_from_path(path, query, allow_sponsored=False) or _bare_asin(path)
        if asin is None:
            raise short_link_refused("amzn.com")
        return ProductRef(_AMZN_COM_MARKETPLACE, asin)

    if host.removesuffix(".") in SHORT_LINK_HOSTS:
        target = tail.split("#", 1)[0]
        if not target.startswith("/"):
            target = "/" + target
        return ShortLink(host.removesuffix("."), target)

    if is_unsupported_store(host):
        domain = store_domain(host)
        if _asin_from_path(path, query, allow_sponsored=True) is None:
            raise _unrecognized("That Amazon link does not point to a product page.", domain)
        raise AmazonImportError(
            ErrorCode.UNSUPPORTED_AMAZON_LOCALE,
            f"Products from {domain} are not supported.",
            {"host": domain},
        )

    raise _unrecognized("That is not an Amazon product link.", host)


def _split_scheme(text: str) -> tuple[str, str]:
    """(lowercase scheme, text after ``scheme://``); a missing scheme counts as https."""
    match = _HIER_SCHEME_RE.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme not in _DEFAULT_PORTS:
            raise _unrecognized("Only http and https links can be imported.")
        return scheme, text[match.end() :]
    if text.startswith("//"):
        return "https", text[2:]
    if _OPAQUE_SCHEME_RE.match(text):
        # "javascript:…", "data:…", and also "https:www.amazon.com" (no slashes).
        raise _unrecognized("Only http and https links can be imported.")
    return "https", text


def _host(authority: str, scheme: str) -> str:
    """The lowercase host of ``authority``, after refusing userinfo, odd ports and IPs."""
    if "@" in authority:
        raise _unrecognized("Links with a user name or password in them are not accepted.")
    if authority.startswith("["):
        raise _unrecognized("That is not an Amazon product link.")
    host, colon, port = authority.partition(":")
    if colon and not (
        _PORT_RE.fullmatch(port) and (port == "" or int(port) == _DEFAULT_PORTS[scheme])
    ):
        raise _unrecognized("Links to a non-standard port are not accepted.")
    # Non-ASCII is refused before lowercasing: str.lower() maps some lookalikes to ASCII.
    if not host or not host.isascii():
        raise _unrecognized("That is not an Amazon product link.")
    return host.lower()


def _asin_from_path(path: str, query: str, *, allow_sponsored: bool) -> str | None:
    segments = [unquote(s) for s in path.split("/") if s]
    if len(segments) >= 2 and segments[0] == "-" and _LANGUAGE_RE.fullmatch(segments[1]):
        segments = segments[2:]
    lowered = [s.lower() for s in segments]

    for shape in _SHAPES:
        offsets = (0, 1) if shape in _SLUG_SHAPES else (0,)
        for offset in offsets:
            stop = offset + len(shape)
            if len(segments) > stop and tuple(lowered[offset:stop]) == shape:
                asin = _asin(segments[stop])
                if asin is not None:
                    return asin

    if lowered[:2] == ["gp", "customer-reviews"] and len(segments) > 2:
        return _query_asin(query, "asin")
    if allow_sponsored and lowered == ["sspa", "click"]:
        target = _query_value(query, "url")
        # Only a path on the same host: "//host/…" or "https://…" would change the host.
        if target and target.startswith("/") and not target.startswith("//"):
            target_end = _first_index(target, "?#")
            target_query = target[target_end + 1 :] if target[target_end:].startswith("?") else ""
            return _asin_from_path(target[:target_end], target_query, allow_sponsored=False)
    return None


def _bare_asin(path: str) -> str | None:
    """``amzn.com/ASIN[/…]``: the ASIN as the first path segment."""
    segments = [unquote(s) for s in path.split("/") if s]
    return _asin(segments[0]) if segments else None


def _asin(segment: str) -> str | None:
    return segment.upper() if _ASIN_RE.fullmatch(segment) else None


def _query_value(query: str, name: str) -> str | None:
    # Keys compared case-insensitively: Amazon itself writes both "ASIN=" and "asin=".
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key.lower() == name:
            return value
    return None


def _query_asin(query: str, name: str) -> str | None:
    value = _query_value(query, name)
    return _asin(value) if value is not None else None


def _first_index(text: str, delimiters: str) -> int:
    """Index of the first of ``delimiters`` in ``text``, or ``len(text)``."""
    positions = [i for i in (text.find(d) for d in delimiters) if i >= 0]
    return min(positions, default=len(text))


def _unrecognized(message: str, host: str | None = None) -> AmazonImportError:
    details = {"host": host[:_DETAIL_LIMIT]} if host else {}
    return AmazonImportError(ErrorCode.UNRECOGNIZED_AMAZON_URL, message, details)
