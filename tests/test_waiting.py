"""The waiting cap (``AMAZON_MAX_WAITING``): imports waiting for Amazon leave threads free.

In process against a held requests-mock Amazon, then under gunicorn (1 worker x 4
threads, ``examples/stack.py``) against the sandbox slowed by its ``delay`` fault, where
a host route must keep answering while imports wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
import requests
from fixtures_app import GET_ITEMS_URL, USER_TOKEN, make_item
from flask import Flask
from gunicorn.workers.gthread import ThreadWorker
from gunicorn.workers.sync import SyncWorker
from stack import run_stack

from arda_amazon_bp.waiting import FALLBACK_LIMIT, default_limit, server_threads

_T = TypeVar("_T")

AUTH = {"Authorization": f"Bearer {USER_TOKEN}"}


def link(n: int) -> str:
    return f"https://www.amazon.com/dp/B0WAITNG{n:02d}"


def assert_waiting_refusal(response: Any) -> None:
    assert response.status_code == 429, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "AMAZON_RATE_LIMITED"
    assert (error["details"]["source"], error["details"]["limit"]) == ("local", "waiting")
    assert response.headers["Retry-After"] == "1"


# -- the default ------------------------------------------------------------------------------


def test_the_default_is_half_the_threads_at_least_one_else_eight() -> None:
    assert default_limit(None) == FALLBACK_LIMIT == 8
    assert default_limit(4) == 2
    assert default_limit(32) == 16
    assert default_limit(1) == 1


def _as_worker(worker: Any) -> int | None:
    """Detect the server from inside a frame whose ``self`` is ``worker``, as in
    ``Worker.run`` on a gunicorn worker's main thread."""

    class Runner:
        def run(self) -> int | None:
            return server_threads()

    def run(self: Any) -> int | None:
        return Runner().run()

    return run(worker)


def test_gunicorn_threads_are_read_from_the_running_worker() -> None:
    gthread = object.__new__(ThreadWorker)
    gthread.cfg = SimpleNamespace(threads=6)
    assert _as_worker(gthread) == 6
    sync = object.__new__(SyncWorker)
    sync.cfg = SimpleNamespace(threads=6)  # the sync worker serves one request at a time
    assert _as_worker(sync) == 1
    assert server_threads() is None  # no server here: the fallback applies


def test_an_explicit_setting_wins_over_the_server(make_app: Callable[..., Flask]) -> None:
    assert make_app(AMAZON_MAX_WAITING=3).extensions["arda_amazon_bp"].lookup.waiting.limit == 3
    assert make_app().extensions["arda_amazon_bp"].lookup.waiting.limit == FALLBACK_LIMIT


# -- in process ---------------------------------------------------------------------------------


@pytest.fixture
def held(amazon: Any) -> Any:
    """getItems answers only once ``release`` is set (Amazon is slow)."""
    release = threading.Event()
    amazon.add(*(make_item(f"B0WAITNG{n:02d}") for n in range(10)))

    def answer(request: Any, context: Any) -> dict[str, Any]:
        release.wait(10)
        return amazon.answer(request, context)

    amazon.mocker.post(GET_ITEMS_URL, json=answer)
    yield release
    release.set()


def test_two_may_wait_and_the_others_are_refused_at_once(
    make_app: Callable[..., Flask], held: threading.Event
) -> None:
    app = make_app(AMAZON_RATE_LIMITS="1/second", AMAZON_MAX_WAITING=2, AMAZON_MAX_WAIT_SECONDS=5)
    lookup = app.extensions["arda_amazon_bp"].lookup
    start = threading.Barrier(6)

    def one(n: int) -> tuple[Any, float]:
        client = app.test_client()
        start.wait(5)
        began = time.monotonic()
        response = client.post("/api/amazon/import", json={"url": link(n)}, headers=AUTH)
        return response, time.monotonic() - began

    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = [pool.submit(one, n) for n in range(6)]
        quick = _first_done(futures, 4, timeout=5)
        assert lookup.waiting.waiting == 2  # the other two are still waiting for Amazon
        held.set()
        outcomes = [f.result(timeout=10) for f in futures]

    immediate = [r for r, seconds in quick if seconds < 0.5 and r.status_code == 429]
    assert len(immediate) >= 3
    for response in immediate:
        assert_waiting_refusal(response)
    statuses = sorted(r.status_code for r, _ in outcomes)
    assert statuses == [200, 200, 429, 429, 429, 429]
    assert lookup.waiting.waiting == 0


def test_cache_hits_never_wait_so_they_pass_a_full_gate(
    make_app: Callable[..., Flask], amazon: Any
) -> None:
    amazon.add(make_item("B0WAITNG01"))
    app = make_app(AMAZON_MAX_WAITING=1)
    client = app.test_client()
    assert client.post("/api/amazon/import", json={"url": link(1)}, headers=AUTH).status_code == 200
    gate = app.extensions["arda_amazon_bp"].lookup.waiting
    gate.enter()  # someone else is waiting now
    try:
        hit = client.post("/api/amazon/import", json={"url": link(1)}, headers=AUTH)
        assert hit.status_code == 200
        assert_waiting_refusal(
            client.post("/api/amazon/import", json={"url": link(2)}, headers=AUTH)
        )
        batch = client.post(
            "/api/amazon/import/batch", json={"urls": [link(1), link(2)]}, headers=AUTH
        ).get_json()["results"]
        assert [r["status"] for r in batch] == [200, 429]
        assert batch[1]["error"]["details"]["limit"] == "waiting"
    finally:
        gate.leave()


def test_a_place_is_given_back_whatever_the_outcome(
    make_app: Callable[..., Flask], amazon: Any
) -> None:
    app = make_app(AMAZON_MAX_WAITING=1)
    client = app.test_client()
    amazon.fail_get_items(status_code=503)
    assert client.post("/api/amazon/import", json={"url": link(3)}, headers=AUTH).status_code == 502
    assert app.extensions["arda_amazon_bp"].lookup.waiting.waiting == 0
    amazon.mocker.post(GET_ITEMS_URL, json=amazon.answer)
    amazon.add(make_item("B0WAITNG04"))
    assert client.post("/api/amazon/import", json={"url": link(4)}, headers=AUTH).status_code == 200


# -- under gunicorn ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_host_route_answers_while_imports_wait_under_gunicorn_1x4() -> None:
    """12 imports wait for a slow Amazon on 1 worker x 4 threads; /healthz still answers.

    Before the cap every thread waited and /healthz took 2.3-3.4 s (16 s with Amazon at
    8 s). The default cap, derived from gunicorn's 4 threads, is 2.
    """
    with run_stack(
        workers=1,
        threads=4,
        rate=1,
        storage="memory",
        config={"AMAZON_MAX_ITEMS_PER_CALL": 1, "AMAZON_MAX_WAIT_SECONDS": 10},
    ) as stack:
        stack.sandbox.fault("delay", count=12, delay=4)  # Amazon answers after 4 s

        def one(n: int) -> requests.Response:
            with requests.Session() as session:
                return stack.import_asin(f"B0SYN{700 + n:05d}", session=session, timeout=30)

        with ThreadPoolExecutor(max_workers=12) as pool:
            futures = [pool.submit(one, n) for n in range(12)]
            refused = _first_done(futures, 10, timeout=10)
            timings = []
            for _ in range(3):
                began = time.monotonic()
                health = requests.get(stack.bff_url + "/healthz", timeout=30)
                timings.append(time.monotonic() - began)
                assert health.status_code == 200
            still_waiting = sum(not f.done() for f in futures)
            answered = [f.result(timeout=30) for f in futures]

        assert still_waiting == 2  # /healthz was measured while two imports waited
        assert min(timings) < 0.1, timings  # a bound on a would-be hang, not a benchmark
        assert len(refused) == 10
        for response in refused:
            assert response.status_code == 429, response.text
            details = response.json()["error"]["details"]
            assert (details["source"], details["limit"]) == ("local", "waiting")
        assert sorted(r.status_code for r in answered) == [200, 200] + [429] * 10


def _first_done(futures: list[Future[_T]], count: int, timeout: float) -> list[_T]:
    """The results of the futures done once ``count`` are (or ``timeout`` passed)."""
    deadline = time.monotonic() + timeout
    while sum(f.done() for f in futures) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [f.result() for f in futures if f.done()]
