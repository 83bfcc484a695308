"""Sandbox Creators API fixtures: an in-process server per session and a CLI subprocess.

``sandbox`` (function scope) is the session's sandbox after a full reset (call log,
faults, config and credentials back to the defaults); ``sandbox_server`` is the same
server without the reset. ``sandbox_app(version="2.1", **overrides)`` builds a host app
(``make_app``) whose Amazon is that sandbox. ``sandbox_subprocess(...)`` runs
``examples/creators_sandbox.py`` in its own process (for gunicorn multi-process tests)
and yields its base URL; wrap the URL in ``SandboxHandle(url)`` to drive it. Everything
goes over loopback HTTP, so the same handle works for both.
"""

from __future__ import annotations

import contextlib
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import creators_sandbox as cs
import pytest
import requests
from flask import Flask

SANDBOX_SCRIPT = Path(__file__).resolve().parent.parent / "examples" / "creators_sandbox.py"
TIMEOUT = 5.0


@dataclass
class SandboxHandle:
    """Drives one sandbox over HTTP; ``app`` is set when it runs in this process."""

    url: str
    app: Flask | None = None

    #: The ``app_config`` keys the ``env`` credentials backend reads from the process
    #: environment (never from the app config): a test exports them.
    CREDENTIAL_VARIABLES: ClassVar[tuple[str, ...]] = (
        "AMAZON_CREATORS_CREDENTIAL_ID",
        "AMAZON_CREATORS_CREDENTIAL_SECRET",
        "AMAZON_CREATORS_VERSION",
        "AMAZON_CREATORS_PARTNER_TAG",
    )

    @property
    def state(self) -> cs.SandboxState:
        """The in-process state (only for a sandbox started by ``sandbox_server``)."""
        if self.app is None:
            raise RuntimeError("this sandbox runs in another process; use its HTTP API")
        return cs.sandbox_state(self.app)

    def _post(self, path: str, payload: Any = None) -> dict[str, Any]:
        response = requests.post(self.url + path, json=payload, timeout=TIMEOUT)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    # -- control

    def stats(self, calls: bool = True) -> dict[str, Any]:
        """``GET /_sandbox/stats`` (``calls=False`` leaves out the per-call log)."""
        response = requests.get(
            self.url + "/_sandbox/stats", params={"calls": int(calls)}, timeout=TIMEOUT
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def fault(self, name: str, count: int = 1, endpoint: str = cs.GET_ITEMS, **params: Any) -> None:
        """Queue fault ``name`` for the next ``count`` calls to ``endpoint``."""
        self._post(
            "/_sandbox/faults", {"fault": name, "count": count, "endpoint": endpoint, **params}
        )

    def clear_faults(self) -> None:
        """``DELETE /_sandbox/faults``."""
        requests.delete(self.url + "/_sandbox/faults", timeout=TIMEOUT).raise_for_status()

    def set_credentials(
        self,
        credentials: Iterable[cs.Credential | tuple[str, str, str]],
        partner_tags: Iterable[str] | None = None,
        revoke_tokens: bool = False,
    ) -> None:
        """Replace the accepted credentials (rotation tests)."""
        parsed = [cs.Credential.parse(c) for c in credentials]
        payload: dict[str, Any] = {
            "credentials": [[c.credential_id, c.credential_secret, c.version] for c in parsed],
            "revoke_tokens": revoke_tokens,
        }
        if partner_tags is not None:
            payload["partner_tags"] = list(partner_tags)
        self._post("/_sandbox/credentials", payload)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``POST /_sandbox/config``: rate, token_rate, window_seconds, token_expires_in, …"""
        if isinstance(changes.get("partner_tags"), (set, frozenset)):
            changes["partner_tags"] = sorted(changes["partner_tags"])
        return self._post("/_sandbox/config", changes)

    def expire_tokens(self) -> None:
        """Make every token issued so far expired."""
        self._post("/_sandbox/tokens/expire")

    def reset(self, full: bool = True) -> None:
        """Clear the call log; ``full`` also clears faults and restores config/credentials."""
        self._post("/_sandbox/reset", {"full": full})

    # -- client-side helpers

    @staticmethod
    def credential(version: str = "2.1") -> cs.Credential:
        """The demo credential for ``version``."""
        return cs.Credential(cs.DEMO_CREDENTIAL_ID, cs.DEMO_CREDENTIAL_SECRET, version)

    def token_url(self, version: str = "2.1") -> str:
        """The sandbox token endpoint of the family of ``version``."""
        family = cs.credential_family(version)
        return self.url + (cs.COGNITO_TOKEN_PATH if family == cs.COGNITO else cs.LWA_TOKEN_PATH)

    def token(self, version: str = "2.1") -> str:
        """Fetch an access token for the demo credential, as a correct client would."""
        if cs.credential_family(version) == cs.COGNITO:
            response = requests.post(
                self.token_url(version),
                data={
                    "grant_type": "client_credentials",
                    "client_id": cs.DEMO_CREDENTIAL_ID,
                    "client_secret": cs.DEMO_CREDENTIAL_SECRET,
                    "scope": cs.COGNITO_SCOPE,
                },
                timeout=TIMEOUT,
            )
        else:
            response = requests.post(
                self.token_url(version),
                json={
                    "grant_type": "client_credentials",
                    "client_id": cs.DEMO_CREDENTIAL_ID,
                    "client_secret": cs.DEMO_CREDENTIAL_SECRET,
                    "scope": cs.LWA_SCOPE,
                },
                timeout=TIMEOUT,
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def headers(self, version: str = "2.1", token: str | None = None) -> dict[str, str]:
        """Correct getItems headers for ``version`` (fetches a token when none is given)."""
        token = token or self.token(version)
        authorization = f"Bearer {token}"
        if cs.credential_family(version) == cs.COGNITO:
            authorization += f", Version {version}"
        return {"Authorization": authorization, "x-marketplace": cs.DEFAULT_MARKETPLACE}

    def get_items_url(self) -> str:
        """The sandbox getItems endpoint."""
        return self.url + cs.GET_ITEMS_PATH

    def app_config(self, version: str = "2.1") -> dict[str, Any]:
        """``AMAZON_*`` settings (docs/configuration.md) pointing the plugin at this sandbox."""
        return {
            "AMAZON_CREATORS_API_HOST": self.url,
            "AMAZON_TOKEN_URL": self.token_url(version),
            "AMAZON_MARKETPLACE": cs.DEFAULT_MARKETPLACE,
            "AMAZON_CREDENTIALS_BACKEND": "env",
            "AMAZON_CREATORS_CREDENTIAL_ID": cs.DEMO_CREDENTIAL_ID,
            "AMAZON_CREATORS_CREDENTIAL_SECRET": cs.DEMO_CREDENTIAL_SECRET,
            "AMAZON_CREATORS_VERSION": version,
            "AMAZON_CREATORS_PARTNER_TAG": cs.DEMO_PARTNER_TAG,
        }


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxHandle]:
    """One in-process sandbox for the whole session (default config: 1 call/second)."""
    app = cs.create_sandbox_app()
    url, shutdown = cs.serve_in_thread(app)
    try:
        yield SandboxHandle(url, app)
    finally:
        shutdown()


@pytest.fixture
def sandbox(sandbox_server: SandboxHandle) -> Iterator[SandboxHandle]:
    """The session sandbox, fully reset before and after the test."""
    sandbox_server.reset(full=True)
    yield sandbox_server
    sandbox_server.reset(full=True)


class SandboxApp(Protocol):
    """``sandbox_app(version="2.1", **overrides)``: see the fixture."""

    def __call__(self, version: str = "2.1", **overrides: Any) -> Flask: ...


@pytest.fixture
def sandbox_app(
    make_app: Callable[..., Flask], sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> SandboxApp:
    """``sandbox_app(version="2.1", **overrides)``: a ``make_app`` app whose Amazon is the
    sandbox, with ``sandbox.app_config(version)`` updated by ``overrides``.

    The env backend reads the process environment, so the sandbox credentials from
    ``app_config`` are exported (for the test only) rather than put into the app config.
    Anything else — timeouts, ``AMAZON_MAX_WAIT_SECONDS``, rate limits — is the test's
    choice, passed as an override (``make_app``'s fast defaults apply otherwise).
    """
    sandbox.configure(rate=100)  # not the default 1 call/second: a test may make several

    def factory(version: str = "2.1", **overrides: Any) -> Flask:
        config = sandbox.app_config(version)
        for name in sandbox.CREDENTIAL_VARIABLES:
            monkeypatch.setenv(name, str(config.pop(name)))
        config.update(overrides)
        return make_app(**config)

    return factory


@contextlib.contextmanager
def sandbox_subprocess(
    rate: float = 1.0,
    token_expires_in: float | None = None,
    extra_args: Iterable[str] = (),
    startup_timeout: float = 20.0,
) -> Iterator[str]:
    """Run the sandbox CLI in its own process on a free loopback port; yield its base URL."""
    command = [sys.executable, str(SANDBOX_SCRIPT), "--port", "0", "--rate", str(rate), "--quiet"]
    if token_expires_in is not None:
        command += ["--token-expires-in", str(token_expires_in)]
    command += list(extra_args)
    with tempfile.TemporaryFile() as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL
        )
        try:
            url = _read_listening_url(process, startup_timeout, stderr)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stdout is not None:
                process.stdout.close()


def _read_listening_url(process: subprocess.Popen[bytes], timeout: float, stderr: Any) -> str:
    """Wait for the CLI's ``sandbox listening on URL`` line."""
    assert process.stdout is not None
    prefix = b"sandbox listening on "
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                line = process.stdout.readline()
                if line.startswith(prefix):
                    return line[len(prefix) :].decode().strip()
                if not line:
                    break
            if process.poll() is not None:
                break
    stderr.seek(0)
    raise RuntimeError(
        f"sandbox CLI did not start (exit {process.poll()}): {stderr.read().decode()[-2000:]}"
    )
