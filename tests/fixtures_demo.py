"""The example BFF's demo (``examples/demo.py``) as a real process on a free loopback port."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures_sandbox import read_stdout_until, stop_process

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
        printed, ready = read_stdout_until(process, re.escape(READY), timeout=30)
        assert ready is not None, f"demo did not print {READY!r} (exit {process.poll()}): {printed}"
        base = re.search(r"example BFF on (http://127\.0\.0\.1:\d+)", printed)
        assert base, printed
        yield RunningDemo(printed=printed, base_url=base.group(1))
    finally:
        stop_process(process, grace=10)
