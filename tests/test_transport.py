"""The origin-restricted session every Amazon call goes through (arda_amazon_bp.transport)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from fixtures_loopback import Loopback, Seen, http_response, loopback_servers
from requests.adapters import HTTPAdapter

from arda_amazon_bp.transport import (
    DisallowedHostError,
    OriginRestrictedAdapter,
    make_session,
    origin_of,
)

API = "https://creatorsapi.amazon"
TOKEN = "https://api.amazon.com/auth/o2/token"


@pytest.fixture
def loopback() -> Iterator[Callable[..., Loopback]]:
    with loopback_servers() as start:
        yield start


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = make_session([API, TOKEN])
    yield s
    s.close()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every attempt to resolve a name or open a connection."""
    attempts: list[str] = []

    def refuse(name: str) -> Callable[..., Any]:
        def fail(*args: Any, **kwargs: Any) -> Any:
            attempts.append(name)
            raise AssertionError(f"{name} called for a refused request")

        return fail

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(HTTPAdapter, "get_connection_with_tls_context", refuse("get_connection"))
    return attempts


@pytest.fixture
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.mark.parametrize(
    "url",
    [
        "https://creatorsapi.amazon/catalog/v1/getItems",
        "https://CreatorsAPI.Amazon/catalog/v1/getItems",
        "https://creatorsapi.amazon:443/anything?x=1",
        "https://api.amazon.com/auth/o2/token",
    ],
)
def test_allowed_origins_pass_the_check(url: str) -> None:
    OriginRestrictedAdapter([origin_of(API), origin_of(TOKEN)]).check(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/catalog/v1/getItems",
        "http://creatorsapi.amazon/catalog/v1/getItems",  # scheme differs
        "https://creatorsapi.amazon:8443/catalog/v1/getItems",  # port differs
        "https://creatorsapi.amazon.evil.example/",  # suffix trick
        "https://evilcreatorsapi.amazon/",
        "https://creatorsapi.amazon@evil.example/",  # userinfo hides the real host
        "https://evil.example@creatorsapi.amazon/",  # userinfo refused even to our host
        "https://user:pw@creatorsapi.amazon/",
        "https://creatorsapi.amazon\\@evil.example/",  # parser confusion
        "https://evil.example#@creatorsapi.amazon/",
        "https://evil.example?@creatorsapi.amazon/",
        "https://creatorsapi%2eamazon/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://169.254.169.254/latest/meta-data/",
        "ftp://creatorsapi.amazon/",
        "https:///catalog",
        "https://creatorsapi.amazon:99999/",
        "",
    ],
)
def test_disallowed_origins_are_refused(url: str) -> None:
    adapter = OriginRestrictedAdapter([origin_of(API), origin_of(TOKEN)])
    with pytest.raises(DisallowedHostError):
        adapter.check(url)


def test_disallowed_host_error_is_a_requests_exception() -> None:
    assert issubclass(DisallowedHostError, requests.exceptions.RequestException)


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "http://creatorsapi.amazon/",
        "https://creatorsapi.amazon:444/",
        "https://creatorsapi.amazon@evil.example/",
        "http://169.254.169.254/",
    ],
)
def test_refusal_happens_before_any_name_lookup_or_socket(
    session: requests.Session, no_network: list[str], url: str
) -> None:
    with pytest.raises(DisallowedHostError):
        session.post(url, json={"x": 1}, timeout=(1, 1))
    assert no_network == []


def test_refused_even_through_a_configured_proxy(
    session: requests.Session, no_network: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(DisallowedHostError):
        session.get("https://evil.example/", timeout=(1, 1))
    assert no_network == []


def test_allowed_loopback_origin_is_reached_and_other_ports_are_not(
    loopback: Callable[..., Loopback], clean_proxy_env: None
) -> None:
    server = loopback(lambda seen: http_response(200, b'{"ok": true}'))
    session = make_session([server.url + "/some/path"])
    assert session.get(server.url + "/other", timeout=(2, 2)).json() == {"ok": True}
    with pytest.raises(DisallowedHostError):
        session.get(f"http://127.0.0.1:{server.port + 1}/", timeout=(2, 2))
    with pytest.raises(DisallowedHostError):  # same machine, other name: still refused
        session.get(f"http://localhost:{server.port}/", timeout=(2, 2))
    assert len(server.seen) == 1


def test_session_keeps_trust_env_so_proxy_variables_apply(session: requests.Session) -> None:
    assert session.trust_env is True


def test_https_calls_go_through_https_proxy(
    session: requests.Session,
    loopback: Callable[..., Loopback],
    clean_proxy_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = loopback(lambda seen: http_response(403, b""))
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    for url in (API + "/catalog/v1/getItems", TOKEN):
        with pytest.raises(requests.exceptions.ProxyError):
            session.post(url, json={}, timeout=(2, 2))
    assert [s.request_line.rsplit(" ", 1)[0] for s in proxy.seen] == [
        "CONNECT creatorsapi.amazon:443",
        "CONNECT api.amazon.com:443",
    ]


def test_no_proxy_is_honoured(
    loopback: Callable[..., Loopback], clean_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = loopback(lambda seen: http_response(200, b"{}"))
    proxy = loopback(lambda seen: http_response(502, b""))
    session = make_session([direct.url])
    monkeypatch.setenv("HTTP_PROXY", proxy.url)

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert session.get(direct.url + "/x", timeout=(2, 2)).status_code == 200
    assert (len(direct.seen), len(proxy.seen)) == (1, 0)

    monkeypatch.delenv("NO_PROXY")
    assert session.get(direct.url + "/y", timeout=(2, 2)).status_code == 502
    assert proxy.seen[0].request_line == f"GET {direct.url}/y HTTP/1.1"


def test_no_retries_at_the_urllib3_level(
    loopback: Callable[..., Loopback], clean_proxy_env: None
) -> None:
    server = loopback(lambda seen: None)  # read the request, hang up without answering
    session = make_session([server.url])
    with pytest.raises(requests.exceptions.ConnectionError):
        session.post(server.url + "/catalog/v1/getItems", json={}, timeout=(2, 2))
    assert len(server.seen) == 1
    adapter = session.get_adapter(server.url)
    assert isinstance(adapter, OriginRestrictedAdapter)
    assert adapter.max_retries.total == 0


def test_cookies_are_never_stored_or_sent(
    loopback: Callable[..., Loopback], clean_proxy_env: None
) -> None:
    def respond(seen: Seen) -> bytes:
        return http_response(200, b"{}", {"Set-Cookie": "session=abc; Path=/"})

    server = loopback(respond)
    session = make_session([server.url])
    session.get(server.url + "/a", timeout=(2, 2))
    session.get(server.url + "/b", timeout=(2, 2))
    assert len(session.cookies) == 0
    assert all(b"cookie:" not in seen.head.lower() for seen in server.seen)


def test_both_schemes_are_guarded(session: requests.Session) -> None:
    assert isinstance(session.get_adapter("http://x"), OriginRestrictedAdapter)
    assert isinstance(session.get_adapter("https://x"), OriginRestrictedAdapter)


@pytest.mark.parametrize("bad", [[], ["not a url"], ["ftp://x/"], ["https://u@creatorsapi.amazon"]])
def test_make_session_refuses_unusable_allowed_urls(bad: list[str]) -> None:
    with pytest.raises(ValueError, match=r"allowed URL|at least one"):
        make_session(bad)
