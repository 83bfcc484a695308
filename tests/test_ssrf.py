"""No SSRF by construction: nothing taken from a pasted link is ever requested.

A loopback "trap" server records every connection and request it gets. Links that name
it in every way a link can (host, userinfo, port, query, fragment, sponsored-click
``url=``, percent-encoding, IPv6-mapped, no scheme, short links) are imported through the
real route — the sandbox Creators API answering over real HTTP — and the trap must see
nothing. Redirects from upstream that point at the trap are never followed, and even a
session told to follow them refuses at the adapter. Finally every socket the process
opens during full import runs is recorded below ``requests`` (urllib3's
``create_connection``): each one goes to a configured origin, and every ``send`` happens
on the origin-restricted session. With ``AMAZON_SHORT_LINKS = resolve`` a shortener
answering with ``Location`` headers that name the trap in every way gets nothing but
refusals, and the resolver's session refuses every origin but the short hosts'.
"""

from __future__ import annotations

import functools
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import urllib3.util.connection
from fixtures_app import USER_TOKEN
from fixtures_loopback import Loopback, Seen, http_response, loopback_servers
from fixtures_sandbox import SandboxApp, SandboxHandle
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arda_amazon_bp.transport import DisallowedHostError, OriginRestrictedAdapter, origin_of


@pytest.fixture
def loopback() -> Iterator[Callable[..., Loopback]]:
    with loopback_servers() as start:
        yield start


@pytest.fixture
def trap(loopback: Callable[..., Loopback]) -> Loopback:
    """A loopback server that answers anything with 200 ``{}`` and records it all."""
    return loopback(lambda seen: http_response(200, b"{}"))


@pytest.fixture
def build(sandbox_app: SandboxApp) -> Callable[..., Flask]:
    """``build(**config)``: the sandbox app with this module's timeouts."""
    return functools.partial(sandbox_app, AMAZON_HTTP_TIMEOUT=[0.5, 1.0], AMAZON_MAX_WAIT_SECONDS=1)


def hostile_links(trap: str, asin: str = "B0SYN00201") -> list[str]:
    """Links naming ``trap`` (``http://127.0.0.1:PORT``) in every place a link has."""
    hostport = trap.removeprefix("http://")
    port = hostport.rsplit(":", 1)[1]
    quoted = urllib.parse.quote(trap, safe="")
    return [
        f"{trap}/dp/{asin}",
        f"{hostport}/dp/{asin}",
        f"//{hostport}/dp/{asin}",
        f"https://www.amazon.com@{hostport}/dp/{asin}",
        f"https://{hostport}@www.amazon.com/dp/{asin}",
        f"https://www.amazon.com:{port}/dp/{asin}",
        f"https://www.amazon.com\\@{hostport}/dp/{asin}",
        f"https://www.amazon.com%40{hostport}/dp/{asin}",
        f"http://[::ffff:127.0.0.1]:{port}/dp/{asin}",
        f"http://2130706433:{port}/dp/{asin}",
        f"https://www.amazon.com.{hostport}/dp/{asin}",
        f"https://www.amazon.com/dp/{asin}?url={trap}/",
        f"https://www.amazon.com/dp/{asin}?redirect={quoted}",
        f"https://www.amazon.com/dp/{asin}#{trap}/",
        f"https://www.amazon.com/dp/{asin}/ref={quoted}",
        f"https://www.amazon.com/sspa/click?url={trap}/dp/{asin}",
        f"https://www.amazon.com/sspa/click?url=//{hostport}/dp/{asin}",
        f"https://www.amazon.com/sspa/click?url={quoted}%2Fdp%2F{asin}",
        f"https://www.amazon.com/gp/redirect.html?location={quoted}",
        f"https://amzn.to/{asin}?u={quoted}",
        f"https://a.co/d/{asin}#{trap}",
        f"https://smile.amazon.com/dp/{asin}?x={trap}",
        f"{trap}/?https://www.amazon.com/dp/{asin}",
        f"https://www.amazon.com/dp/{asin} {trap}",
    ]


@pytest.fixture
def sockets(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (host, port) urllib3 opens a socket to, whoever asks (all threads)."""
    opened: list[tuple[str, int]] = []
    real = urllib3.util.connection.create_connection
    lock = threading.Lock()

    def record(address: tuple[str, int], *args: Any, **kwargs: Any) -> Any:
        with lock:
            opened.append((address[0], int(address[1])))
        return real(address, *args, **kwargs)

    monkeypatch.setattr(urllib3.util.connection, "create_connection", record)
    return opened


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[type]]]:
    """Every ``requests.Session.send``: the URL and the adapter types of its session."""
    seen: list[tuple[str, list[type]]] = []
    real = requests.Session.send

    def record(self: requests.Session, request: Any, **kwargs: Any) -> Any:
        seen.append((str(request.url), [type(a) for a in self.adapters.values()]))
        return real(self, request, **kwargs)

    monkeypatch.setattr(requests.Session, "send", record)
    return seen


def post(app: Flask, path: str, body: Any) -> Any:
    return app.test_client().post(
        path,
        data=json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )


def assert_allowed_only(
    sandbox: SandboxHandle,
    sockets: list[tuple[str, int]],
    sends: list[tuple[str, list[type]]],
) -> None:
    scheme, host, port = origin_of(sandbox.url)
    assert sockets, "no upstream socket was opened at all: the run proved nothing"
    assert set(sockets) == {(host, port)}, sockets
    for url, adapters in sends:
        assert origin_of(url) == (scheme, host, port), url
        assert adapters and all(a is OriginRestrictedAdapter for a in adapters), adapters


def test_links_naming_another_host_never_reach_it(
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    trap: Loopback,
    sockets: list[tuple[str, int]],
    sends: list[tuple[str, list[type]]],
) -> None:
    app = build()
    links = hostile_links(trap.url)
    statuses: dict[str, int] = {}
    for link in links:
        response = post(app, "/api/amazon/import", {"url": link})
        assert response.mimetype == "application/json", link
        assert response.status_code != 500, (link, response.get_json())
        statuses[link] = response.status_code
        if response.status_code in (200, 206):
            # Whatever the link said, the product is ours, from www.amazon.com.
            body = response.get_json()
            assert body["detailPageUrl"].startswith("https://www.amazon.com/dp/"), body
            assert "127.0.0.1" not in json.dumps(body)
    response = post(app, "/api/amazon/import/batch", {"urls": links})
    assert response.status_code == 200

    assert trap.connections == 0 and trap.seen == []
    # Some of those links are Amazon links with junk around the trap: they were imported
    # (from the sandbox), so the run exercised the upstream path too.
    assert 200 in statuses.values()
    assert_allowed_only(sandbox, sockets, sends)
    assert {c["endpoint"] for c in sandbox.stats()["calls"]} <= {"getItems", "token"}


@pytest.fixture
def trap_app(build: Callable[..., Flask]) -> Flask:
    """One app for all of a property test's examples."""
    return build()


@given(
    prefix=st.sampled_from(["", "https://", "http://", "//", "https://www.amazon.com/dp/"]),
    middle=st.sampled_from(["@", "?url=", "#", "/", "\\", "%40", ":", "/sspa/click?url="]),
    tail=st.text(alphabet="B0SYN123/.:?&=%@#", max_size=20),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_generated_links_around_the_trap_never_reach_it(
    trap_app: Flask,
    trap: Loopback,
    prefix: str,
    middle: str,
    tail: str,
) -> None:
    app = trap_app
    hostport = trap.url.removeprefix("http://")
    for link in (
        f"{prefix}{hostport}{middle}{tail}",
        f"{prefix}www.amazon.com{middle}{hostport}{tail}",
    ):
        response = post(app, "/api/amazon/import", {"url": link})
        assert response.status_code != 500
        assert response.mimetype == "application/json"
    assert trap.connections == 0


@pytest.fixture
def redirector(loopback: Callable[..., Loopback], trap: Loopback) -> Loopback:
    """An upstream that answers every request with a redirect to the trap."""

    def respond(seen: Seen) -> bytes:
        status = 307 if "token" in seen.request_line else 302
        return http_response(
            status, b'{"moved": true}', {"Location": f"{trap.url}/catalog/v1/getItems"}
        )

    return loopback(respond)


@pytest.mark.parametrize("leg", ["getItems", "token"])
def test_upstream_redirects_to_another_host_are_never_followed(
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    redirector: Loopback,
    trap: Loopback,
    leg: str,
) -> None:
    if leg == "getItems":
        app = build(AMAZON_CREATORS_API_HOST=redirector.url)
    else:
        app = build(AMAZON_TOKEN_URL=f"{redirector.url}/oauth2/token")
    response = post(app, "/api/amazon/import", {"url": "https://www.amazon.com/dp/B0SYN00202"})
    assert response.status_code == 502
    assert response.get_json()["error"]["details"]["reason"] == "invalid_response"
    assert len(redirector.seen) == 1  # asked once, the answer refused, nothing followed
    assert trap.connections == 0 and trap.seen == []


def test_a_redirect_status_from_the_sandbox_is_not_followed(
    build: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    app = build()
    sandbox.fault("status", status=302)
    response = post(app, "/api/amazon/import", {"url": "https://www.amazon.com/dp/B0SYN00203"})
    assert response.status_code == 502
    assert response.get_json()["error"]["details"]["reason"] == "invalid_response"
    assert sandbox.stats(calls=False)["total_calls"] == 1


def test_even_a_session_told_to_follow_redirects_refuses_the_other_host(
    build: Callable[..., Flask], redirector: Loopback, trap: Loopback
) -> None:
    """The adapter, not the caller's ``allow_redirects=False``, is what keeps us in."""
    app = build(AMAZON_CREATORS_API_HOST=redirector.url)
    session = app.extensions["arda_amazon_bp"].client._http()
    with pytest.raises(DisallowedHostError):
        session.post(redirector.url + "/catalog/v1/getItems", json={}, allow_redirects=True)
    assert len(redirector.seen) == 1
    assert trap.connections == 0


def test_the_client_session_refuses_every_origin_but_the_configured_ones(
    build: Callable[..., Flask], sandbox: SandboxHandle, trap: Loopback
) -> None:
    app = build()
    session = app.extensions["arda_amazon_bp"].client._http()
    adapters = list(session.adapters.values())
    assert adapters and all(isinstance(a, OriginRestrictedAdapter) for a in adapters)
    scheme, host, port = origin_of(sandbox.url)
    assert {a.allowed_origins for a in adapters} == {frozenset({(scheme, host, port)})}
    for url in (
        trap.url + "/",
        f"https://{host}:{port}/",  # right host and port, other scheme
        f"http://localhost:{port}/",  # same socket, other name
        f"http://user@{host}:{port}/",
        "https://www.amazon.com/dp/B0SYN00204",
        "https://creatorsapi.amazon/catalog/v1/getItems",  # the default host, not configured
    ):
        with pytest.raises(DisallowedHostError):
            session.get(url, timeout=1)
    assert trap.connections == 0


def test_full_import_runs_open_sockets_only_to_configured_origins(
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    trap: Loopback,
    sockets: list[tuple[str, int]],
    sends: list[tuple[str, list[type]]],
) -> None:
    """Success, 401 refresh, a batch and a fault: every socket and every send is ours."""
    app = build()
    # Faults are queued in-process: the control API's own HTTP would be recorded too.
    sandbox.state.add_fault("token_expired")
    assert (
        post(app, "/api/amazon/import", {"url": "https://www.amazon.com/dp/B0SYN00205"}).status_code
        == 200
    )
    urls = [f"https://www.amazon.com/dp/B0SYN0021{i}?ref={trap.url}" for i in range(5)]
    assert post(app, "/api/amazon/import/batch", {"urls": urls}).status_code == 200
    sandbox.state.add_fault("status", status=503)
    assert (
        post(app, "/api/amazon/import", {"url": "https://www.amazon.com/dp/B0SYN00206"}).status_code
        == 502
    )
    assert_allowed_only(sandbox, sockets, sends)
    assert trap.connections == 0


# --- short links (AMAZON_SHORT_LINKS = resolve) -------------------------------------------


def hostile_locations(trap: str, asin: str = "B0SYN00231") -> list[str]:
    """``Location`` headers a shortener could answer with, each naming ``trap``."""
    hostport = trap.removeprefix("http://")
    port = hostport.rsplit(":", 1)[1]
    quoted = urllib.parse.quote(trap, safe="")
    return [
        f"{trap}/dp/{asin}",
        f"//{hostport}/dp/{asin}",
        f"https://www.amazon.com@{hostport}/dp/{asin}",
        f"https://{hostport}@www.amazon.com/dp/{asin}",
        f"https://a.co@{hostport}/d/x",
        f"https://a.co:{port}/d/x",
        f"https://www.amazon.com:{port}/dp/{asin}",
        f"https://a.co.{hostport}/d/x",
        f"http://[::ffff:127.0.0.1]:{port}/d/x",
        f"http://[::ffff:127.0.0.1:{port}/d/x",  # unbalanced bracket
        f"https://www.amazon.com\\@{hostport}/dp/{asin}",
        f"/\\{hostport}/d/x",
        f"https://www.amazon.com/sspa/click?url={trap}/dp/{asin}",
        f"https://www.amazon.com/gp/redirect.html?location={quoted}",
        f"javascript:fetch('{trap}')",
        f"{trap}/?https://www.amazon.com/dp/{asin}",
    ]


@pytest.fixture
def hostile_shortener(loopback: Callable[..., Loopback], trap: Loopback) -> Loopback:
    """A shortener whose ``/d/k<i>`` answers 301 to the i-th hostile ``Location``, and
    which tries to set a cookie on every answer (Amazon's web front sets session cookies)."""
    locations = hostile_locations(trap.url)
    cookie = {"Set-Cookie": "session-id=131-0000000-0000000; Path=/"}

    def respond(seen: Seen) -> bytes:
        path = seen.request_line.split(" ")[1]
        match = path.removeprefix("/d/k").split("?")[0]
        if match.isdigit() and int(match) < len(locations):
            return http_response(301, b"", {"Location": locations[int(match)], **cookie})
        return http_response(404, b"<html>not found</html>", cookie)

    return loopback(respond)


def test_short_link_redirects_naming_another_host_never_reach_it(
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    hostile_shortener: Loopback,
    trap: Loopback,
    sockets: list[tuple[str, int]],
    sends: list[tuple[str, list[type]]],
) -> None:
    app = build(
        AMAZON_SHORT_LINKS="resolve",
        AMAZON_SHORT_LINK_BASE_URL=hostile_shortener.url,
        AMAZON_SHORT_LINK_RATE_LIMIT="1000/second",
    )
    count = len(hostile_locations(trap.url))
    pasted = [f"https://a.co/d/k{i}" for i in range(count)] + [
        f"https://a.co/d/k0?u={trap.url}",
        f"Look: https://amzn.to/{trap.url}",
        f"https://amzn.eu/d/k1#{trap.url}",
    ]
    reasons = set()
    for link in pasted:
        response = post(app, "/api/amazon/import", {"url": link})
        assert response.mimetype == "application/json", link
        assert response.status_code == 422, (link, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == "UNSUPPORTED_SHORT_LINK", (link, error)
        assert "127.0.0.1" not in json.dumps(error)
        reasons.add(error["details"]["reason"])
    # "unreachable": a Location requests itself cannot parse (the unbalanced bracket).
    assert reasons <= {"off_amazon", "not_a_product", "too_many_redirects", "unreachable"}
    assert "off_amazon" in reasons  # the hostile targets were judged, not just 404s

    assert trap.connections == 0 and trap.seen == []
    assert len(hostile_shortener.seen) >= count  # every hostile Location was handed out
    for seen in hostile_shortener.seen:  # no cookie kept, no credential sent
        head = seen.head.lower()
        assert b"\r\ncookie:" not in head and b"\r\nauthorization:" not in head, seen.head
    shortener_origin = origin_of(hostile_shortener.url)
    assert set(sockets) == {shortener_origin[1:]}, sockets
    for url, adapters in sends:
        assert origin_of(url) == shortener_origin, url
        assert adapters and all(a is OriginRestrictedAdapter for a in adapters), adapters
    assert sandbox.stats(calls=False)["total_calls"] == 0  # and no Creators API quota


def test_the_short_link_session_can_only_reach_the_short_hosts(
    build: Callable[..., Flask], trap: Loopback
) -> None:
    from arda_amazon_bp.links import SHORT_LINK_HOSTS

    app = build(AMAZON_SHORT_LINKS="resolve")
    session = app.extensions["arda_amazon_bp"].links._http()
    adapters = list(session.adapters.values())
    assert adapters and all(isinstance(a, OriginRestrictedAdapter) for a in adapters)
    expected = frozenset(("https", host, 443) for host in SHORT_LINK_HOSTS)
    assert {a.allowed_origins for a in adapters} == {expected}
    assert "Cookie" not in session.headers and "Authorization" not in session.headers
    for url in (
        trap.url + "/d/x",
        "http://a.co/d/x",  # right host, plain HTTP
        "https://a.co:8443/d/x",
        "https://www.amazon.com/dp/B0SYN00232",  # the store is never requested
        "https://a.co.evil.example/d/x",
    ):
        with pytest.raises(DisallowedHostError):
            session.get(url, timeout=1, allow_redirects=False)
    assert trap.connections == 0


def test_even_a_short_link_session_told_to_follow_redirects_stays_in(
    build: Callable[..., Flask], redirector: Loopback, trap: Loopback
) -> None:
    app = build(AMAZON_SHORT_LINKS="resolve", AMAZON_SHORT_LINK_BASE_URL=redirector.url)
    session = app.extensions["arda_amazon_bp"].links._http()
    with pytest.raises(DisallowedHostError):
        session.get(redirector.url + "/d/x", allow_redirects=True, timeout=1)
    assert len(redirector.seen) == 1
    assert trap.connections == 0


@pytest.fixture
def scripted_shortener(loopback: Callable[..., Loopback]) -> tuple[Loopback, list[str]]:
    """A shortener answering every request with a 301 to ``locations[-1]``."""
    locations = ["/"]

    def respond(seen: Seen) -> bytes:
        return http_response(301, b"", {"Location": locations[-1]})

    return loopback(respond), locations


@pytest.fixture
def scripted_app(
    build: Callable[..., Flask], scripted_shortener: tuple[Loopback, list[str]]
) -> Flask:
    """One resolving app for all of a property test's examples (no cache, no rate limit)."""
    return build(
        AMAZON_SHORT_LINKS="resolve",
        AMAZON_SHORT_LINK_BASE_URL=scripted_shortener[0].url,
        AMAZON_SHORT_LINK_CACHE_TTL_SECONDS=0,
        AMAZON_SHORT_LINK_RATE_LIMIT="1000/second",
    )


@given(
    prefix=st.sampled_from(["", "https://", "http://", "//", "/", "https://a.co/d/", "\\\\"]),
    middle=st.sampled_from(["www.amazon.com", "a.co", "amzn.to", "@", "[", "]", ":", "%40"]),
    tail=st.text(alphabet="B0SYN123/.:?&=%@#[]\\ ", max_size=24),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_generated_locations_around_the_trap_never_reach_it_nor_fail(
    scripted_app: Flask,
    scripted_shortener: tuple[Loopback, list[str]],
    trap: Loopback,
    prefix: str,
    middle: str,
    tail: str,
) -> None:
    hostport = trap.url.removeprefix("http://")
    _, locations = scripted_shortener
    for location in (f"{prefix}{hostport}{middle}{tail}", f"{prefix}{middle}{hostport}{tail}"):
        locations.append(location)
        response = post(scripted_app, "/api/amazon/import", {"url": "https://a.co/d/gen0001"})
        assert response.status_code in (200, 206, 422), (location, response.get_json())
        assert response.mimetype == "application/json"
    assert trap.connections == 0
