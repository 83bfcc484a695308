"""``arda_amazon_bp.forks``: registered resets run in a forked child, never in the parent,
and only while their instance lives (the registry holds weak references only).

Every fork here is real (``os.fork()``); the child's verdict is its exit code.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
from forking import needs_fork, run_forked

from arda_amazon_bp import forks
from arda_amazon_bp.forks import reset_in_child


class Probe:
    """Registers a reset that records the pid of each process it runs in."""

    def __init__(self) -> None:
        self.ran_in: list[int] = []
        before = set(forks._RESETS)
        reset_in_child(self.reset)
        (self.number,) = set(forks._RESETS) - before

    def reset(self) -> None:
        self.ran_in.append(os.getpid())


@needs_fork
def test_a_registered_reset_runs_in_the_child_and_not_in_the_parent() -> None:
    first, second = Probe(), Probe()
    parent = os.getpid()

    def child() -> bool:
        me = os.getpid()
        return me != parent and first.ran_in == [me] and second.ran_in == [me]

    assert run_forked(child)
    assert first.ran_in == []
    assert second.ran_in == []


@needs_fork
def test_a_collected_instance_is_dropped_and_not_kept_alive() -> None:
    kept, dropped = Probe(), Probe()
    kept_number, dropped_number = kept.number, dropped.number
    dropped_ref = weakref.ref(dropped)
    del dropped
    gc.collect()
    assert dropped_ref() is None  # registering did not keep it alive
    assert dropped_number not in forks._RESETS
    assert kept_number in forks._RESETS
    assert run_forked(lambda: kept.ran_in == [os.getpid()])  # the live one still runs
    assert kept.ran_in == []


def test_only_bound_methods_are_accepted() -> None:
    with pytest.raises(TypeError):
        reset_in_child(lambda: None)  # nothing to hold weakly on an instance's behalf


@needs_fork
def test_a_creators_client_in_a_forked_worker_gets_its_own_session_and_locks() -> None:
    # A real fork, as gunicorn --preload does after the app (and its client) was built.
    from arda_amazon_bp.config import DEFAULTS, Settings
    from arda_amazon_bp.creators import CreatorsClient
    from arda_amazon_bp.credentials import CredentialProvider

    class NoBackend:
        def load(self) -> None:
            raise AssertionError("not needed here")

    client = CreatorsClient(
        Settings.from_config(dict(DEFAULTS)), CredentialProvider(NoBackend(), 900)
    )
    parent_session = client._http()

    def child() -> bool:
        session = client._http()  # must not wait for the locks the parent holds
        return session is not parent_session and client._http() is session

    # as if other threads were mid-update when the worker forked
    with client._state_lock:
        assert run_forked(child)
    assert client._http() is parent_session  # the parent keeps its pooled connections
    client.close()


def test_an_instance_alive_at_exit_leaves_stderr_clean(tmp_path: Path) -> None:
    # weakref.WeakMethod printed "Exception ignored in … _cb … AttributeError" here: the
    # interpreter freed the registry's entry before the instance it pointed at.
    script = (
        "from arda_amazon_bp.forks import reset_in_child\n"
        "class Holder:\n"
        "    def reset(self): pass\n"
        "held = Holder()\n"
        "reset_in_child(held.reset)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,  # not the checkout, whose arda_amazon_bp would shadow the installed one
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    assert done.stderr == ""
