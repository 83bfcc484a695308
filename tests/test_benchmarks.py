"""Smoke test of ``benchmarks/run.py``: its measurement code runs and yields numbers of
the right shape, so the benchmark cannot rot between runs of ``tox -e bench``.

No timing thresholds here: the numbers depend on the machine. The stack is in-process
(the session's sandbox and the example BFF on a threaded werkzeug server, ``memory://``
storage); the real benchmark uses gunicorn and Redis through ``examples/stack.py``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import example_bff
import pytest
from fixtures_sandbox import SandboxHandle
from werkzeug.serving import make_server

RUN_PY = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("arda_bench_run", RUN_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bff_url(sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    sandbox.configure(rate=20)
    config = sandbox.app_config("3.1", backend="env")
    for key in list(config):
        if key.startswith("AMAZON_CREATORS_") and key != "AMAZON_CREATORS_API_HOST":
            monkeypatch.setenv(key, config.pop(key))
    app = example_bff.create_app(
        {
            **config,
            "AMAZON_RATE_LIMITS": "20/second;100000/day",
            "AMAZON_MAX_WAIT_SECONDS": 2,
            "AMAZON_HTTP_TIMEOUT": [2, 5],
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.extensions["arda_amazon_bp"].lookup.close()


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@pytest.mark.timeout(60)
def test_phases_produce_numbers_and_a_report(
    bench: ModuleType, bff_url: str, sandbox: SandboxHandle
) -> None:
    distinct = bench.measure_distinct(
        bff_url, sandbox.url, clients=4, duration=1.0, first_asin=bench.COALESCED_FIRST
    )
    for key in (
        "products_per_second",
        "p50",
        "p95",
        "upstream_calls",
        "asins_per_call",
        "upstream_429",
        "local_429",
        "max_calls_in_window",
        "cache_hit_rate",
    ):
        assert _number(distinct[key]), key
    assert distinct["products"] > 0
    assert distinct["upstream_calls"] >= 1
    assert 1 <= distinct["asins_per_call"] <= 10
    assert sum(distinct["calls_by_size"].values()) == distinct["upstream_calls"]
    assert not distinct["client_errors"]

    cache = bench.measure_cache_hits(
        bff_url, sandbox.url, asins=3, rounds=5, clients=2, duration=0.3, procs=1
    )
    assert cache["cached_asins"] == 3
    assert cache["upstream_calls_during_hits"] == 0  # hits never reach Amazon
    for key in (
        "health_p50",
        "bare_p50",
        "hit_p50",
        "latency_ratio",
        "bare_latency_ratio",
        "health_rps",
        "bare_rps",
        "hit_rps",
        "bare_rps_ratio",
    ):
        assert _number(cache[key]) and cache[key] > 0, key
    assert set(cache["hit_statuses"]) == {200}
    assert set(cache["bare_statuses"]) == {200}

    memory = {
        "entries": 10,
        "returncode": 0,
        "output": "x",
        "stderr": "",
        "rss_after_mb": 50.0,
        "within_budget": True,
    }
    options = bench.dataclass_dict(bench.Options.quick())
    results = {
        "options": options,
        "cpus": 2,
        "coalesced": distinct,
        "baseline": distinct,
        "cache": cache,
        "memory": memory,
    }
    report = bench.render(results)
    for heading in ("1. Distinct ASINs", "2. Cache hits", "3. Memory", "Targets"):
        assert heading in report
    names = [name for name, _ok, _measured in bench.targets(results)]
    assert len(names) == 10
    assert "cache-hit p50 <= 1.3x bare POST route" in names
    assert "cache-hit req/s >= 0.6x bare POST route" in names
    assert "bare POST" in report


@pytest.mark.timeout(60)
def test_memory_benchmark_figures(bench: ModuleType) -> None:
    memory = bench.measure_memory(2000)
    assert memory["returncode"] == 0, memory["stderr"]
    assert memory["within_budget"] is True
    assert memory["bytes_per_entry"] > 0
    assert not math.isnan(memory["rss_after_mb"]) and memory["rss_after_mb"] > 0


def test_http_client_parses_chunked_and_percentiles(bench: ModuleType) -> None:
    assert bench.percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.0
    assert bench.percentile([3.0, 1.0, 2.0, 4.0], 95) == 4.0
    assert math.isnan(bench.percentile([], 50))
    conn = bench.Connection("http://127.0.0.1:9")
    conn._buffer = b"4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\nrest"
    assert conn._read_chunked() == b"abcdef"
    assert conn._buffer == b"rest"
