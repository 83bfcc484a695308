"""Load run: 200 concurrent clients for 30 s against the example BFF (``tox -e load``).

Not a test: it prints a report and exits 1 when a reliability target is missed.

What runs (``examples/stack.py``, everything on 127.0.0.1):

* the sandbox Creators API at ``--rate`` getItems calls/second (default 1, Amazon's quota);
* the example BFF under gunicorn (``--workers`` × ``--threads`` gthread, keep-alive
  ``--keep-alive`` s), ``AMAZON_RATE_LIMITS`` matching the sandbox's rate, default margin
  and ``AMAZON_MAX_WAIT_SECONDS``;
* a private Redis for the limiter and the product cache (shared by the workers).

``--clients`` threads (default 200) each hold one keep-alive HTTP/1.1 connection
(``http.client``; cheap enough to share two cores with the server) and import one link
after another for ``--duration`` seconds (and at most ``--max-requests`` each), then
stop. Links are ``https://www.amazon.com/dp/B0SYN#####`` (the sandbox describes every
such ASIN as a complete product): ``--hot-share`` of them from a small hot set
(``--hot`` ASINs, which the cache serves after their first import), the rest from a long
tail of fresh ASINs that each need an upstream call — far more than the quota allows, so
many of those must be refused with ``AMAZON_RATE_LIMITED``.

Reported: total requests, dropped connections (any request that got no complete HTTP
answer; must be 0), counts by status and error code, contract violations (a response
that is neither a product for the requested ASIN nor a 429 ``AMAZON_RATE_LIMITED`` with a
whole-second ``Retry-After``; must be 0), p50/p95/p99/max latency (all, products, 429s),
and what the sandbox saw: getItems calls, ASINs per call, the most calls in any one
second and Amazon-side throttles (must be 0: we never exceed the quota). The p99 must
stay within ``--p99-limit`` (default: the slot wait plus one call's default connect and
read timeouts). Exit status 1 when any of these is missed.

    python benchmarks/load.py                      # 200 clients, 30 s
    python benchmarks/load.py --clients 50 --duration 10 --json result.json
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "examples") not in sys.path:
    sys.path.insert(0, str(REPO / "examples"))

#: Per-request socket timeout: far above any legitimate answer (max wait + timeouts).
REQUEST_TIMEOUT = 60.0


@dataclass
class Sample:
    latency: float
    kind: str  # "product", "rate_limited", "violation", "dropped"
    status: int | None
    code: str | None


@dataclass
class ClientStats:
    samples: list[Sample] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)


def classify(
    asin: str, status: int, headers: http.client.HTTPMessage, body: bytes
) -> tuple[str, str | None, str | None]:
    """(kind, code, why-violation) of one complete answer."""
    try:
        payload = json.loads(body)
    except ValueError:
        return "violation", None, f"{status}: body is not JSON: {body[:80]!r}"
    if not isinstance(payload, dict):
        return "violation", None, f"{status}: body is not an object"
    if status in (200, 206):
        if payload.get("asin") != asin:
            return "violation", None, f"{status}: product for {payload.get('asin')!r}, not {asin}"
        return "product", None, None
    error = payload.get("error") if isinstance(payload.get("error"), dict) else {}
    code = error.get("code") if isinstance(error, dict) else None
    if status == 429 and code == "AMAZON_RATE_LIMITED":
        retry_after = headers.get("Retry-After", "")
        if retry_after.isdigit() and int(retry_after) >= 1:
            return "rate_limited", code, None
        return "violation", code, f"429 without a usable Retry-After ({retry_after!r})"
    return "violation", code, f"{status} {code}: {json.dumps(error)[:200]}"


class Client(threading.Thread):
    """One keep-alive connection, one request after another until the deadline."""

    def __init__(
        self,
        index: int,
        host: str,
        port: int,
        headers: dict[str, str],
        pick: Any,
        start: threading.Event,
        deadline_box: list[float],
        max_requests: int,
    ) -> None:
        super().__init__(name=f"load-client-{index}", daemon=True)
        self.host, self.port = host, port
        self.headers = headers
        self.pick = pick
        self.start_event = start
        self.deadline_box = deadline_box
        self.max_requests = max_requests
        self.stats = ClientStats()
        self.connection: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.connection is None:
            self.connection = http.client.HTTPConnection(
                self.host, self.port, timeout=REQUEST_TIMEOUT
            )
        return self.connection

    def run(self) -> None:
        self.start_event.wait()
        deadline = self.deadline_box[0]
        for _ in range(self.max_requests):
            if time.monotonic() >= deadline:
                break
            asin = self.pick()
            body = json.dumps({"url": f"https://www.amazon.com/dp/{asin}"})
            started = time.perf_counter()
            try:
                connection = self._connection()
                connection.request("POST", "/api/amazon/import", body=body, headers=self.headers)
                response = connection.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                latency = time.perf_counter() - started
                self.stats.samples.append(Sample(latency, "dropped", None, None))
                self.stats.violations.append(f"dropped: {type(exc).__name__}: {exc}")
                if self.connection is not None:
                    self.connection.close()
                self.connection = None
                continue
            latency = time.perf_counter() - started
            kind, code, why = classify(asin, response.status, response.headers, data)
            self.stats.samples.append(Sample(latency, kind, response.status, code))
            if why is not None:
                self.stats.violations.append(why)
            if response.will_close:
                connection.close()
                self.connection = None
        if self.connection is not None:
            self.connection.close()


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def latency_row(name: str, values: Sequence[float]) -> str:
    if not values:
        return f"  {name:<13} (none)"
    ms = [v * 1000 for v in values]
    return (
        f"  {name:<13} n={len(ms):>6}  p50={percentile(ms, 50):7.1f} ms  "
        f"p95={percentile(ms, 95):7.1f} ms  p99={percentile(ms, 99):7.1f} ms  "
        f"max={max(ms):7.1f} ms"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=100_000, help="per client")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--threads", type=int, default=50, help="gthread threads per worker")
    parser.add_argument("--keep-alive", type=int, default=75, help="gunicorn keep-alive, s")
    parser.add_argument("--rate", type=float, default=1.0, help="sandbox getItems calls/s")
    parser.add_argument("--max-wait", type=float, default=3.0, help="AMAZON_MAX_WAIT_SECONDS")
    parser.add_argument("--hot", type=int, default=50, help="ASINs in the hot set")
    parser.add_argument("--hot-share", type=float, default=0.9, help="share of hot requests")
    parser.add_argument("--storage", choices=("redis", "memory"), default="redis")
    parser.add_argument("--seed", type=int, default=20261127)
    parser.add_argument(
        "--p99-limit",
        type=float,
        default=None,
        help="seconds; default: max wait + the default connect and read timeouts (3.05 + 10)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    if args.p99_limit is None:
        # One slot wait, then one call that may use its whole connect + read timeout.
        args.p99_limit = args.max_wait + 3.05 + 10
    if args.clients < 1 or args.duration <= 0 or args.max_requests < 1:
        parser.error("--clients, --duration and --max-requests must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from stack import run_stack

    rng_lock = threading.Lock()
    rng = random.Random(args.seed)  # noqa: S311 - a workload, not a secret
    tail = iter(range(10_000, 100_000))

    def pick() -> str:
        with rng_lock:
            if rng.random() < args.hot_share:
                return f"B0SYN{rng.randrange(1, args.hot + 1):05d}"
            return f"B0SYN{next(tail):05d}"

    config = {
        "AMAZON_RATE_LIMITS": f"{args.rate:g}/second;8640/day",
        "AMAZON_MAX_WAIT_SECONDS": args.max_wait,
    }
    command = " ".join(["python benchmarks/load.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"$ {command}", flush=True)
    print(
        f"starting: sandbox at {args.rate:g} call/s, gunicorn {args.workers}x{args.threads} "
        f"gthread, {args.storage} storage ...",
        flush=True,
    )
    with run_stack(
        workers=args.workers,
        threads=args.threads,
        rate=args.rate,
        storage=args.storage,
        config=config,
        gunicorn_args=["--keep-alive", str(args.keep_alive), "--backlog", "2048"],
    ) as stack:
        host, port = stack.bff_url.removeprefix("http://").split(":")
        headers = dict(stack.headers)
        start = threading.Event()
        deadline_box = [0.0]
        clients = [
            Client(i, host, int(port), headers, pick, start, deadline_box, args.max_requests)
            for i in range(args.clients)
        ]
        for client in clients:
            client.start()
        print(f"running: {args.clients} clients for {args.duration:g} s ...", flush=True)
        began = time.monotonic()
        deadline_box[0] = began + args.duration
        start.set()
        for client in clients:
            client.join(args.duration + REQUEST_TIMEOUT + 10)
        wall = time.monotonic() - began
        stuck = sum(client.is_alive() for client in clients)
        sandbox = stack.sandbox.stats(calls=True)
        # What an upstream 429 needs to be explained: how close the arrivals came, and
        # whether the quota saw calls leave late (its WARNING, quota.py "Late sends").
        late_warnings = stack.logs("gunicorn").count("after its quota slot")

    arrivals = sorted(c["monotonic"] for c in sandbox["calls"] if c["endpoint"] == "getItems")
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    samples = [s for c in clients for s in c.stats.samples]
    violations = [v for c in clients for v in c.stats.violations]
    kinds = Counter(s.kind for s in samples)
    statuses = Counter(str(s.status) if s.status is not None else "none" for s in samples)
    codes = Counter(s.code or ("(product)" if s.kind == "product" else "-") for s in samples)
    dropped = kinds["dropped"]
    bad = kinds["violation"]

    result: dict[str, Any] = {
        "command": command,
        "clients": args.clients,
        "duration_s": args.duration,
        "wall_s": round(wall, 2),
        "workers": args.workers,
        "threads": args.threads,
        "storage": args.storage,
        "sandbox_rate": args.rate,
        "total_requests": len(samples),
        "requests_per_s": round(len(samples) / wall, 1),
        "dropped_connections": dropped,
        "violations": bad,
        "stuck_clients": stuck,
        "by_kind": dict(kinds),
        "by_status": dict(statuses),
        "by_code": dict(codes),
        "latency_ms": {
            name: {
                f"p{q}": round(percentile([s.latency * 1000 for s in group], q), 1)
                for q in (50, 95, 99)
            }
            for name, group in (
                ("all", samples),
                ("product", [s for s in samples if s.kind == "product"]),
                ("rate_limited", [s for s in samples if s.kind == "rate_limited"]),
            )
        },
        "upstream": {
            "getItems_calls": sandbox["total_calls"],
            "avg_asins_per_call": round(sandbox["avg_asins_per_call"], 2),
            "max_calls_in_window": sandbox["max_calls_in_window"],
            "window_seconds": sandbox["window_seconds"],
            "throttled_by_amazon": sandbox["throttled_calls"],
            "token_requests": sandbox["token_requests"],
            "smallest_arrival_gap_s": round(min(gaps), 3) if gaps else None,
            "late_call_warnings": late_warnings,
        },
        "first_violations": violations[:10],
    }

    print()
    print(
        f"total requests        {len(samples)}  "
        f"({result['requests_per_s']} req/s over {wall:.1f} s)"
    )
    print(f"dropped connections   {dropped}")
    print(f"contract violations   {bad}")
    print(f"clients still running {stuck}")
    print("by status             " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    print("by code               " + ", ".join(f"{k}: {v}" for k, v in sorted(codes.items())))
    print("latency")
    print(latency_row("all", [s.latency for s in samples]))
    print(latency_row("products", [s.latency for s in samples if s.kind == "product"]))
    print(latency_row("429s", [s.latency for s in samples if s.kind == "rate_limited"]))
    upstream = result["upstream"]
    print(
        f"upstream              {upstream['getItems_calls']} getItems calls, "
        f"{upstream['avg_asins_per_call']} ASINs/call, at most {upstream['max_calls_in_window']} "
        f"in any {upstream['window_seconds']:g} s, {upstream['throttled_by_amazon']} throttled "
        f"by Amazon, {upstream['token_requests']} token requests"
    )
    print(
        f"arrivals              smallest gap between two getItems calls "
        f"{upstream['smallest_arrival_gap_s']} s, {late_warnings} late-call warning(s) logged"
    )
    for line in violations[:10]:
        print(f"  violation: {line}")

    p99 = percentile([s.latency for s in samples], 99)
    slow = not p99 <= args.p99_limit
    print(f"p99 bound             {p99:.2f} s against a limit of {args.p99_limit:g} s")
    result["p99_limit_s"] = args.p99_limit
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failed = dropped or bad or stuck or upstream["throttled_by_amazon"] or slow
    print("RESULT: " + ("FAIL" if failed else "PASS"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
