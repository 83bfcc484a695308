"""The upstream fault matrix, over real loopback HTTP against the sandbox Creators API.

Every row injects one fault into the sandbox (``POST /_sandbox/faults``) — or points the
catalog host at a loopback socket that misbehaves at the TCP level — then imports one
product through the real route of an app built by ``make_app`` and checks:

* the exact status, ``error.code`` and ``details.reason`` (and the other details) the
  caller gets, always a JSON envelope, never ``INTERNAL_ERROR`` or a traceback;
* the wall-clock bound: the import ends within the configured timeouts plus
  ``AMAZON_MAX_WAIT_SECONDS`` plus one second of slack;
* the structured upstream log lines (``amazon upstream call kind=… outcome=…``, one per
  HTTP call, carrying ``record.amazon_call``) are exactly the expected sequence, so the
  failing call is logged once, and nothing is logged with a traceback;
* the sandbox saw exactly the calls the client should make (no hidden retries).

The eligibility-loss signal (``AssociateNotEligible``) is tested at the end: one distinct
ERROR line and one hook call per interval, however many requests fail, and the operator
CLI (``flask amazon smoke`` / ``check-credentials``) names the reason with a hint.

Connect timeout on loopback only
--------------------------------
No external or unroutable address may be used, so the connect timeout comes from a
loopback listener whose accept queue is full: the socket listens with backlog 0 and never
calls ``accept()``; a few non-blocking connects fill its queue. Linux then silently drops
further SYNs (``net.ipv4.tcp_abort_on_overflow=0``, the default; SYN cookies do not apply
to a full accept queue), so the client's ``connect()`` sits in SYN-SENT until the connect
timeout fires — exactly what an unreachable host looks like. The fixture probes this and
skips (naming why) on a kernel that answers differently.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures_app import USER_TOKEN
from fixtures_sandbox import SandboxApp, SandboxHandle
from flask import Flask
from flask.testing import FlaskClient

from arda_amazon_bp import hookimpl

#: Small timeouts keep the module fast; every bound below is derived from them.
TIMEOUT = (0.5, 1.0)
MAX_WAIT = 1.0
BOUND = sum(TIMEOUT) + MAX_WAIT + 1.0
#: Longer than the read timeout, so a stalled answer is always cut by the client.
STALL = 3.0

TRACEBACK = re.compile(r"Traceback|File \"|line \d+, in ")

_asin_counter = iter(range(1, 100_000))


def next_asin() -> str:
    """A fresh synthetic ASIN (the sandbox describes any B0SYN#####), so no cache hit."""
    return f"B0SYN{next(_asin_counter):05d}"


# --- sockets that misbehave below HTTP -----------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` whose SYNs are dropped: connects hang until timeout."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers: list[socket.socket] = []
    try:
        # Fill the accept queue until one connect stays pending (its SYN was dropped).
        for _ in range(64):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            fillers.append(filler)
            if filler.connect_ex(("127.0.0.1", port)) not in (0, 115, 36, 10035):
                pytest.skip("loopback connect did not queue; cannot build a blackhole")
            _, writable, _ = select.select([], [filler], [], 0.2)
            if not writable:
                break
        else:
            pytest.skip("this kernel accepts connects past the backlog (no SYN drop)")
        yield f"http://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture
def refused_port() -> str:
    """``http://127.0.0.1:PORT`` with nothing listening: connects get RST at once."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # bound, never listened: the port is closed
    return f"http://127.0.0.1:{port}"


# --- the app under test ----------------------------------------------------------------


@dataclass
class Events:
    """Records ``arda_amazon_upstream_event`` hook calls."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @hookimpl
    def arda_amazon_upstream_event(self, name: str, details: Any) -> None:
        self.calls.append((name, dict(details)))


@pytest.fixture
def build(sandbox_app: SandboxApp) -> Callable[..., Flask]:
    """``build(**config)``: an app whose Amazon is the sandbox, with small timeouts.

    ``sandbox_app`` runs the sandbox at 100 calls/second (the 401-retry rows make two
    calls within a second); every ``BOUND`` here derives from these timeouts.
    """
    return functools.partial(
        sandbox_app, AMAZON_HTTP_TIMEOUT=list(TIMEOUT), AMAZON_MAX_WAIT_SECONDS=MAX_WAIT
    )


def user(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    return client


def upstream_calls(records: list[logging.LogRecord]) -> list[tuple[str, str]]:
    """(kind, outcome) of every structured upstream log line, in order."""
    return [
        (r.amazon_call["kind"], r.amazon_call["outcome"])
        for r in records
        if hasattr(r, "amazon_call")
    ]


# --- the matrix ----------------------------------------------------------------------

TOKEN_OK = ("token", "ok")
ITEMS_OK = ("getItems", "ok")


@dataclass(frozen=True)
class Row:
    """One fault, what the caller must get, and what the client must have done."""

    name: str
    faults: tuple[dict[str, Any], ...]  # queued on the sandbox before the import
    status: int
    code: str | None  # None: a product answer
    details: dict[str, Any]  # must be a subset of error.details
    calls: tuple[tuple[str, str], ...]  # the upstream log lines, in order
    host: str = "sandbox"  # or "blackhole" / "refused" for the catalog host
    retry_after: str | None = None
    test_name: str = "test_fault_matrix"

    def __str__(self) -> str:
        return self.name


def unavailable(reason: str, **details: Any) -> dict[str, Any]:
    return {"reason": reason, **details}


ROWS: tuple[Row, ...] = (
    # transport, catalog leg
    Row(
        "connect timeout",
        (),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("timeout"),
        (TOKEN_OK, ("getItems", "timeout")),
        host="blackhole",
    ),
    Row(
        "read timeout: headers sent, body stalls",
        ({"fault": "slow_body", "delay": STALL},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("timeout"),
        (TOKEN_OK, ("getItems", "timeout")),
    ),
    Row(
        "read timeout: no answer at all",
        ({"fault": "delay", "delay": STALL},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("timeout"),
        (TOKEN_OK, ("getItems", "timeout")),
    ),
    Row(
        "connection reset before any byte",
        ({"fault": "reset"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("connection_error"),
        (TOKEN_OK, ("getItems", "connection_error")),
    ),
    Row(
        "refused port",
        (),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("connection_error"),
        (TOKEN_OK, ("getItems", "connection_error")),
        host="refused",
    ),
    # HTTP statuses
    *(
        Row(
            f"HTTP {status}",
            ({"fault": "status", "status": status},),
            502,
            "AMAZON_UPSTREAM_UNAVAILABLE",
            unavailable("server_error", status=status),
            (TOKEN_OK, ("getItems", "server_error")),
        )
        for status in (500, 502, 503)
    ),
    Row(
        "429 without Retry-After",
        ({"fault": "429"},),
        429,
        "AMAZON_RATE_LIMITED",
        {"source": "amazon", "retryAfter": 1},
        (TOKEN_OK, ("getItems", "rate_limited")),
        retry_after="1",
    ),
    Row(
        "429 with Retry-After: 7",
        ({"fault": "429", "retryAfter": 7},),
        429,
        "AMAZON_RATE_LIMITED",
        {"source": "amazon", "retryAfter": 7},
        (TOKEN_OK, ("getItems", "rate_limited")),
        retry_after="7",
    ),
    Row(
        "401 TokenExpired once: refresh and succeed",
        ({"fault": "token_expired"},),
        200,
        None,
        {},
        (TOKEN_OK, ("getItems", "token_rejected"), TOKEN_OK, ITEMS_OK),
    ),
    Row(
        "401 TokenExpired repeatedly: one retry, then stop",
        ({"fault": "token_expired", "count": 5},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("credentials_rejected", status=401),
        (TOKEN_OK, ("getItems", "token_rejected"), TOKEN_OK, ("getItems", "token_rejected")),
    ),
    Row(
        "403 AssociateNotEligible",
        ({"fault": "associate_not_eligible"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("associate_not_eligible", status=403, upstreamCode="AssociateNotEligible"),
        (TOKEN_OK, ("getItems", "associate_not_eligible")),
    ),
    Row(
        "400 InvalidPartnerTag",
        ({"fault": "invalid_partner_tag"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_partner_tag", status=400, upstreamCode="InvalidPartnerTag"),
        (TOKEN_OK, ("getItems", "invalid_partner_tag")),
    ),
    # bodies
    Row(
        "200 with a non-JSON body",
        ({"fault": "non_json"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_response", status=200),
        (TOKEN_OK, ("getItems", "invalid_response")),
    ),
    Row(
        "503 HTML error page",
        ({"fault": "html"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("server_error", status=503),
        (TOKEN_OK, ("getItems", "server_error")),
    ),
    Row(
        "200 HTML page",
        ({"fault": "html", "status": 200},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_response", status=200),
        (TOKEN_OK, ("getItems", "invalid_response")),
    ),
    Row(
        "truncated JSON",
        ({"fault": "truncated_json"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_response", status=200),
        (TOKEN_OK, ("getItems", "invalid_response")),
    ),
    Row(
        "200 with the wrong shape (PA-API 5 PascalCase)",
        ({"fault": "wrong_shape"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_response", status=200),
        (TOKEN_OK, ("getItems", "invalid_response")),
    ),
    Row(
        "200 whose item is another ASIN",
        ({"fault": "wrong_asin", "asin": "B0WRONGAS1"},),
        206,
        None,
        {},
        (TOKEN_OK, ITEMS_OK),
        test_name="test_fault_matrix, test_an_item_for_another_asin_is_never_served",
    ),
    # the token leg
    Row(
        "token endpoint 503",
        ({"fault": "status", "status": 503, "endpoint": "token"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("server_error", status=503),
        (("token", "server_error"),),
    ),
    Row(
        "token endpoint 429",
        ({"fault": "429", "retryAfter": 3, "endpoint": "token"},),
        429,
        "AMAZON_RATE_LIMITED",
        {"source": "amazon", "retryAfter": 3},
        (("token", "rate_limited"),),
        retry_after="3",
    ),
    Row(
        "token endpoint HTML page with 200",
        ({"fault": "html", "status": 200, "endpoint": "token"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_response"),
        (("token", "invalid_response"),),
    ),
    Row(
        "token endpoint wrong shape",
        ({"fault": "wrong_shape", "endpoint": "token"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("invalid_response"),
        (("token", "invalid_response"),),
    ),
    Row(
        "token endpoint reset",
        ({"fault": "reset", "endpoint": "token"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("connection_error"),
        (("token", "connection_error"),),
    ),
    Row(
        "token endpoint read timeout",
        ({"fault": "slow_body", "delay": STALL, "endpoint": "token"},),
        502,
        "AMAZON_UPSTREAM_UNAVAILABLE",
        unavailable("timeout"),
        (("token", "timeout"),),
    ),
)


def assert_envelope(response: Any, code: str) -> dict[str, Any]:
    """The JSON error envelope, exactly its three keys, no traceback anywhere."""
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code
    assert not TRACEBACK.search(response.get_data(as_text=True))
    return dict(body["error"])


@pytest.mark.parametrize("row", ROWS, ids=str)
def test_fault_matrix(
    row: Row,
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config: dict[str, Any] = {}
    if row.host != "sandbox":
        config["AMAZON_CREATORS_API_HOST"] = request.getfixturevalue(
            {"blackhole": "blackhole", "refused": "refused_port"}[row.host]
        )
    app = build(**config)
    for fault in row.faults:
        sandbox.fault(fault["fault"], **{k: v for k, v in fault.items() if k != "fault"})
    asin = next_asin()
    caplog.set_level(logging.DEBUG)

    started = time.monotonic()
    response = user(app).post(
        "/api/amazon/import", json={"url": f"https://www.amazon.com/dp/{asin}"}
    )
    elapsed = time.monotonic() - started

    assert elapsed < BOUND, f"{row.name}: took {elapsed:.2f} s (bound {BOUND} s)"
    assert response.status_code == row.status, response.get_data(as_text=True)
    assert response.status_code != 500
    if row.code is None:
        body = response.get_json()
        assert body["asin"] == asin
    else:
        error = assert_envelope(response, row.code)
        assert error["code"] != "INTERNAL_ERROR"
        assert row.details.items() <= error["details"].items(), error["details"]
        assert error["details"]["requestId"] == response.headers["X-Request-ID"]
    assert response.headers.get("Retry-After") == row.retry_after

    ours = [r for r in caplog.records if r.name.startswith("arda_amazon_bp")]
    assert tuple(upstream_calls(ours)) == row.calls
    assert not [r for r in ours if r.exc_info], "an upstream fault was logged with a traceback"
    for record in ours:
        if hasattr(record, "amazon_call") and record.amazon_call["outcome"] != "ok":
            assert record.levelno >= logging.WARNING

    # The sandbox saw exactly the calls the log reports: no hidden (urllib3) retries.
    stats = sandbox.stats(calls=False)
    sandbox_items = stats["total_calls"]
    expected_items = sum(1 for kind, _ in row.calls if kind == "getItems")
    assert sandbox_items == (0 if row.host != "sandbox" else expected_items)
    assert stats["token_requests"] == sum(1 for kind, _ in row.calls if kind == "token")


def test_every_upstream_reason_appears_in_the_matrix() -> None:
    """A reason added to UpstreamReason without a fault row here fails this test."""
    from arda_amazon_bp.errors import UpstreamReason

    covered = {row.details.get("reason") for row in ROWS}
    # Not faults of the upstream HTTP exchange: credential loading is tested in
    # test_secrets.py, "request_rejected" (any other 4xx) just below.
    exempt = {UpstreamReason.CREDENTIALS_UNAVAILABLE.value, UpstreamReason.REQUEST_REJECTED.value}
    assert {r.value for r in UpstreamReason} - exempt <= covered


def test_other_4xx_is_request_rejected(
    build: Callable[..., Flask], sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    app = build()
    sandbox.fault("status", status=400, reason="FieldValidationFailed")
    caplog.set_level(logging.INFO)
    response = user(app).post(
        "/api/amazon/import", json={"url": f"https://www.amazon.com/dp/{next_asin()}"}
    )
    assert response.status_code == 502
    error = assert_envelope(response, "AMAZON_UPSTREAM_UNAVAILABLE")
    assert error["details"]["reason"] == "request_rejected"
    assert upstream_calls(caplog.records) == [TOKEN_OK, ("getItems", "request_rejected")]


def test_an_item_for_another_asin_is_never_served(
    build: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    """The wrong item is dropped: the caller gets its own ASIN, all fields null, a notice."""
    app = build()
    sandbox.fault("wrong_asin", asin="B0WRONGAS1")
    asin = next_asin()
    response = user(app).post(
        "/api/amazon/import", json={"url": f"https://www.amazon.com/dp/{asin}"}
    )
    assert response.status_code == 206
    body = response.get_json()
    assert body["asin"] == asin
    assert "B0WRONGAS1" not in response.get_data(as_text=True)
    assert body["title"] is None and body["price"] is None and body["imageUrl"] is None
    assert [n["code"] for n in body["notices"]] == ["ItemNotReturned"]


def test_a_fault_does_not_poison_the_next_import(
    build: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    """After a timeout and a reset, the same app imports normally (pools recover)."""
    app = build()
    client = user(app)
    sandbox.fault("delay", delay=STALL)
    sandbox.fault("reset")
    for _ in range(2):
        asin = next_asin()
        response = client.post(
            "/api/amazon/import", json={"url": f"https://www.amazon.com/dp/{asin}"}
        )
        assert response.status_code == 502
    asin = next_asin()
    response = client.post("/api/amazon/import", json={"url": f"https://www.amazon.com/dp/{asin}"})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["asin"] == asin


# --- eligibility loss ------------------------------------------------------------------

EVENT_LINE = re.compile(r"^amazon_upstream_event event=associate_not_eligible\b")


def event_lines(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if EVENT_LINE.match(r.getMessage())]


def eligibility_app(build: Callable[..., Flask], **config: Any) -> tuple[Flask, Events]:
    app = build(**config)
    events = Events()
    app.extensions["test_extension"].plugin_manager.register(events)
    return app, events


def import_fresh(app: Flask) -> Any:
    return user(app).post(
        "/api/amazon/import", json={"url": f"https://www.amazon.com/dp/{next_asin()}"}
    )


def test_eligibility_loss_is_one_error_event_and_one_hook_call_per_interval(
    build: Callable[..., Flask], sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    app, events = eligibility_app(build)  # default interval: 600 s
    sandbox.configure(eligible=False)  # Amazon answers every getItems 403 now
    caplog.set_level(logging.INFO)

    for _ in range(4):
        response = import_fresh(app)
        assert response.status_code == 502
        assert response.get_json()["error"]["details"]["reason"] == "associate_not_eligible"

    lines = event_lines(caplog.records)
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].levelno == logging.ERROR
    assert [name for name, _ in events.calls] == ["associate_not_eligible"]
    details = events.calls[0][1]
    assert details["status"] == 403 and details["kind"] == "getItems"
    assert details["partnerTag"] == "ardademo-20"
    # Every failing call is still logged as a call (the event line is additional).
    outcomes = [outcome for kind, outcome in upstream_calls(caplog.records) if kind == "getItems"]
    assert outcomes == ["associate_not_eligible"] * 4


def test_eligibility_event_repeats_after_the_interval(
    build: Callable[..., Flask], sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    app, events = eligibility_app(build, AMAZON_UPSTREAM_EVENT_INTERVAL_SECONDS=1.0)
    sandbox.configure(eligible=False)
    caplog.set_level(logging.INFO)
    import_fresh(app)
    import_fresh(app)
    assert len(event_lines(caplog.records)) == 1
    time.sleep(1.1)
    import_fresh(app)
    assert len(event_lines(caplog.records)) == 2
    assert [name for name, _ in events.calls] == ["associate_not_eligible"] * 2


def test_eligibility_event_is_distinct_from_credential_rejection(
    build: Callable[..., Flask], sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    """Two different account events are logged under two names; neither hides the other."""
    app, events = eligibility_app(build)
    caplog.set_level(logging.INFO)
    sandbox.fault("associate_not_eligible")
    import_fresh(app)
    sandbox.fault("token_expired", count=2)
    import_fresh(app)
    assert [name for name, _ in events.calls] == ["associate_not_eligible", "credentials_rejected"]
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    for name in ("associate_not_eligible", "credentials_rejected"):
        prefix = f"amazon_upstream_event event={name} "
        assert sum(m.startswith(prefix) for m in messages) == 1, messages


def run_cli(app: Flask, *args: str) -> Any:
    runner = app.test_cli_runner()
    assert isinstance(runner, CliRunner)
    return runner.invoke(args=["amazon", *args])


@pytest.mark.parametrize(
    ("fault", "count", "reason", "words"),
    [
        ("associate_not_eligible", 1, "associate_not_eligible", "Associates Central"),
        ("invalid_partner_tag", 1, "invalid_partner_tag", "partner-tag field"),
        ("token_expired", 2, "credentials_rejected", "rotate them"),
    ],
)
def test_smoke_names_the_reason_with_an_operator_hint(
    build: Callable[..., Flask],
    sandbox: SandboxHandle,
    fault: str,
    count: int,
    reason: str,
    words: str,
) -> None:
    app = build()
    sandbox.fault(fault, count=count)
    result = run_cli(app, "smoke", "--asin", next_asin())
    assert result.exit_code == 1
    assert f"({reason})" in result.output
    hint = next(line for line in result.stdout.splitlines() if line.startswith("hint: "))
    assert words in hint

    sandbox.fault(fault, count=count)
    result = run_cli(app, "smoke", "--asin", next_asin(), "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["reason"] == reason
    assert words in report["hint"]


def test_smoke_succeeds_against_the_sandbox_and_gives_no_hint(
    build: Callable[..., Flask],
) -> None:
    app = build()
    result = run_cli(app, "smoke", "--asin", next_asin(), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report.get("hint") is None


def test_check_credentials_points_at_smoke_for_eligibility(build: Callable[..., Flask]) -> None:
    """A token alone cannot show eligibility (Amazon decides per getItems): say so."""
    app = build()
    result = run_cli(app, "check-credentials")
    assert result.exit_code == 0, result.output
    assert re.search(r"eligibility:.*flask amazon smoke", result.output)
