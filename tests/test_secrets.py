"""Secrets hygiene: no error path shows the secret, an access token or the 1Password token.

Every scenario below runs with the known credential values of ``fixtures_credentials``
(``KNOWN_SECRET``, ``KNOWN_OP_TOKEN`` in ``OP_SERVICE_ACCOUNT_TOKEN`` …) against the
sandbox Creators API over real HTTP (it is given the known credential, and every access
token it issues is recorded). Each scenario breaks one thing — a credential backend
(env, file, 1Password through the fake ``op``), the token endpoint, getItems 401s, every
upstream fault, upstreams that echo the secret or the bearer token back — then:

* imports through the route (bodies and headers collected),
* calls the Creators client directly (the exception's ``str``, ``repr`` and its whole
  formatted chain, ``__cause__`` and ``__context__`` included),
* runs every CLI command, text and ``--json`` (stdout and stderr),
* takes ``repr`` of the extension state and its parts, and the hook events,

and greps all of it, plus every log record of every logger at DEBUG (urllib3 and
requests included, with ``extra`` fields), for the secrets. The full credential id is
checked too: only its last four characters may ever be shown.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from arda_amazon_bp.backends import onepassword
from fixtures_app import USER_TOKEN
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_ID,
    KNOWN_OP_TOKEN,
    KNOWN_SECRET,
    KNOWN_TAG,
    OP_LABELS,
    REVOKED_OP_TOKEN,
    ROTATED_SECRET,
    CredentialsFile,
    FakeOp,
    assert_no_secret,
)
from fixtures_loopback import Loopback, Seen, http_response, loopback_servers
from fixtures_sandbox import SandboxHandle
from flask import Flask

from arda_amazon_bp import hookimpl
from arda_amazon_bp.errors import AmazonImportError

ASIN = "B0SYN00301"
ENV_VARIABLES = {f"AMAZON_CREATORS_{name.upper()}": value for name, value in KNOWN_FIELDS.items()}
CLI_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("check-credentials",),
    ("check-credentials", "--json"),
    ("smoke", "--asin", ASIN),
    ("smoke", "--asin", ASIN, "--json"),
    ("quota",),
    ("quota", "--json"),
)


@dataclass
class Recorder:
    """Hook implementations that keep every event they are given."""

    events: list[Any] = field(default_factory=list)

    @hookimpl
    def arda_amazon_upstream_call(self, event: Any) -> None:
        self.events.append(dict(event))

    @hookimpl
    def arda_amazon_upstream_event(self, name: str, details: Any) -> None:
        self.events.append((name, dict(details)))


@dataclass
class World:
    """What a scenario may change, and the loopback servers it may start."""

    sandbox: SandboxHandle
    fake_op: FakeOp
    credentials_file: CredentialsFile
    monkeypatch: pytest.MonkeyPatch
    start_loopback: Callable[[Callable[[Seen], Any]], Loopback]
    config: dict[str, Any] = field(default_factory=dict)


Arrange = Callable[[World], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    backend: str  # env | file | onepassword
    #: what each import answers (single, then the batch's two): "200", "206", or
    #: "<status> <details.reason|source>"; one string when all three answer the same
    expect: str | tuple[str, str, str]
    arrange: Arrange | None = None
    known_leak: str | None = None  # a defect reported, not yet fixed: strict xfail

    def __str__(self) -> str:
        return self.name


# --- arrangements ---------------------------------------------------------------------


def env_unset_secret(w: World) -> None:
    w.monkeypatch.delenv("AMAZON_CREATORS_CREDENTIAL_SECRET")


def env_bad_version(w: World) -> None:
    w.monkeypatch.setenv("AMAZON_CREATORS_VERSION", "4.0")


def env_secret_with_newline(w: World) -> None:
    w.monkeypatch.setenv("AMAZON_CREATORS_CREDENTIAL_SECRET", KNOWN_SECRET + "\n" + ROTATED_SECRET)


def env_bad_tag(w: World) -> None:
    w.monkeypatch.setenv("AMAZON_CREATORS_PARTNER_TAG", KNOWN_SECRET)


def file_group_readable(w: World) -> None:
    w.credentials_file.write(mode=0o640)


def file_not_json(w: World) -> None:
    w.credentials_file.write(raw='{"credential_secret": "' + KNOWN_SECRET + '", oops')


def file_missing_id(w: World) -> None:
    w.credentials_file.write({k: v for k, v in KNOWN_FIELDS.items() if k != "credential_id"})


def file_secret_as_version(w: World) -> None:
    w.credentials_file.write({**KNOWN_FIELDS, "version": KNOWN_SECRET})


def op_revoked_token(w: World) -> None:
    w.monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", REVOKED_OP_TOKEN)


def op_malformed_token(w: World) -> None:
    w.monkeypatch.setenv("OP_SERVICE_ACCOUNT_TOKEN", KNOWN_OP_TOKEN[:40] + "!!")


def op_echoes_secrets_on_stderr(w: World) -> None:
    w.fake_op.update(stderr=f"[ERROR] boom token={KNOWN_OP_TOKEN} secret={KNOWN_SECRET}")


def op_garbage_stdout(w: World) -> None:
    w.fake_op.update(stdout=f'{{"fields": [{{"value": "{KNOWN_SECRET}"}}], trailing')


def op_missing_field(w: World) -> None:
    w.fake_op.remove_field(OP_LABELS["partner_tag"])


def op_hangs(w: World) -> None:
    w.fake_op.update(sleep=30)
    w.monkeypatch.setattr(onepassword, "OP_TIMEOUT_SECONDS", 0.5)


def sandbox_knows_another_secret(w: World) -> None:
    w.sandbox.set_credentials([(KNOWN_ID, ROTATED_SECRET, "3.1")], partner_tags=[KNOWN_TAG])


def sandbox_not_eligible(w: World) -> None:
    w.sandbox.configure(eligible=False)


def faults(*queued: dict[str, Any]) -> Arrange:
    def arrange(w: World) -> None:
        for fault in queued:
            fault = dict(fault)
            w.sandbox.fault(fault.pop("fault"), count=fault.pop("count", 10), **fault)

    return arrange


def echoing_catalog(w: World) -> None:
    """A catalog host that quotes the request's Authorization header back (400)."""

    def respond(seen: Seen) -> bytes:
        header = next(
            (
                line.split(b":", 1)[1].strip().decode()
                for line in seen.head.split(b"\r\n")
                if line.lower().startswith(b"authorization:")
            ),
            "",
        )
        body = {
            "type": "ValidationException",
            "reason": "FieldValidationFailed",
            "message": f"header Authorization: {header} rejected; secret {KNOWN_SECRET}",
        }
        return http_response(400, json.dumps(body).encode())

    w.config["AMAZON_CREATORS_API_HOST"] = w.start_loopback(respond).url


def echoing_token_endpoint(w: World) -> None:
    """A token endpoint that quotes the posted client secret back (400 invalid_request)."""

    def respond(seen: Seen) -> bytes:
        posted = seen.body.decode(errors="replace")
        body = {"error": "invalid_request", "error_description": f"bad request body {posted}"}
        return http_response(400, json.dumps(body).encode())

    w.config["AMAZON_TOKEN_URL"] = w.start_loopback(respond).url + "/auth/o2/token"


def token_answer_echoes_secret(w: World) -> None:
    """A token endpoint that answers 200 without an access token, quoting the secret."""
    answer = json.dumps({"token": KNOWN_SECRET, "client_secret": KNOWN_SECRET}).encode()
    w.config["AMAZON_TOKEN_URL"] = (
        w.start_loopback(lambda seen: http_response(200, answer)).url + "/auth/o2/token"
    )


#: (name, the fault queued, what every import answers)
UPSTREAM_FAULTS: tuple[tuple[str, dict[str, Any], Any], ...] = (
    ("http-500", {"fault": "status", "status": 500}, "502 server_error"),
    ("http-503-html", {"fault": "html"}, "502 server_error"),
    # Amazon's 429 pauses the credential for Retry-After: the batch is refused locally
    ("429", {"fault": "429", "retryAfter": 2}, ("429 amazon", "429 local", "429 local")),
    ("401-once", {"fault": "token_expired", "count": 1}, "200"),
    ("401-repeated", {"fault": "token_expired"}, "502 credentials_rejected"),
    ("403-not-eligible", {"fault": "associate_not_eligible"}, "502 associate_not_eligible"),
    ("400-partner-tag", {"fault": "invalid_partner_tag"}, "502 invalid_partner_tag"),
    ("400-invalid-associate", {"fault": "invalid_associate"}, "502 invalid_partner_tag"),
    ("non-json", {"fault": "non_json"}, "502 invalid_response"),
    ("truncated-json", {"fault": "truncated_json"}, "502 invalid_response"),
    ("wrong-shape", {"fault": "wrong_shape"}, "502 invalid_response"),
    ("wrong-asin", {"fault": "wrong_asin"}, "206"),
    ("reset", {"fault": "reset"}, "502 connection_error"),
    ("read-timeout", {"fault": "slow_body", "delay": 3}, "502 timeout"),
    ("token-500", {"fault": "status", "status": 500, "endpoint": "token"}, "502 server_error"),
    (
        "token-401-invalid-client",
        {"fault": "status", "status": 401, "error": "invalid_client", "endpoint": "token"},
        "502 credentials_rejected",
    ),
    ("token-wrong-shape", {"fault": "wrong_shape", "endpoint": "token"}, "502 invalid_response"),
    ("token-reset", {"fault": "reset", "endpoint": "token"}, "502 connection_error"),
)

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("env ok", "env", "200"),
    Scenario("file ok", "file", "200"),
    Scenario("onepassword ok", "onepassword", "200"),
    Scenario("env: secret unset", "env", "502 credentials_unavailable", env_unset_secret),
    Scenario("env: bad version", "env", "502 credentials_unavailable", env_bad_version),
    Scenario(
        "env: secret with a newline", "env", "502 credentials_unavailable", env_secret_with_newline
    ),
    Scenario(
        "env: secret pasted as partner tag", "env", "502 credentials_unavailable", env_bad_tag
    ),
    Scenario("file: group-readable", "file", "502 credentials_unavailable", file_group_readable),
    Scenario(
        "file: not JSON around the secret", "file", "502 credentials_unavailable", file_not_json
    ),
    Scenario("file: id missing", "file", "502 credentials_unavailable", file_missing_id),
    Scenario(
        "file: secret in the version field",
        "file",
        "502 credentials_unavailable",
        file_secret_as_version,
    ),
    Scenario(
        "op: revoked service-account token",
        "onepassword",
        "502 credentials_unavailable",
        op_revoked_token,
    ),
    Scenario(
        "op: malformed service-account token",
        "onepassword",
        "502 credentials_unavailable",
        op_malformed_token,
    ),
    Scenario(
        "op: stderr quotes the token and secret",
        "onepassword",
        "502 credentials_unavailable",
        op_echoes_secrets_on_stderr,
    ),
    Scenario(
        "op: garbage stdout with the secret",
        "onepassword",
        "502 credentials_unavailable",
        op_garbage_stdout,
    ),
    Scenario("op: field missing", "onepassword", "502 credentials_unavailable", op_missing_field),
    Scenario("op: hangs past its timeout", "onepassword", "502 credentials_unavailable", op_hangs),
    Scenario(
        "token refused: invalid_client",
        "env",
        "502 credentials_rejected",
        sandbox_knows_another_secret,
    ),
    Scenario(
        "token refused: invalid_client (op)",
        "onepassword",
        "502 credentials_rejected",
        sandbox_knows_another_secret,
    ),
    Scenario("not eligible", "env", "502 associate_not_eligible", sandbox_not_eligible),
    *(
        Scenario(f"upstream: {name}", "env", expect, faults(fault))
        for name, fault, expect in UPSTREAM_FAULTS
    ),
    Scenario(
        "upstream echoes the bearer token and secret",
        "env",
        "502 request_rejected",
        echoing_catalog,
    ),
    Scenario(
        "token endpoint echoes the posted secret",
        "env",
        "502 credentials_rejected",
        echoing_token_endpoint,
    ),
    Scenario(
        "token answer quotes the secret", "env", "502 invalid_response", token_answer_echoes_secret
    ),
)


# --- the run --------------------------------------------------------------------------


@pytest.fixture
def start_loopback() -> Iterator[Callable[[Callable[[Seen], Any]], Loopback]]:
    with loopback_servers() as start:
        yield start


@pytest.fixture
def issued_tokens(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every access token the sandbox issues during the test."""
    tokens: list[str] = []
    state = sandbox.state
    real = state.issue_token

    def record(*args: Any, **kwargs: Any) -> tuple[str, float]:
        value, expires_in = real(*args, **kwargs)
        tokens.append(value)
        return value, expires_in

    monkeypatch.setattr(state, "issue_token", record)
    return tokens


def exception_texts(exc: BaseException) -> list[str]:
    """str, repr and the whole formatted chain (cause and context) of an exception."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        current = current.__cause__ or current.__context__
    return texts


def outcome(status: int, error: dict[str, Any] | None) -> str:
    """ "200", "206", or "<status> <details.reason>" ("<status> <details.source>" for 429)."""
    if error is None:
        return str(status)
    details = error["details"]
    return f"{status} {details.get('reason') or details.get('source')}"


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    texts = []
    for record in records:
        texts.append(record.getMessage())
        texts.append(repr(record.args))
        texts.append(repr({k: v for k, v in vars(record).items() if k not in ("msg", "args")}))
        if record.exc_info and record.exc_info[1] is not None:
            texts += exception_texts(record.exc_info[1])
    return texts


@pytest.mark.parametrize(
    "scenario",
    [
        pytest.param(s, marks=pytest.mark.xfail(reason=s.known_leak, strict=True))
        if s.known_leak
        else s
        for s in SCENARIOS
    ],
    ids=str,
)
def test_no_error_path_leaks_a_secret(
    scenario: Scenario,
    make_app: Callable[..., Flask],
    sandbox: SandboxHandle,
    fake_op: FakeOp,
    credentials_file: CredentialsFile,
    monkeypatch: pytest.MonkeyPatch,
    start_loopback: Callable[[Callable[[Seen], Any]], Loopback],
    issued_tokens: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # the root: every logger, urllib3 and requests too
    sandbox.configure(rate=100)
    sandbox.set_credentials([(KNOWN_ID, KNOWN_SECRET, "3.1")], partner_tags=[KNOWN_TAG])
    for name, value in ENV_VARIABLES.items():
        monkeypatch.setenv(name, value)
    world = World(sandbox, fake_op, credentials_file, monkeypatch, start_loopback)
    world.config.update(
        AMAZON_CREATORS_API_HOST=sandbox.url,
        AMAZON_TOKEN_URL=sandbox.token_url("3.1"),
        AMAZON_HTTP_TIMEOUT=[0.5, 1.0],
        AMAZON_MAX_WAIT_SECONDS=1,
        AMAZON_CREDENTIALS_BACKEND=scenario.backend,
    )
    if scenario.backend == "file":
        world.config.update(credentials_file.config)
    elif scenario.backend == "onepassword":
        world.config.update(fake_op.config)
    if scenario.arrange is not None:
        scenario.arrange(world)
    app = make_app(**world.config)
    recorder = Recorder()
    app.extensions["test_extension"].plugin_manager.register(recorder)
    state = app.extensions["arda_amazon_bp"]

    outputs: list[str] = []
    answers: list[str] = []
    client = app.test_client()
    for body in (
        {"url": f"https://www.amazon.com/dp/{ASIN}"},
        {"urls": [f"https://www.amazon.com/dp/{ASIN}", "https://www.amazon.com/dp/B0SYN00302"]},
    ):
        path = "/api/amazon/import" + ("/batch" if "urls" in body else "")
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {USER_TOKEN}"})
        assert response.status_code != 500, response.get_data(as_text=True)
        answer = response.get_json()
        if "urls" in body:
            assert response.status_code == 200
            answers += [outcome(item["status"], item.get("error")) for item in answer["results"]]
        else:
            answers.append(outcome(response.status_code, answer.get("error")))
        outputs += [response.get_data(as_text=True), repr(dict(response.headers))]
    try:
        result = state.client.get_items("www.amazon.com", ["B0SYN00303"])
        outputs.append(repr(result))
    except AmazonImportError as exc:
        outputs += exception_texts(exc)
    runner = app.test_cli_runner()
    for command in CLI_COMMANDS:
        invoked = runner.invoke(args=["amazon", *command])
        outputs += [invoked.output, invoked.stdout, invoked.stderr]
        if invoked.exception is not None and not isinstance(invoked.exception, SystemExit):
            outputs += exception_texts(invoked.exception)
    outputs += [repr(state), repr(state.credentials), repr(state.client), repr(state.settings)]
    outputs += [repr(recorder.events)]
    outputs += record_texts(caplog.records)
    outputs.append(caplog.text)

    for text in outputs:
        assert_no_secret(text)
        for token in issued_tokens:
            assert token not in text, f"access token leaked: {text[:300]!r}"
            assert token.split("|")[-1][:24] not in text, "access token fragment leaked"
    # The scenario really reached its path: every import answered what it arranged.
    expect = scenario.expect
    assert answers == ([expect] * 3 if isinstance(expect, str) else list(expect))
    assert caplog.records


def test_the_scan_would_catch_a_leak(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The grep is not vacuous: a secret logged anywhere, in any form, is found."""
    caplog.set_level(logging.DEBUG)
    logging.getLogger("urllib3.connectionpool").debug("oops %s", KNOWN_SECRET)
    with pytest.raises(AssertionError):
        assert_no_secret(*record_texts(caplog.records))
    caplog.clear()
    logging.getLogger("x").info("fine", extra={"payload": {"op": KNOWN_OP_TOKEN}})
    with pytest.raises(AssertionError):
        assert_no_secret(*record_texts(caplog.records))
