"""Request ids: every log record of an import carries one (``record.request_id``, never
in the message), and error bodies repeat it.

The id is the host's ``X-Request-ID`` when it is safe to log, else a generated one; it
is echoed in the ``X-Request-ID`` response header and in ``error.details.requestId``.
Lines logged on other threads — the dispatcher that takes quota slots and loads
credentials, the pool that runs the Creators API calls — carry the ids of the requests
they serve (several, comma-joined, when one getItems call serves a coalesced batch).
Everything runs over real loopback HTTP against the sandbox.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fixtures_app import USER_TOKEN
from fixtures_sandbox import SandboxApp, SandboxHandle
from flask import Flask

GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def build(sandbox_app: SandboxApp) -> Callable[..., Flask]:
    """``build(**config)``: the sandbox app with this module's timeouts."""
    return functools.partial(sandbox_app, AMAZON_HTTP_TIMEOUT=[0.5, 1.0], AMAZON_MAX_WAIT_SECONDS=2)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, from every thread (read ``.records`` when asserting)."""
    caplog.set_level(logging.DEBUG)
    return caplog


def ours(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name.startswith("arda_amazon_bp")]


def post(app: Flask, url: str, request_id: str | None = None, **kwargs: Any) -> Any:
    headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return app.test_client().post(
        "/api/amazon/import", json={"url": url}, headers=headers, **kwargs
    )


def assert_all_carry(records: list[logging.LogRecord], request_id: str) -> None:
    lines = ours(records)
    assert lines, "the import logged nothing"
    for record in lines:
        assert getattr(record, "request_id", None) == request_id, record.getMessage()
        # An attribute, never spliced into the message template (aggregators group by it).
        assert request_id not in str(record.msg), record.msg
        assert request_id not in record.getMessage(), record.getMessage()


def test_host_id_on_every_line_of_a_successful_import_across_threads(
    build: Callable[..., Flask], sandbox: SandboxHandle, logs: pytest.LogCaptureFixture
) -> None:
    app = build()
    sandbox.fault("token_expired")  # a 401 and a token refresh: more lines, more threads
    response = post(app, "https://www.amazon.com/dp/B0SYN00101", "host-req-42")
    assert response.status_code == 200
    assert response.headers["X-Request-ID"] == "host-req-42"
    assert_all_carry(logs.records, "host-req-42")
    threads = {r.threadName for r in ours(logs.records)}
    assert any(name.startswith("arda-amazon-") for name in threads), threads
    assert any(hasattr(r, "amazon_call") for r in ours(logs.records))


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"fault": "status", "status": 503}, "server_error"),
        ({"fault": "associate_not_eligible"}, "associate_not_eligible"),
        ({"fault": "token_expired", "count": 2}, "credentials_rejected"),
        ({"fault": "reset"}, "connection_error"),
    ],
)
def test_upstream_failure_lines_and_body_carry_the_id(
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    logs: pytest.LogCaptureFixture,
    fault: dict[str, Any],
    reason: str,
) -> None:
    app = build()
    sandbox.fault(fault.pop("fault"), **fault)
    response = post(app, "https://www.amazon.com/dp/B0SYN00102", "trace-7f3a")
    assert response.status_code == 502
    details = response.get_json()["error"]["details"]
    assert details["reason"] == reason
    assert details["requestId"] == "trace-7f3a"
    assert_all_carry(logs.records, "trace-7f3a")


def test_generated_id_when_the_host_sets_none(
    build: Callable[..., Flask], sandbox: SandboxHandle, logs: pytest.LogCaptureFixture
) -> None:
    app = build()
    sandbox.fault("status", status=500)
    response = post(app, "https://www.amazon.com/dp/B0SYN00103")
    request_id = response.headers["X-Request-ID"]
    assert GENERATED.match(request_id)
    assert response.get_json()["error"]["details"]["requestId"] == request_id
    assert_all_carry(logs.records, request_id)
    # A second request gets another id.
    again = post(app, "https://www.amazon.com/dp/B0SYN00104")
    assert again.headers["X-Request-ID"] != request_id


@pytest.mark.parametrize(
    "header",
    ["two words", "forged\nrequest_id=admin", "x" * 129, "naïve", "a;b"],
    ids=["space", "newline", "too-long", "non-ascii", "semicolon"],
)
def test_unsafe_host_ids_are_replaced_not_logged(
    build: Callable[..., Flask], logs: pytest.LogCaptureFixture, header: str
) -> None:
    app = build()
    environ = {"HTTP_X_REQUEST_ID": header}  # set raw: werkzeug refuses "\n" in headers
    response = app.test_client().post(
        "/api/amazon/import",
        json={"url": "https://www.amazon.com/dp/B0SYN00105"},
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
        environ_overrides=environ,
    )
    request_id = response.headers["X-Request-ID"]
    assert GENERATED.match(request_id)
    assert_all_carry(logs.records, request_id)
    assert not any(header in r.getMessage() for r in logs.records)


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "not json", "content_type": "application/json"}, 400),
        ({"json": {"url": "https://example.com/dp/B0SYN00106"}}, 422),
        ({"json": {"url": "https://amzn.to/3abc"}}, 422),
        ({"json": {"url": "https://www.amazon.de/dp/B0SYN00106"}}, 422),
        ({"json": {"url": "x", "extra": 1}}, 400),
        ({"data": b"x" * (64 * 1024 + 1), "content_type": "application/json"}, 413),
    ],
    ids=["not-json", "other-site", "short-link", "other-locale", "unknown-field", "too-large"],
)
def test_caller_errors_repeat_the_id(
    build: Callable[..., Flask],
    logs: pytest.LogCaptureFixture,
    kwargs: dict[str, Any],
    status: int,
) -> None:
    app = build(MAX_CONTENT_LENGTH=64 * 1024)
    response = app.test_client().post(
        "/api/amazon/import",
        headers={"Authorization": f"Bearer {USER_TOKEN}", "X-Request-ID": "caller-err-1"},
        **kwargs,
    )
    assert response.status_code == status
    assert response.get_json()["error"]["details"]["requestId"] == "caller-err-1"
    assert response.headers["X-Request-ID"] == "caller-err-1"
    for record in ours(logs.records):
        assert getattr(record, "request_id", None) == "caller-err-1", record.getMessage()


def test_unauthenticated_and_internal_errors_repeat_the_id(
    build: Callable[..., Flask], logs: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build()
    response = app.test_client().post(
        "/api/amazon/import",
        json={"url": "https://www.amazon.com/dp/B0SYN00107"},
        headers={"X-Request-ID": "anon-1"},
    )
    assert response.status_code == 401
    assert response.get_json()["error"]["details"]["requestId"] == "anon-1"

    state = app.extensions["arda_amazon_bp"]

    def broken(ref: Any) -> Any:
        raise RuntimeError("bug")

    monkeypatch.setattr(state.lookup, "lookup", broken)
    response = post(app, "https://www.amazon.com/dp/B0SYN00108", "bug-1")
    assert response.status_code == 500
    assert response.get_json()["error"]["details"]["requestId"] == "bug-1"
    failure = [r for r in ours(logs.records) if r.exc_info]
    assert failure and all(r.request_id == "bug-1" for r in failure)


def test_credential_failure_lines_on_the_dispatcher_thread_carry_the_id(
    build: Callable[..., Flask],
    logs: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The dispatcher thread loads credentials (and takes quota slots) for the requests
    at the head of its queue; what it logs while doing so names them."""
    app = build()
    monkeypatch.delenv("AMAZON_CREATORS_CREDENTIAL_SECRET")
    response = post(app, "https://www.amazon.com/dp/B0SYN00109", "cred-fail-1")
    assert response.status_code == 502
    assert response.get_json()["error"]["details"]["reason"] == "credentials_unavailable"
    warnings = [r for r in ours(logs.records) if r.name == "arda_amazon_bp.credentials"]
    assert warnings, "the credential failure was not logged"
    assert {r.threadName for r in warnings} == {f"arda-amazon-{app.name}-dispatch-www.amazon.com"}
    assert_all_carry(logs.records, "cred-fail-1")


def test_a_coalesced_call_names_every_request_it_serves(
    build: Callable[..., Flask], sandbox: SandboxHandle, logs: pytest.LogCaptureFixture
) -> None:
    """Two requests that wait for the same slot share one getItems call; its log line
    carries both ids, and each request's own lines carry its id."""
    # One call per 2 s: both requests arrive while the warm-up holds the slot, whatever
    # the machine's load, and wait together for the next one.
    app = build(
        AMAZON_RATE_LIMITS="1/2 seconds;8640/day",
        AMAZON_RATE_MARGIN_SECONDS=0,
        AMAZON_MAX_WAIT_SECONDS=5,
    )
    first = post(app, "https://www.amazon.com/dp/B0SYN00110", "warm-up")  # takes the slot
    assert first.status_code == 200
    logs.clear()

    results: dict[str, Any] = {}
    start = threading.Barrier(2)

    def run(request_id: str, asin: str) -> None:
        start.wait()
        results[request_id] = post(app, f"https://www.amazon.com/dp/{asin}", request_id)

    threads = [
        threading.Thread(target=run, args=("req-a", "B0SYN00111")),
        threading.Thread(target=run, args=("req-b", "B0SYN00112")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert {rid: r.status_code for rid, r in results.items()} == {"req-a": 200, "req-b": 200}

    lines = ours(logs.records)
    calls = [r for r in lines if getattr(r, "amazon_call", {}).get("kind") == "getItems"]
    assert len(calls) == 1, [r.getMessage() for r in calls]
    assert calls[0].amazon_call["asin_count"] == 2
    assert calls[0].request_id == "req-a,req-b"
    for record in ours(logs.records):
        assert record.request_id in {"req-a", "req-b", "req-a,req-b"}, record.getMessage()
