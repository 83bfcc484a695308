"""Where a cached import spends its time, in-process (docs/performance.md; not a test).

Builds the example BFF against the sandbox Creators API and a private ``redis-server``
(the product cache and the limiter both in Redis, as in ``benchmarks/run.py``), imports one
product so it is cached, then:

* times ``GET /healthz``, the bare POST route and a cached import through Flask's test
  client (best of 7 runs of ``--requests``, per request);
* with ``--profile FILE``, records ``--profile-requests`` cached imports with pyinstrument
  and writes its text summary to FILE. pyinstrument is not a dependency of the project:
  ``pip install pyinstrument`` first.

    python benchmarks/profile_hit.py
    python benchmarks/profile_hit.py --profile /tmp/hit.txt
    AMAZON_FRONT_CACHE_TTL_SECONDS=0 python benchmarks/profile_hit.py   # shortcut off

Everything listens on 127.0.0.1 and is stopped on exit.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _extra in (REPO / "examples", REPO / "tests"):  # example_bff, creators_sandbox, fixtures
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

from run import AUTH_TOKEN, BARE_PATH, HEALTH_PATH, IMPORT_PATH, redis_server  # noqa: E402


def per_request_ms(send: Callable[[], Any], requests: int) -> float:
    """Best of 7 runs of ``requests`` calls, in milliseconds per call."""
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        for _ in range(requests):
            send()
        best = min(best, (time.perf_counter() - started) / requests)
    return best * 1000


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="per timing run (300)")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument summary here")
    parser.add_argument("--profile-requests", type=int, default=3000)
    args = parser.parse_args(argv)

    import example_bff

    from arda_amazon_bp.testing import running_sandbox

    with running_sandbox() as sandbox, redis_server() as redis:
        app = example_bff.create_app(
            {
                **sandbox.config,
                "AMAZON_CACHE_STORAGE_URI": redis.url,
                "AMAZON_RATE_LIMIT_STORAGE_URI": redis.url,
            }
        )
        client = app.test_client()
        headers = {"Authorization": f"Bearer {AUTH_TOKEN}"}
        body = {"url": "https://www.amazon.com/dp/B0SYN00001"}
        first = client.post(IMPORT_PATH, json=body, headers=headers)
        if first.status_code != 200:
            print(f"the first import answered {first.status_code}", file=sys.stderr)
            return 1

        def hit() -> Any:
            return client.post(IMPORT_PATH, json=body, headers=headers)

        def bare() -> Any:
            return client.post(BARE_PATH, json={"asin": "B0SYN00001"}, headers=headers)

        for name, send in (
            ("GET /healthz", lambda: client.get(HEALTH_PATH)),
            ("bare POST", bare),
            ("cached import", hit),
        ):
            print(f"{name:<16}{per_request_ms(send, args.requests):7.3f} ms per request")
        if args.profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0001)
            profiler.start()
            for _ in range(args.profile_requests):
                hit()
            profiler.stop()
            args.profile.write_text(profiler.output_text(unicode=False, color=False))
            print(f"pyinstrument summary of {args.profile_requests} hits: {args.profile}")
        app.extensions["arda_amazon_bp"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
