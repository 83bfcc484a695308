"""Short links and share-sheet text through the real import route, over real HTTP: the
sandbox serves the Creators API and the short-link redirects (``AMAZON_SHORT_LINK_BASE_URL``
points the resolver at it). ``FAULTS`` is the short-link part of the fault table in
docs/reliability.md, checked row by row against the document."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from fixtures_app import USER_TOKEN
from fixtures_demo import RunningDemo
from fixtures_sandbox import SandboxApp, SandboxHandle
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.testing import sandbox as cs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
#: Resolution budget in these tests; the slow link waits far longer.
TIMEOUT = 0.5
#: Generous bound on any answer here (budget + Flask + loopback on a loaded machine).
BOUND = TIMEOUT + 2.0
PARSER_CODES = {"UNRECOGNIZED_AMAZON_URL", "UNSUPPORTED_SHORT_LINK", "UNSUPPORTED_AMAZON_LOCALE"}


def short_requests(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    """The short-link requests the sandbox received (over its control API)."""
    response = requests.get(sandbox.url + "/_sandbox/short-links", timeout=5)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()["requests"]
    return result


@pytest.fixture
def shortener(sandbox: SandboxHandle) -> SandboxHandle:
    """The sandbox with its short-link log cleared before the test."""
    requests.delete(sandbox.url + "/_sandbox/short-links", timeout=5).raise_for_status()
    return sandbox


@pytest.fixture
def build(sandbox_app: SandboxApp, shortener: SandboxHandle) -> Callable[..., Flask]:
    """``build(**config)``: a sandbox app resolving short links against the sandbox."""

    def factory(**config: Any) -> Flask:
        return sandbox_app(
            **{
                "AMAZON_SHORT_LINKS": "resolve",
                "AMAZON_SHORT_LINK_BASE_URL": shortener.url,
                "AMAZON_SHORT_LINK_TIMEOUT_SECONDS": TIMEOUT,
                # Several resolutions per test; the default would make some of them 429.
                "AMAZON_SHORT_LINK_RATE_LIMIT": "100/second",
                **config,
            }
        )

    return factory


def post(app: Flask, url: str) -> Any:
    return app.test_client().post(
        "/api/amazon/import",
        json={"url": url},
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )


def post_batch(app: Flask, urls: list[str]) -> Any:
    return app.test_client().post(
        "/api/amazon/import/batch",
        json={"urls": urls},
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )


# --- share-sheet text --------------------------------------------------------------------


def test_share_text_with_one_link_imports_it(build: Callable[..., Flask]) -> None:
    app = build(AMAZON_SHORT_LINKS="refuse")
    text = (
        "Check out this deal on Amazon: Nitrile Gloves, Box of 100 "
        "https://www.amazon.com/dp/B0SYN00311?ref=cm_sw_r_cp_ud_dp_7EASQPVS6NQETBS6ZRRW"
    )
    response = post(app, text)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["asin"] == "B0SYN00311"


def test_share_text_with_a_short_link_imports_its_product(
    build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    app = build()
    response = post(app, "Check out this deal on Amazon: Nitrile Gloves https://a.co/d/1hopA01")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["asin"] == "B0SYN00301"
    assert [r["path"] for r in short_requests(shortener)] == ["/d/1hopA01"]


@pytest.mark.parametrize(
    "text",
    [
        "Compare https://www.amazon.com/dp/B0SYN00312 and https://www.amazon.com/dp/B0SYN00313",
        "https://a.co/d/1hopA01 or maybe https://a.co/d/2hopA01",
        "Same thing? https://a.co/d/1hopA01 https://www.amazon.com/dp/B0SYN00301",
    ],
)
def test_share_text_with_two_links_is_refused_before_any_request(
    build: Callable[..., Flask], shortener: SandboxHandle, text: str
) -> None:
    app = build()
    response = post(app, text)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "UNRECOGNIZED_AMAZON_URL"
    assert "just one" in error["message"]
    assert short_requests(shortener) == []
    assert shortener.stats(calls=False)["total_calls"] == 0


# --- refuse (the default) ----------------------------------------------------------------


def test_under_refuse_a_short_link_makes_no_request_at_all(
    sandbox_app: SandboxApp, shortener: SandboxHandle
) -> None:
    # AMAZON_SHORT_LINKS left at its default; the base URL is set so a request would land
    # in the sandbox's log rather than leave the machine.
    app = sandbox_app(AMAZON_SHORT_LINK_BASE_URL=shortener.url)
    state = app.extensions["arda_amazon_bp"]
    assert state.settings.short_links == "refuse"
    for link in ("https://a.co/d/1hopA01", "Look: https://amzn.to/3SYNamz"):
        response = post(app, link)
        assert response.status_code == 422
        error = response.get_json()["error"]
        assert error["code"] == "UNSUPPORTED_SHORT_LINK"
        assert "reason" not in error["details"]
        assert error["details"]["host"] in {"a.co", "amzn.to"}
    assert short_requests(shortener) == []
    assert state.links.requests_sent == 0
    assert state.links._session is None  # not even a session was built
    assert shortener.stats(calls=False)["total_calls"] == 0


# --- resolve -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "asin", "paths"),
    [
        ("https://a.co/d/1hopA01", "B0SYN00301", ["/d/1hopA01"]),
        ("https://a.co/d/2hopA01", "B0SYN00302", ["/d/2hopA01", "/d/2hopB01"]),
        ("https://amzn.to/3SYNamz", "B0SYN00303", ["/3SYNamz"]),
        ("http://amzn.to/3SYNamz", "B0SYN00303", ["/3SYNamz"]),
        ("amzn.in/d/relA001", "B0SYN00301", ["/d/relA001", "/d/1hopA01"]),
    ],
    ids=["one-hop", "two-hops", "amzn.to", "amzn.to-over-http", "relative-location"],
)
def test_resolve_imports_the_right_asin(
    build: Callable[..., Flask],
    shortener: SandboxHandle,
    link: str,
    asin: str,
    paths: list[str],
) -> None:
    app = build()
    response = post(app, link)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["asin"] == asin
    assert body["detailPageUrl"].startswith(f"https://www.amazon.com/dp/{asin}")
    assert [r["path"] for r in short_requests(shortener)] == paths


def test_a_second_paste_of_the_same_short_link_makes_no_new_request(
    build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    app = build()
    first = post(app, "https://a.co/d/2hopA01")
    assert first.status_code == 200
    assert len(short_requests(shortener)) == 2
    second = post(app, "Check out this deal on Amazon: https://a.co/d/2hopA01")
    assert second.status_code == 200
    assert second.get_json()["asin"] == first.get_json()["asin"]
    batch = post_batch(app, ["https://a.co/d/2hopA01", "a.co/d/2hopA01#x"])
    assert [r["product"]["asin"] for r in batch.get_json()["results"]] == ["B0SYN00302"] * 2
    assert len(short_requests(shortener)) == 2


def test_without_the_cache_every_paste_asks_again(
    build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    """The test above proves the cache, not a resolver that never asks twice."""
    # The front cache would answer the repeated text itself (fast_hits.py): off here.
    app = build(AMAZON_SHORT_LINK_CACHE_TTL_SECONDS=0, AMAZON_FRONT_CACHE_TTL_SECONDS=0)
    assert post(app, "https://a.co/d/1hopA01").status_code == 200
    assert post(app, "https://a.co/d/1hopA01").status_code == 200
    assert len(short_requests(shortener)) == 2


@pytest.mark.parametrize(
    ("link", "reason", "requests_for_two"),
    [
        pytest.param("https://a.co/d/search1", "not_a_product", 1, id="lasting-remembered"),
        pytest.param("https://a.co/d/down001", "unreachable", 2, id="transient-not-remembered"),
    ],
)
def test_a_lasting_refusal_is_remembered_and_a_transient_one_is_not(
    build: Callable[..., Flask],
    shortener: SandboxHandle,
    link: str,
    reason: str,
    requests_for_two: int,
) -> None:
    app = build()
    for _ in range(2):
        response = post(app, link)
        assert response.get_json()["error"]["details"]["reason"] == reason
    assert len(short_requests(shortener)) == requests_for_two


def test_resolving_never_spends_creators_api_quota(
    build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    app = build()
    for link in ("https://a.co/d/search1", "https://a.co/d/offA001", "https://a.co/d/loopA01"):
        assert post(app, link).status_code == 422
    stats = shortener.stats(calls=False)
    assert stats["total_calls"] == 0 and stats["token_requests"] == 0
    assert len(short_requests(shortener)) == 4  # 1 + 1 + 2: requests went to the shortener


def test_resolution_is_rate_limited_per_process(
    build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    app = build(AMAZON_SHORT_LINK_RATE_LIMIT="2/minute")
    assert post(app, "https://a.co/d/1hopA01").status_code == 200
    assert post(app, "https://amzn.to/3SYNamz").status_code == 200
    assert post(app, "https://a.co/d/1hopA01").status_code == 200  # cached: no slot needed
    response = post(app, "https://a.co/d/2hopA01")
    assert response.status_code == 429
    error = response.get_json()["error"]
    assert error["code"] == "AMAZON_RATE_LIMITED"
    assert error["details"]["source"] == "local"
    assert error["details"]["limit"] == "short_link"
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert [r["path"] for r in short_requests(shortener)] == ["/d/1hopA01", "/3SYNamz"]


# --- faults: the short-link rows of docs/reliability.md's fault table ----------------------


@dataclass(frozen=True)
class Fault:
    """One row: the pasted link, the answer, and the short-link requests it costs."""

    name: str
    link: str
    status: int
    code: str
    reason: str | None
    requests: int

    def __str__(self) -> str:
        return self.name


FAULTS: tuple[Fault, ...] = (
    Fault("redirect to a lookalike host", "https://a.co/d/offA001", 422,
          "UNSUPPORTED_SHORT_LINK", "off_amazon", 1),
    Fault("redirect to another site", "https://a.co/d/offB001", 422,
          "UNSUPPORTED_SHORT_LINK", "off_amazon", 1),
    Fault("redirect loop", "https://a.co/d/loopA01", 422,
          "UNSUPPORTED_SHORT_LINK", "too_many_redirects", 2),
    Fault("more than 3 hops", "https://a.co/d/chainA1", 422,
          "UNSUPPORTED_SHORT_LINK", "too_many_redirects", 3),
    Fault("redirect to a search page", "https://a.co/d/search1", 422,
          "UNSUPPORTED_SHORT_LINK", "not_a_product", 1),
    Fault("unknown short link (404)", "https://a.co/d/missing", 422,
          "UNSUPPORTED_SHORT_LINK", "not_a_product", 1),
    Fault("shortener answers 503", "https://a.co/d/down001", 422,
          "UNSUPPORTED_SHORT_LINK", "unreachable", 1),
    Fault("shortener too slow", "https://a.co/d/slowA01", 422,
          "UNSUPPORTED_SHORT_LINK", "timeout", 1),
    Fault("redirect to a store outside the 22", "https://a.co/d/storeCN", 422,
          "UNSUPPORTED_AMAZON_LOCALE", None, 1),
)  # fmt: skip


@pytest.mark.parametrize("fault", FAULTS, ids=str)
def test_short_link_faults(
    fault: Fault, build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    app = build()
    started = time.monotonic()
    response = post(app, f"Check out this deal on Amazon: {fault.link}")
    elapsed = time.monotonic() - started
    assert elapsed < BOUND, f"{fault}: {elapsed:.2f} s"
    assert response.status_code == fault.status
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == fault.code
    assert error["details"].get("reason") == fault.reason
    assert 0 < len(error["message"]) <= 120
    assert "Traceback" not in error["message"] and "http" not in error["message"]
    assert len(short_requests(shortener)) == fault.requests
    assert shortener.stats(calls=False)["total_calls"] == 0


def test_a_slow_shortener_is_cut_at_the_time_budget(
    build: Callable[..., Flask], shortener: SandboxHandle
) -> None:
    app = build()
    started = time.monotonic()
    response = post(app, "https://a.co/d/slowA01")
    elapsed = time.monotonic() - started
    assert response.get_json()["error"]["details"]["reason"] == "timeout"
    # The sandbox waits SHORT_LINK_SLOW_SECONDS; the answer comes near the budget.
    assert TIMEOUT * 0.9 <= elapsed < min(BOUND, cs.SHORT_LINK_SLOW_SECONDS)


def test_the_fault_table_lists_every_short_link_fault() -> None:
    text = (DOCS / "reliability.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if "`test_short_link_faults[" in line]
    documented = {re.search(r"`test_short_link_faults\[(.+?)\]`", r).group(1): r for r in rows}  # type: ignore[union-attr]
    assert set(documented) == {f.name for f in FAULTS}
    for fault in FAULTS:
        cells = [c.strip() for c in documented[fault.name].strip("|").split("|")]
        assert cells[1] == str(fault.status), fault
        assert cells[2] == f"`{fault.code}`", fault
        reason = f"`reason={fault.reason}`" if fault.reason else "—"
        assert cells[3].startswith(reason), fault
        assert f"short-link requests: {fault.requests}" in cells[4], fault


# --- hostile and arbitrary text ----------------------------------------------------------

LINKS = (
    ("https://www.amazon.com/dp/B0SYN00321", "B0SYN00321"),
    ("www.amazon.com/Gloves/dp/b0syn00322/ref=cm_sw_r_cp_ud_dp_X?th=1", "B0SYN00322"),
    ("https://a.co/d/1hopA01", "B0SYN00301"),
    ("https://amzn.to/3SYNamz", "B0SYN00303"),
)
prose = st.text(
    alphabet=st.characters(
        categories=["L", "N", "P", "S", "Zs"], include_characters="\n\u200e\u00a0"
    ),
    max_size=40,
)


@pytest.fixture
def resolving_app(build: Callable[..., Flask]) -> Flask:
    """One app for all examples of a property test."""
    return build()


@given(
    link=st.sampled_from(LINKS),
    before=prose,
    after=prose,
    joint=st.sampled_from(["", " ", "\n", ": ", ' "', " (", " <"]),
)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_any_text_around_a_link_gives_its_product_or_a_typed_refusal(
    resolving_app: Flask, link: tuple[str, str], before: str, after: str, joint: str
) -> None:
    url, asin = link
    response = post(resolving_app, f"{before}{joint}{url} {after}")
    assert response.status_code != 500
    assert response.mimetype == "application/json"
    body = response.get_json()
    if response.status_code in (200, 206):
        assert body["asin"] == asin
    else:
        assert response.status_code in (400, 422), body
        assert body["error"]["code"] in PARSER_CODES | {"INVALID_REQUEST"}


# --- configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("AMAZON_SHORT_LINKS", "follow"),
        ("AMAZON_SHORT_LINKS", 1),
        ("AMAZON_SHORT_LINK_TIMEOUT_SECONDS", 0),
        ("AMAZON_SHORT_LINK_TIMEOUT_SECONDS", "soon"),
        ("AMAZON_SHORT_LINK_RATE_LIMIT", "lots"),
        ("AMAZON_SHORT_LINK_RATE_LIMIT", ""),
        ("AMAZON_SHORT_LINK_CACHE_TTL_SECONDS", -1),
        ("AMAZON_SHORT_LINK_BASE_URL", 42),
    ],
)
def test_bad_settings_are_refused_at_startup(sandbox_app: SandboxApp, key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=key):
        sandbox_app(**{key: value})


def test_a_base_url_that_is_not_an_origin_is_refused(sandbox_app: SandboxApp) -> None:
    with pytest.raises(ConfigError, match="AMAZON_SHORT_LINK_BASE_URL"):
        sandbox_app(AMAZON_SHORT_LINK_BASE_URL="ftp://127.0.0.1:1")


# --- the demo ----------------------------------------------------------------------------


def test_the_demo_resolves_the_short_link_it_prints(running_demo: RunningDemo) -> None:
    """A newcomer pasting the demo's ``https://a.co/d/…`` link gets the demo product."""
    import demo

    assert demo.DEMO_SHORT_LINK in running_demo.printed
    response = requests.post(
        running_demo.base_url + "/api/amazon/import",
        json={"url": f"Check out this deal on Amazon: {demo.DEMO_SHORT_LINK}"},
        headers={"Authorization": "Bearer demo-token"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["asin"] == demo.DEMO_ASIN
