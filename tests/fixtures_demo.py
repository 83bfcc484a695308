"""The example BFF's demo (``examples/demo.py``) as a real process on a free loopback port."""

from __future__ import annotations

import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_sandbox import stop_process

ROOT = Path(__file__).resolve().parent.parent
#: The demo's last startup line: everything it prints for a newcomer comes before it.
READY = "Ctrl-C stops."


@dataclass(frozen=True)
class RunningDemo:
    printed: str  # everything the demo printed up to and including READY
    base_url: str  # the example BFF, e.g. http://127.0.0.1:43121


@pytest.fixture
def running_demo(tmp_path: Path) -> Iterator[RunningDemo]:
    """Start ``examples/demo.py --port 0`` as a newcomer would (no AMAZON_* variables)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMAZON_", "EXAMPLE_BFF_"))}
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        printed = _read_until(process, READY, timeout=30)
        base = re.search(r"example BFF on (http://127\.0\.0\.1:\d+)", printed)
        assert base, printed
        yield RunningDemo(printed=printed, base_url=base.group(1))
    finally:
        stop_process(process, grace=10)


def _read_until(process: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    """Read the process's stdout until ``marker`` (raw reads: nothing hides in a buffer)."""
    assert process.stdout is not None
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while marker.encode() not in data:
            assert time.monotonic() < deadline, f"demo did not print {marker!r}: {data!r}"
            if selector.select(timeout=0.2):
                chunk = os.read(process.stdout.fileno(), 65536)
                assert chunk, f"demo exited {process.wait(5)}: {data!r}"
                data += chunk
    return data.decode()
