"""``run_forked``: run a check in a real ``os.fork()`` child, bounded by a timeout.

The child's verdict travels back as its exit code (0 when the check returned True), so
nothing but the process status crosses the fork. A child that hangs — typically on a lock
inherited held from the parent — kills itself with ``SIGALRM``, and the parent kills it
with ``SIGKILL`` when the timeout passes first, so it never outlives the test.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_forked(child: Callable[[], bool], timeout: float = 10) -> bool:
    """Run ``child`` in a forked process; whether it returned True. A hung child is killed."""
    pid = os.fork()
    if pid == 0:
        ok = False
        try:
            # A deadlocked child must not outlive the test (or hold the run's output pipe).
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(int(timeout) + 1)
            ok = child()
        finally:
            os._exit(0 if ok else 1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child hung (a lock inherited from the parent?)")
