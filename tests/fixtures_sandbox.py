"""Sandbox Creators API fixtures, built on ``arda_amazon_bp.testing`` (what hosts use).

``sandbox`` (function scope) is the package's ``amazon_sandbox`` fixture: the session's
sandbox after a full reset (call log, faults, config and credentials back to the
defaults); ``sandbox_server`` is the same server without the reset.
``sandbox_app(version="2.1", **overrides)`` builds a host app (``make_app``) whose Amazon
is that sandbox.
``sandbox_subprocess(...)`` runs the sandbox CLI (``python -m arda_amazon_bp.testing``)
in its own process (for gunicorn multi-process tests) and yields its base URL; wrap the
URL in ``SandboxHandle(url)`` to drive it. Everything goes over loopback HTTP, so the
same handle works for both.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

import pytest
from flask import Flask

from arda_amazon_bp.testing import AmazonSandbox

#: The repo's tests drive the sandbox with the very handle hosts get.
SandboxHandle = AmazonSandbox

#: How the sandbox CLI is started in its own process.
SANDBOX_COMMAND = (sys.executable, "-m", "arda_amazon_bp.testing")


@pytest.fixture(scope="session")
def sandbox_server(amazon_sandbox_server: AmazonSandbox) -> AmazonSandbox:
    """The plugin's session sandbox (default config: 1 call/second)."""
    return amazon_sandbox_server


@pytest.fixture
def sandbox(amazon_sandbox: AmazonSandbox) -> AmazonSandbox:
    """The plugin's ``amazon_sandbox``: fully reset before and after the test."""
    return amazon_sandbox


class SandboxApp(Protocol):
    """``sandbox_app(version="2.1", **overrides)``: see the fixture."""

    def __call__(self, version: str = "2.1", **overrides: Any) -> Flask: ...


@pytest.fixture
def sandbox_app(
    make_app: Callable[..., Flask], sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> SandboxApp:
    """``sandbox_app(version="2.1", **overrides)``: a ``make_app`` app whose Amazon is the
    sandbox, with ``sandbox.app_config(version)`` updated by ``overrides``.

    It uses the ``env`` backend (the rotation and secrets tests change its variables), so
    the sandbox credentials from ``app_config`` are exported for the test only. Hosts use
    ``amazon_sandbox.config`` (the ``config`` backend) instead.
    Anything else — timeouts, ``AMAZON_MAX_WAIT_SECONDS``, rate limits — is the test's
    choice, passed as an override (``make_app``'s fast defaults apply otherwise).
    """
    sandbox.configure(rate=100)  # not the default 1 call/second: a test may make several

    def factory(version: str = "2.1", **overrides: Any) -> Flask:
        config = sandbox.app_config(version, backend="env")
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
    command = [*SANDBOX_COMMAND, "--port", "0", "--rate", str(rate), "--quiet"]
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
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 5) -> None:
    """Terminate ``process``, kill it if it outlives ``grace`` seconds, close its stdout."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
    if process.stdout is not None:
        process.stdout.close()


def _read_listening_url(process: subprocess.Popen[bytes], timeout: float, stderr: Any) -> str:
    """Wait for the CLI's ``sandbox listening on URL`` line."""
    _, listening = read_stdout_until(process, r"sandbox listening on (\S+)\r?\n", timeout)
    if listening is not None:
        return listening.group(1)
    stderr.seek(0)
    raise RuntimeError(
        f"sandbox CLI did not start (exit {process.poll()}): {stderr.read().decode()[-2000:]}"
    )


def read_stdout_until(
    process: subprocess.Popen[bytes], pattern: str, timeout: float
) -> tuple[str, re.Match[str] | None]:
    """Read ``process``'s stdout until the regex ``pattern`` matches, the process closes
    it, or ``timeout`` passes: what was read, and the match (``None`` if none came).

    Raw reads, so nothing the process printed waits in a buffer of ours.
    """
    assert process.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.1):
                chunk = os.read(process.stdout.fileno(), 65536)
                if not chunk:
                    break
                data += chunk
                match = re.search(pattern, data.decode(errors="replace"))
                if match is not None:
                    return data.decode(errors="replace"), match
    return data.decode(errors="replace"), None
