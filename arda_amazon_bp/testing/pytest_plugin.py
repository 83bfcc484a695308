"""pytest plugin (entry point ``pytest11``): the ``amazon_sandbox`` fixture.

``amazon_sandbox`` is one sandbox Creators API per test session on 127.0.0.1 (a free
port), fully reset before and after each test: call log, queued faults, config and
credentials back to the defaults. See docs/testing-your-integration.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .client import AmazonSandbox


@pytest.fixture(scope="session")
def amazon_sandbox_server() -> Iterator[AmazonSandbox]:
    """The session's sandbox, not reset between tests (prefer ``amazon_sandbox``)."""
    # Imported here: loading the plugin stays cheap for test runs that never use it.
    from .client import running_sandbox

    with running_sandbox() as sandbox:
        yield sandbox


@pytest.fixture
def amazon_sandbox(amazon_sandbox_server: AmazonSandbox) -> Iterator[AmazonSandbox]:
    """The session's sandbox, fully reset before and after the test.

    ``.config`` (app config for the plugin), ``.example_url``, ``.stats()``,
    ``.fault(...)``, and the rest of :class:`arda_amazon_bp.testing.AmazonSandbox`.
    The process's in-memory quota windows are reset too: they are shared per credential
    across apps (docs/configuration.md), and the previous test's app used this one's.
    """
    from ..quota import reset_process_memory

    reset_process_memory()
    amazon_sandbox_server.reset(full=True)
    yield amazon_sandbox_server
    amazon_sandbox_server.reset(full=True)
