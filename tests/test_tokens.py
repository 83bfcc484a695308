"""OAuth token handling (arda_amazon_bp.tokens) on its own, behind a scripted exchange.

The client-level behaviour (single-flight under threads, 401 retries, every token-endpoint
outcome over HTTP) is covered in tests/test_creators.py; these tests show what the module
promises at its seam: it sends nothing itself, caches per credential set, remembers a
rotated set, and its repr shows no token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pytest
import requests

from arda_amazon_bp import forks
from arda_amazon_bp.config import DEFAULTS, Settings
from arda_amazon_bp.credentials import CredentialProvider, Credentials
from arda_amazon_bp.errors import AmazonImportError
from arda_amazon_bp.tokens import TOKEN_URLS, Tokens
from arda_amazon_bp.upstream import _Call

_T = TypeVar("_T")

SECRET = "s3cr3t-VALUE-do-not-log-9f8e7d6c"
NEW_SECRET = "n3w-s3cr3t-VALUE-do-not-log-1a2b"
CREDENTIAL_ID = "amzn1.application-oa2-client.0123456789abcdef"
MARKET = "www.amazon.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Backend:
    def __init__(self) -> None:
        self.secret = SECRET

    def load(self) -> Credentials:
        return Credentials(CREDENTIAL_ID, self.secret, "3.1", "ourstore-20")


class Exchange:
    """Stands in for ``CreatorsClient._exchange``: records each call and answers it with
    the next scripted (status, JSON body), through the caller's own ``interpret``."""

    def __init__(self, *answers: tuple[int, Mapping[str, Any]]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def __call__(
        self,
        kind: str,
        url: str,
        marketplace: str,
        asins: Sequence[str],
        secrets: Sequence[str],
        interpret: Callable[[requests.Response, _Call, bytes], _T],
        **kwargs: Any,
    ) -> _T:
        self.calls.append({"kind": kind, "url": url, "secrets": tuple(secrets), **kwargs})
        status, body = self.answers.pop(0)
        response = requests.Response()
        response.status_code = status
        call = _Call(kind, marketplace, asins, 0.0, secrets)
        call.status = status
        return interpret(response, call, json.dumps(body).encode())


def make_tokens(
    exchange: Exchange, backend: Backend, clock: Clock, events: list[str] | None = None
) -> Tokens:
    return Tokens(
        Settings.from_config(dict(DEFAULTS)),
        CredentialProvider(backend, ttl_seconds=900, clock=clock),
        exchange=exchange,
        emit=lambda name, details: (events if events is not None else []).append(name),
        clock=clock,
    )


def ok(token: str, expires_in: int = 3600) -> tuple[int, dict[str, Any]]:
    return 200, {"access_token": token, "expires_in": expires_in}


def test_every_token_request_goes_through_the_exchange_it_was_given() -> None:
    exchange, clock = Exchange(ok("tok-1")), Clock()
    tokens = make_tokens(exchange, Backend(), clock)
    credentials, token = tokens.access_token(tokens.load_credentials(), MARKET)
    assert token == "tok-1"
    (call,) = exchange.calls
    assert call["kind"] == "token"
    assert call["url"] == TOKEN_URLS["3.1"]
    assert call["json"]["client_secret"] == SECRET  # 3.x: a JSON body
    assert SECRET in call["secrets"]  # so the exchange can redact what Amazon echoes
    assert credentials.credential_secret == SECRET


def test_a_token_is_cached_until_the_refresh_margin_then_fetched_again() -> None:
    exchange, clock = Exchange(ok("tok-1"), ok("tok-2")), Clock()
    tokens = make_tokens(exchange, Backend(), clock)
    credentials = tokens.load_credentials()
    assert tokens.access_token(credentials, MARKET)[1] == "tok-1"
    clock.now += 3539  # the refresh margin is 60 s of a 3600 s lifetime
    assert tokens.access_token(credentials, MARKET)[1] == "tok-1"
    clock.now += 2
    assert tokens.access_token(credentials, MARKET)[1] == "tok-2"
    assert len(exchange.calls) == 2


def test_a_stale_token_is_never_handed_out_again() -> None:
    exchange, clock = Exchange(ok("tok-1"), ok("tok-2")), Clock()
    tokens = make_tokens(exchange, Backend(), clock)
    credentials = tokens.load_credentials()
    tokens.access_token(credentials, MARKET)
    assert tokens.access_token(credentials, MARKET, stale="tok-1")[1] == "tok-2"


def test_invalid_client_switches_to_the_rotated_set_for_good() -> None:
    refused = (401, {"error": "invalid_client", "error_description": "bad secret"})
    exchange, clock, backend = Exchange(refused, ok("tok-new")), Clock(), Backend()
    events: list[str] = []
    tokens = make_tokens(exchange, backend, clock, events)
    old = tokens.load_credentials()
    backend.secret = NEW_SECRET  # rotated after the provider cached the old set
    credentials, token = tokens.access_token(old, MARKET)
    assert (credentials.credential_secret, token) == (NEW_SECRET, "tok-new")
    # A caller still holding the old set gets the new set's cached token, no request.
    assert tokens.access_token(old, MARKET) == (credentials, "tok-new")
    assert [c["json"]["client_secret"] for c in exchange.calls] == [SECRET, NEW_SECRET]
    assert events == []


def test_unchanged_credentials_after_invalid_client_are_rejected_without_a_retry() -> None:
    refused = (400, {"error": "invalid_client"})
    exchange, clock = Exchange(refused), Clock()
    events: list[str] = []
    tokens = make_tokens(exchange, Backend(), clock, events)
    with pytest.raises(AmazonImportError) as info:
        tokens.access_token(tokens.load_credentials(), MARKET)
    assert info.value.details["reason"] == "credentials_rejected"
    assert len(exchange.calls) == 1
    assert events == ["credentials_rejected"]


def test_drop_clear_and_repr() -> None:
    exchange, clock = Exchange(ok("tok-1"), ok("tok-2"), ok("tok-3")), Clock()
    tokens = make_tokens(exchange, Backend(), clock)
    credentials = tokens.load_credentials()
    tokens.access_token(credentials, MARKET)
    tokens.drop_token(credentials, "not-the-cached-one")  # a newer token stays
    assert tokens.access_token(credentials, MARKET)[1] == "tok-1"
    tokens.drop_token(credentials, "tok-1")
    assert len(tokens) == 0
    assert tokens.access_token(credentials, MARKET)[1] == "tok-2"
    assert repr(tokens) == "Tokens(cached=1)"
    tokens.clear()
    assert len(tokens) == 0
    assert tokens.access_token(credentials, MARKET)[1] == "tok-3"


def test_a_forked_child_gets_a_fresh_lock_and_keeps_its_tokens() -> None:
    exchange, clock = Exchange(ok("tok-1")), Clock()
    tokens = make_tokens(exchange, Backend(), clock)
    credentials = tokens.load_credentials()
    tokens.access_token(credentials, MARKET)
    tokens._token_lock.acquire()  # as if a parent thread held it at the fork
    forks._after_fork_in_child()
    assert not tokens._token_lock.locked()
    assert tokens.access_token(credentials, MARKET)[1] == "tok-1"


def test_a_token_url_with_version_is_filled_per_credential_version() -> None:
    from arda_amazon_bp.tokens import token_url_for

    assert token_url_for("http://127.0.0.1:9/_token/{version}", "3.2") == (
        "http://127.0.0.1:9/_token/3.2"
    )
    assert token_url_for("http://127.0.0.1:9/token", "2.1") == "http://127.0.0.1:9/token"
    assert token_url_for(None, "2.3") == TOKEN_URLS["2.3"]
