"""The one HTTP transport for every Amazon call: a ``requests.Session`` that can only
reach the origins it was built for.

SSRF is impossible by construction rather than by validation at call sites: the
session's adapters compare each request's scheme, host and port against a fixed set of
allowed origins and refuse anything else *before* a connection pool, DNS lookup or socket
exists. Nothing derived from a pasted link is ever requested, and even a bug that tried
would fail closed.

The session keeps ``trust_env``, so the standard ``HTTPS_PROXY`` / ``HTTP_PROXY`` /
``NO_PROXY`` environment applies to the token leg and the catalog leg alike (the origin
check is on the target URL; a proxy is the operator's choice and stays allowed).
"""

from __future__ import annotations

import http.cookiejar
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util import Retry, parse_url

from . import __version__

#: (scheme, host, port) with the scheme's default port filled in.
Origin = tuple[str, str, int]

_DEFAULT_PORTS = {"http": 80, "https": 443}


class DisallowedHostError(requests.exceptions.RequestException):
    """A request targeted an origin this session was not built for; nothing was sent."""


def origin_of(url: str) -> Origin:
    """The normalized origin of ``url``; ``ValueError`` when it has none we would trust.

    Two parsers are consulted — the stdlib one ``requests`` uses to pick the connection
    and urllib3's — and must agree, so parser-confusion tricks (``\\@``, odd brackets) can
    never make the check see one host while the socket goes to another. URLs carrying
    userinfo are refused outright: we never send credentials that way, and ``user@host``
    is the classic way to disguise a host.
    """
    try:
        split = urllib.parse.urlsplit(url)
        scheme = split.scheme.lower()
        host = (split.hostname or "").lower()
        port = split.port
        other = parse_url(url)
    except ValueError as exc:  # bad port, unbalanced brackets, …
        raise ValueError(f"unparsable URL: {exc}") from None
    except Exception as exc:  # urllib3's LocationParseError is not a ValueError
        raise ValueError(f"unparsable URL: {type(exc).__name__}") from None
    if scheme not in _DEFAULT_PORTS or not host:
        raise ValueError("URL must be http(s) with a host")
    if split.username is not None or split.password is not None or "@" in split.netloc:
        raise ValueError("URL must not carry userinfo")
    if "\\" in split.netloc:
        raise ValueError("URL authority must not contain a backslash")
    if (other.scheme or "").lower() != scheme or (other.host or "").lower().strip("[]") != host:
        raise ValueError("URL parses ambiguously")
    if (other.port or None) != port:
        raise ValueError("URL port parses ambiguously")
    return scheme, host, port if port is not None else _DEFAULT_PORTS[scheme]


class OriginRestrictedAdapter(HTTPAdapter):
    """An ``HTTPAdapter`` that refuses every origin but the allowed ones, and never retries.

    urllib3-level retries are off (``Retry(0, read=False)``): a retried getItems would
    spend Amazon quota the rate limiter never granted. Retrying is the client's decision.
    """

    def __init__(self, allowed: Iterable[Origin], **kwargs: Any) -> None:
        kwargs.setdefault("max_retries", Retry(total=0, read=False, redirect=False))
        super().__init__(**kwargs)
        self.allowed_origins: frozenset[Origin] = frozenset(allowed)

    def check(self, url: str | None) -> None:
        """Raise :class:`DisallowedHostError` unless ``url``'s origin is allowed."""
        try:
            origin = origin_of(url or "")
        except ValueError as exc:
            raise DisallowedHostError(f"refused request: {exc}") from None
        if origin not in self.allowed_origins:
            scheme, host, port = origin
            raise DisallowedHostError(f"refused request to {scheme}://{host}:{port}: not allowed")

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        # Checked before super().send(): no pool, no DNS lookup, no socket for a refusal.
        self.check(request.url)
        return super().send(
            request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
        )


def make_session(allowed_urls: Iterable[str]) -> requests.Session:
    """One session for every Amazon call, restricted to the origins of ``allowed_urls``.

    Only the origin (scheme, host, port) of each allowed URL matters; paths are ignored.
    Cookies are refused: Amazon's APIs are stateless for us, and a cookie set by one token
    host must never ride along to another.
    """
    origins = set()
    for url in allowed_urls:
        try:
            origins.add(origin_of(url))
        except ValueError as exc:
            raise ValueError(f"allowed URL {url!r} is not usable: {exc}") from None
    if not origins:
        raise ValueError("make_session needs at least one allowed URL")
    session = requests.Session()
    session.trust_env = True  # the default, stated: proxies come from the environment
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    session.headers["User-Agent"] = (
        f"arda-amazon-bp/{__version__} {requests.utils.default_user_agent()}"
    )
    session.headers["Accept"] = "application/json"
    adapter = OriginRestrictedAdapter(origins)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
