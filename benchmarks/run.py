"""Throughput, latency and memory benchmark of the import route (``tox -e bench``; not a test).

One run prints one table with three parts (issue 5, "Targets"):

1. **Distinct ASINs.** The sandbox Creators API allows ``--rate`` getItems calls per
   second (default 5) and our ``AMAZON_RATE_LIMITS`` is set to match (margin left at its
   default). The example BFF runs under gunicorn (``--workers`` × ``--threads`` gthread)
   with Redis for the limiter and the cache. ``--clients`` concurrent clients (default 50)
   each import one fresh synthetic ASIN after another (``B0SYN00000``…) for
   ``--duration`` seconds. Reported: products/second, upstream calls and ASINs per call
   (from the sandbox's own call log), p50/p95 latency, upstream 429s. Then the same
   workload against the naive baseline (``AMAZON_MAX_ITEMS_PER_CALL=1``,
   ``AMAZON_CACHE_TTL_SECONDS=0``), and the ratio.
2. **Cache hits.** Same server setup; ASINs imported once, then imported again and again.
   Latency with one sequential client (unloaded), alternating on one keep-alive connection
   with ``/healthz`` and with a bare POST route of the same app that parses a small JSON
   body and answers a ~1 KB product from memory (``BARE_PRODUCT_PATH``); throughput with
   many keep-alive clients, the bare route and the cached import in alternating halves.
   Issue 15's targets: p50 within 1.3x and throughput at least 0.6x the bare route's.
3. **Memory.** ``benchmarks/bench_cache_memory.py`` (100,000 products, RSS per worker).

A client that gets a 429 from our limiter honours ``Retry-After`` and retries the same
ASIN (as the frontend would); those 429s are counted but are not products. The load
generator is a minimal keep-alive HTTP/1.1 client on raw sockets, in threads (and, for
the cache-hit throughput, in ``--client-procs`` processes): it shares the machine's cores
with gunicorn, so it has to be cheap.

Everything listens on 127.0.0.1 only. Every process started here (redis-server, the
stack's sandbox and gunicorn) is stopped on exit, also on Ctrl-C, an error or the overall
time limit (``--time-limit``).

    python benchmarks/run.py                       # the full run (about 2-3 minutes)
    python benchmarks/run.py --quick               # a short smoke run
    python benchmarks/run.py --duration 60 --clients 50 --rate 5 --workers 2 --threads 40
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
for _extra in (REPO / "examples", REPO / "tests"):  # stack, example_bff, fixtures_redis
    if str(_extra) not in sys.path:
        sys.path.insert(0, str(_extra))

AUTH_TOKEN = "demo-token"  # noqa: S105 - example_bff.DEFAULT_DEMO_TOKEN, a public demo value
IMPORT_PATH = "/api/amazon/import"
BATCH_PATH = "/api/amazon/import/batch"
HEALTH_PATH = "/healthz"
BARE_PATH = "/_bench/bare-product"  # example_bff.BARE_PRODUCT_PATH
MEMORY_SCRIPT = Path(__file__).with_name("bench_cache_memory.py")

# Synthetic ASIN ranges (the sandbox answers any B0SYN[0-9]{5}); one range per phase so
# no phase can be served by another phase's cache entries.
COALESCED_FIRST = 0
BASELINE_FIRST = 50_000
CACHED_FIRST = 90_000

TARGET_ASINS_PER_CALL = 9.0
TARGET_SPEEDUP = 8.0
TARGET_HIT_LATENCY_RATIO = 2.0
TARGET_HIT_RPS = 1000.0
TARGET_HIT_VS_BARE_P50 = 1.3  # issue 15
TARGET_HIT_VS_BARE_RPS = 0.6  # issue 15


def synthetic_asin(number: int) -> str:
    if not 0 <= number <= 99_999:
        raise ValueError(f"synthetic ASIN number out of range: {number}")
    return f"B0SYN{number:05d}"


#: The stores of ``--stores 2``: the sandbox's default one and its UK store.
STORES: tuple[str, ...] = ("www.amazon.com", "www.amazon.co.uk")


def import_body(asin: str, store: str = STORES[0]) -> bytes:
    return json.dumps({"url": f"https://{store}/dp/{asin}"}).encode()


# --------------------------------------------------------------------- HTTP client


class HttpError(OSError):
    """The server closed the connection or answered something we cannot parse."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One keep-alive HTTP/1.1 connection: just enough HTTP for our JSON routes, and cheap.

    ``http.client`` costs several times more CPU per request, and the load generator
    shares two cores with the server it measures.
    """

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"need http://host:port, got {base_url!r}")
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._prefix = f"Host: {self.host}:{self.port}\r\n".encode()

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock, self._buffer = None, b""

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def build(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> bytes:
        """The request's bytes; build once and :meth:`send` them many times."""
        lines = [f"{method} {path} HTTP/1.1\r\n".encode(), self._prefix]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}\r\n".encode())
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(b"Content-Type: application/json\r\n")
            lines.append(f"Content-Length: {len(body)}\r\n".encode())
        lines.append(b"\r\n")
        return b"".join(lines) + body

    def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        return self.send(self.build(method, path, body, headers))

    def send(self, raw: bytes) -> Response:
        """Send prepared request bytes; on a stale keep-alive connection, reconnect once."""
        reused = self._sock is not None
        try:
            return self._exchange(raw)
        except (HttpError, ConnectionError):
            self.close()
            if not reused:
                raise
        return self._exchange(raw)  # the server had closed an idle keep-alive connection

    def _exchange(self, raw: bytes) -> Response:
        if self._sock is None:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(raw)
        head = self._read_until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError):
            raise HttpError(f"bad status line {lines[0]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = self._read_exactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = self._read_chunked()
        else:
            body = self._read_to_close()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)

    def _recv(self) -> bytes:
        assert self._sock is not None  # noqa: S101 - set by _exchange
        data = self._sock.recv(65536)
        if not data:
            raise HttpError("connection closed by the server")
        return data

    def _read_until(self, marker: bytes) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            self._buffer += self._recv()
        head, self._buffer = self._buffer[:end], self._buffer[end + len(marker) :]
        return head

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._buffer += self._recv()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def _read_chunked(self) -> bytes:
        parts = []
        while True:
            size = int(self._read_until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                self._read_until(b"\r\n")  # no trailers from our servers
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            self._read_until(b"\r\n")

    def _read_to_close(self) -> bytes:
        data = self._buffer
        with contextlib.suppress(HttpError):
            while True:
                data += self._recv()
        self.close()
        return data


def auth_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {AUTH_TOKEN}"}


# ------------------------------------------------------------------------ load runs


@dataclass
class LoadResult:
    """What a load run saw: per-request latencies by outcome, and its wall time."""

    elapsed: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    ok_latencies: list[float] = field(default_factory=list)  # 200/206 only
    errors: Counter[str] = field(default_factory=Counter)  # client-side exceptions
    retry_sleeps: float = 0.0

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        return self.statuses[200] + self.statuses[206]

    def merge(self, other: LoadResult) -> None:
        self.elapsed = max(self.elapsed, other.elapsed)
        self.statuses.update(other.statuses)
        self.ok_latencies.extend(other.ok_latencies)
        self.errors.update(other.errors)
        self.retry_sleeps += other.retry_sleeps

    def to_json(self) -> dict[str, Any]:
        return {
            "elapsed": self.elapsed,
            "statuses": dict(self.statuses),
            "ok_latencies": self.ok_latencies,
            "errors": dict(self.errors),
            "retry_sleeps": self.retry_sleeps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LoadResult:
        return cls(
            elapsed=data["elapsed"],
            statuses=Counter({int(k): v for k, v in data["statuses"].items()}),
            ok_latencies=list(data["ok_latencies"]),
            errors=Counter(data["errors"]),
            retry_sleeps=data["retry_sleeps"],
        )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _retry_after(response: Response) -> float:
    try:
        return max(0.0, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def drive(
    base_url: str,
    *,
    clients: int,
    duration: float,
    next_request: Callable[[], tuple[str, str, bytes]],
    honour_retry_after: bool = True,
    timeout: float = 30.0,
) -> LoadResult:
    """``clients`` threads, each on its own keep-alive connection, send requests until
    ``duration`` seconds have passed (a request started before then is waited for).

    ``next_request()`` gives (method, path, body); it must be thread-safe. After a 429 a
    client sleeps ``Retry-After`` (never past the end) and sends the same request again.
    """
    result = LoadResult()
    lock = threading.Lock()
    start = time.monotonic()
    end = start + duration

    def client() -> None:
        local = LoadResult()
        latencies = local.ok_latencies
        statuses = local.statuses
        clock = time.monotonic
        with Connection(base_url, timeout=timeout) as conn:
            headers = auth_headers()
            raw: bytes | None = None
            while clock() < end:
                if raw is None:
                    method, path, body = next_request()
                    raw = conn.build(method, path, body, headers)
                began = clock()
                try:
                    response = conn.send(raw)
                except OSError as exc:
                    local.errors[type(exc).__name__] += 1
                    raw = None
                    time.sleep(0.05)
                    continue
                took = clock() - began
                statuses[response.status] += 1
                if response.status in (200, 206):
                    latencies.append(took)
                elif response.status == 429 and honour_retry_after:
                    pause = min(_retry_after(response), max(0.0, end - clock()))
                    local.retry_sleeps += pause
                    time.sleep(pause)
                    continue  # the same request again
                raw = None
        with lock:
            result.merge(local)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.0, end - time.monotonic()) + timeout + 5)
    result.elapsed = time.monotonic() - start
    if any(thread.is_alive() for thread in threads):
        result.errors["client thread did not finish"] += 1
    return result


def _cycling(requests: Sequence[tuple[str, str, bytes]]) -> Callable[[], tuple[str, str, bytes]]:
    # next() on an itertools.cycle is one C call: atomic under the GIL, so thread-safe.
    cycle = itertools.cycle(requests)
    return lambda: next(cycle)


def _drive_child(
    conn: Any,
    base_url: str,
    clients: int,
    duration: float,
    requests: Sequence[tuple[str, str, bytes]],
) -> None:
    try:
        result = drive(
            base_url, clients=clients, duration=duration, next_request=_cycling(requests)
        )
        conn.send(json.dumps(result.to_json()))
    finally:
        conn.close()


def drive_repeated(
    base_url: str,
    requests: Sequence[tuple[str, str, bytes]],
    *,
    clients: int,
    duration: float,
    procs: int = 1,
) -> LoadResult:
    """``requests`` round-robin, from ``clients`` connections in ``procs`` processes.

    Several processes keep the load generator off one GIL; the children are forked, run
    for ``duration`` and send their samples back through a pipe.
    """
    if procs <= 1:
        return drive(base_url, clients=clients, duration=duration, next_request=_cycling(requests))
    context = multiprocessing.get_context("fork")
    children = []
    try:
        for index in range(procs):
            share = clients // procs + (1 if index < clients % procs else 0)
            receive, send = context.Pipe(duplex=False)
            process = context.Process(
                target=_drive_child,
                args=(send, base_url, share, duration, list(requests)),
                daemon=True,
            )
            process.start()
            send.close()
            children.append((process, receive))
        merged = LoadResult()
        for _process, receive in children:
            if not receive.poll(duration + 40):
                raise RuntimeError("a load-generator process sent nothing back")
            merged.merge(LoadResult.from_json(json.loads(receive.recv())))
        return merged
    finally:
        for process, receive in children:
            receive.close()
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


# ------------------------------------------------------------------------- sandbox


def _http_json(url: str, method: str = "GET", payload: Any = None) -> Any:
    with Connection(url) as conn:
        body = b"" if payload is None else json.dumps(payload).encode()
        path = urlsplit(url).path or "/"
        query = urlsplit(url).query
        response = conn.request(method, path + (f"?{query}" if query else ""), body)
    if response.status != 200:
        raise RuntimeError(f"{method} {url} answered {response.status}: {response.body[:200]!r}")
    return response.json()


def sandbox_stats(sandbox_url: str) -> dict[str, Any]:
    result: dict[str, Any] = _http_json(f"{sandbox_url}/_sandbox/stats?calls=0")
    return result


def sandbox_reset(sandbox_url: str) -> None:
    """Clear the sandbox's call log and rate window (config and credentials stay)."""
    _http_json(f"{sandbox_url}/_sandbox/reset", "POST", {})


# -------------------------------------------------------------------------- phases


def measure_distinct(
    bff_url: str,
    sandbox_url: str,
    *,
    clients: int,
    duration: float,
    first_asin: int,
    stores: int = 1,
) -> dict[str, Any]:
    """Clients importing a fresh ASIN each time; products/s and what upstream saw.

    With ``stores`` 2 the links alternate between the two stores of :data:`STORES`,
    each served by its own credential (its own quota and sandbox window).
    """
    sandbox_reset(sandbox_url)
    numbers = itertools.count(first_asin)  # next() on a count is atomic under the GIL

    def next_request() -> tuple[str, str, bytes]:
        number = next(numbers)
        store = STORES[number % stores]
        return "POST", IMPORT_PATH, import_body(synthetic_asin(number), store)

    load = drive(bff_url, clients=clients, duration=duration, next_request=next_request)
    stats = sandbox_stats(sandbox_url)
    per_call: list[int] = stats["asins_per_call"]
    calls = stats["total_calls"]
    products = load.ok
    served_upstream = stats["asins_in_ok_calls"]
    return {
        "clients": clients,
        "duration": load.elapsed,
        "requests": load.requests,
        "products": products,
        "products_per_second": products / load.elapsed if load.elapsed else 0.0,
        "statuses": dict(sorted(load.statuses.items())),
        "local_429": load.statuses[429],
        "client_errors": dict(load.errors),
        "p50": percentile(load.ok_latencies, 50),
        "p95": percentile(load.ok_latencies, 95),
        "upstream_calls": calls,
        "upstream_calls_per_second": calls / load.elapsed if load.elapsed else 0.0,
        "asins_per_call": stats["avg_asins_per_call"],
        "full_calls": sum(1 for n in per_call if n >= 10),
        "calls_by_size": dict(sorted(Counter(per_call).items())),
        "upstream_429": stats["throttled_calls"],
        "max_calls_in_window": stats["max_calls_in_window"],
        "max_calls_in_window_by_credential": stats["max_calls_in_window_by_credential"],
        "stores": stores,
        "sandbox_rate": stats["rate"],
        "token_requests": stats["token_requests"],
        "cache_hit_rate": max(0, products - served_upstream) / products if products else 0.0,
    }


def warm_cache(bff_url: str, asins: Sequence[str], batch_size: int = 50) -> int:
    """Import ``asins`` through the batch route; the number answered with a product."""
    found = 0
    with Connection(bff_url, timeout=30) as conn:
        for start in range(0, len(asins), batch_size):
            urls = [f"https://www.amazon.com/dp/{a}" for a in asins[start : start + batch_size]]
            for _attempt in range(5):
                response = conn.request(
                    "POST", BATCH_PATH, json.dumps({"urls": urls}).encode(), auth_headers()
                )
                if response.status != 200:
                    raise RuntimeError(f"batch import answered {response.status}")
                results = response.json()["results"]
                if all(r["status"] in (200, 206) for r in results):
                    break
                time.sleep(1.2)  # a slot was not free in time; the cache kept the rest
            found += sum(1 for r in results if r["status"] in (200, 206))
    return found


def sequential_latency(
    bff_url: str, requests: Sequence[tuple[str, str, bytes]], rounds: int, warmup: int = 20
) -> list[list[float]]:
    """One client, one connection, the requests interleaved round after round (so drift
    in the machine's load hits all of them alike); latencies per request kind."""
    latencies: list[list[float]] = [[] for _ in requests]
    with Connection(bff_url) as conn:
        prepared = [conn.build(m, p, b, auth_headers()) for m, p, b in requests]
        for index in range(warmup + rounds):
            for kind, raw in enumerate(prepared):
                began = time.perf_counter()
                response = conn.send(raw)
                took = time.perf_counter() - began
                if response.status not in (200, 206):
                    raise RuntimeError(f"request {kind} answered {response.status}")
                if index >= warmup:
                    latencies[kind].append(took)
    return latencies


def measure_cache_hits(
    bff_url: str,
    sandbox_url: str,
    *,
    asins: int,
    rounds: int,
    clients: int,
    duration: float,
    procs: int,
) -> dict[str, Any]:
    """Cached imports against ``/healthz`` and the bare POST route, latency and throughput.

    Latency: one connection, the three requests interleaved round after round. Throughput:
    ``/healthz`` for ``duration``, then the bare route and the cached imports in two
    alternating halves each, so a change in the machine's load hits both alike.
    """
    hot = [synthetic_asin(CACHED_FIRST + n) for n in range(asins)]
    warmed = warm_cache(bff_url, hot)
    sandbox_reset(sandbox_url)
    health = [("GET", HEALTH_PATH, b"")]
    bare = [("POST", BARE_PATH, json.dumps({"asin": asin}).encode()) for asin in hot]
    cached = [("POST", IMPORT_PATH, import_body(asin)) for asin in hot]
    health_lat, bare_lat, hit_lat = sequential_latency(
        bff_url, [health[0], bare[0], cached[0]], rounds
    )
    health_load = drive_repeated(bff_url, health, clients=clients, duration=duration, procs=procs)
    bare_load, hit_load = LoadResult(), LoadResult()
    for _half in range(2):
        for requests, total in ((bare, bare_load), (cached, hit_load)):
            part = drive_repeated(
                bff_url, requests, clients=clients, duration=duration / 2, procs=procs
            )
            elapsed = total.elapsed + part.elapsed
            total.merge(part)
            total.elapsed = elapsed
    upstream = sandbox_stats(sandbox_url)["total_calls"]
    bare_rps = bare_load.ok / bare_load.elapsed
    hit_rps = hit_load.ok / hit_load.elapsed
    return {
        "cached_asins": warmed,
        "rounds": rounds,
        "health_p50": percentile(health_lat, 50),
        "health_p95": percentile(health_lat, 95),
        "bare_p50": percentile(bare_lat, 50),
        "bare_p95": percentile(bare_lat, 95),
        "hit_p50": percentile(hit_lat, 50),
        "hit_p95": percentile(hit_lat, 95),
        "latency_ratio": percentile(hit_lat, 50) / percentile(health_lat, 50),
        "bare_latency_ratio": percentile(hit_lat, 50) / percentile(bare_lat, 50),
        "clients": clients,
        "procs": procs,
        "health_rps": health_load.ok / health_load.elapsed,
        "health_load_p50": percentile(health_load.ok_latencies, 50),
        "bare_rps": bare_rps,
        "bare_load_p50": percentile(bare_load.ok_latencies, 50),
        "hit_rps": hit_rps,
        "bare_rps_ratio": hit_rps / bare_rps if bare_rps else math.inf,
        "hit_load_p50": percentile(hit_load.ok_latencies, 50),
        "hit_load_p95": percentile(hit_load.ok_latencies, 95),
        "hit_statuses": dict(sorted(hit_load.statuses.items())),
        "bare_statuses": dict(sorted(bare_load.statuses.items())),
        "health_statuses": dict(sorted(health_load.statuses.items())),
        "client_errors": dict(hit_load.errors + bare_load.errors + health_load.errors),
        "upstream_calls_during_hits": upstream,
    }


def process_rss_mb(pid: int) -> float:
    """Resident set size of a process on this machine, from /proc (NaN if unreadable)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return math.nan


def measure_memory(entries: int, timeout: float = 600) -> dict[str, Any]:
    """Run ``bench_cache_memory.py``; its table, and the shipped layout's figures."""
    completed = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(MEMORY_SCRIPT), "--entries", str(entries)],
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )
    output = completed.stdout.strip()
    shipped = re.search(
        r"^memory://\s+([\d.]+) MB\s+([\d.]+) MB\s+([\d.]+) MB\s+([\d,]+)", output, re.MULTILINE
    )
    total = re.search(r"memory:// total RSS ([\d.]+) MB", output)
    return {
        "entries": entries,
        "returncode": completed.returncode,
        "output": output,
        "stderr": completed.stderr.strip()[-2000:],
        "rss_before_mb": float(shipped.group(1)) if shipped else math.nan,
        "rss_after_mb": float(total.group(1)) if total else math.nan,
        "delta_mb": float(shipped.group(3)) if shipped else math.nan,
        "bytes_per_entry": int(shipped.group(4).replace(",", "")) if shipped else 0,
        "within_budget": completed.returncode == 0,
    }


# ------------------------------------------------------------------- orchestration


@dataclass
class Options:
    duration: float = 30.0
    clients: int = 50
    rate: int = 5
    workers: int = 2
    threads: int = 32
    max_wait: float | None = None  # AMAZON_MAX_WAIT_SECONDS; None keeps the default
    hit_asins: int = 100
    hit_rounds: int = 1000
    hit_clients: int = 16
    hit_duration: float = 10.0
    client_procs: int = 2
    memory_entries: int = 100_000
    stores: int = 1  # 2: links alternate between two stores on two credentials
    parts: tuple[str, ...] = ("coalesced", "cache", "baseline", "memory")

    @classmethod
    def quick(cls) -> Options:
        return cls(
            duration=5.0,
            clients=50,
            rate=5,
            workers=2,
            threads=32,
            hit_asins=20,
            hit_rounds=100,
            hit_clients=8,
            hit_duration=2.0,
            client_procs=2,
            memory_entries=10_000,
        )


def coalesced_config(options: Options) -> dict[str, Any]:
    """Our limiter matched to the sandbox's rate; margin and everything else default."""
    config: dict[str, Any] = {
        "AMAZON_RATE_LIMITS": f"{options.rate}/second;100000/day",
        # Every client may wait: the benchmark measures coalescing, not the waiting cap
        # (which by default refuses beyond half of each worker's threads).
        "AMAZON_MAX_WAITING": options.clients,
    }
    if options.max_wait is not None:
        config["AMAZON_MAX_WAIT_SECONDS"] = options.max_wait
    return config


def baseline_config(options: Options) -> dict[str, Any]:
    """The naive client: one ASIN per getItems call, no cache."""
    return {
        **coalesced_config(options),
        "AMAZON_MAX_ITEMS_PER_CALL": 1,
        "AMAZON_CACHE_TTL_SECONDS": 0,
    }


@contextlib.contextmanager
def redis_server() -> Iterator[Any]:
    """A private redis-server on 127.0.0.1 (the test suite's ``RedisServer``)."""
    from fixtures_redis import RedisServer

    with tempfile.TemporaryDirectory(prefix="arda-bench-redis-") as workdir:
        server = RedisServer(workdir=Path(workdir))
        try:
            server.start()
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def gunicorn_stack(options: Options, redis_url: str, config: Mapping[str, Any]) -> Iterator[Any]:
    from stack import run_stack

    handle = run_stack(
        workers=options.workers,
        threads=options.threads,
        rate=options.rate,
        storage="redis",
        redis_url=redis_url,
        config=config,
        # Keep-alive longer than a client's Retry-After pause, so connections are reused.
        gunicorn_args=["--keep-alive", "30"],
        second_store=options.stores > 1,
    )
    try:
        yield handle
    finally:
        handle.stop()


def run_all(options: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every phase, in order; the raw results (see :func:`render`)."""
    results: dict[str, Any] = {
        "options": dataclass_dict(options),
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "cpu_calibration_ms": cpu_calibration_ms(),
    }
    wanted = set(options.parts)
    with redis_server() as redis:
        log(f"redis-server on {redis.url}")
        if wanted & {"coalesced", "cache"}:
            with gunicorn_stack(options, redis.url, coalesced_config(options)) as stack:
                results["config"] = {k: v for k, v in stack.config.items() if "CREDENTIAL" not in k}
                if "coalesced" in wanted:
                    log(f"coalescing: {options.clients} clients x {options.duration:g} s ...")
                    results["coalesced"] = measure_distinct(
                        stack.bff_url,
                        stack.sandbox.url,
                        clients=options.clients,
                        duration=options.duration,
                        first_asin=COALESCED_FIRST,
                        stores=options.stores,
                    )
                if "cache" in wanted:
                    log(
                        f"cache hits: {options.hit_clients} clients x "
                        f"{options.hit_duration:g} s ..."
                    )
                    results["cache"] = measure_cache_hits(
                        stack.bff_url,
                        stack.sandbox.url,
                        asins=options.hit_asins,
                        rounds=options.hit_rounds,
                        clients=options.hit_clients,
                        duration=options.hit_duration,
                        procs=options.client_procs,
                    )
                results["worker_rss_mb"] = [process_rss_mb(pid) for pid in stack.worker_pids()]
        if "baseline" in wanted:
            redis.flush()  # the baseline starts with empty limiter windows and no cache
            log(f"naive baseline: {options.clients} clients x {options.duration:g} s ...")
            with gunicorn_stack(options, redis.url, baseline_config(options)) as stack:
                results["baseline"] = measure_distinct(
                    stack.bff_url,
                    stack.sandbox.url,
                    clients=options.clients,
                    duration=options.duration,
                    first_asin=BASELINE_FIRST,
                    stores=options.stores,
                )
    if "memory" in wanted:
        log(f"memory: {options.memory_entries:,} products ...")
        results["memory"] = measure_memory(options.memory_entries)
    results["loadavg_after"] = os.getloadavg()
    return results


def cpu_calibration_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 5): how fast this machine's
    cores are for Python right now, so numbers from two machines can be compared."""
    best = math.inf
    for _ in range(5):
        started = time.perf_counter()
        total = 0
        for number in range(1_000_000):
            total += number
        best = min(best, time.perf_counter() - started)
    return best * 1000


def dataclass_dict(options: Options) -> dict[str, Any]:
    return {name: getattr(options, name) for name in Options.__dataclass_fields__}


# -------------------------------------------------------------------------- report


def _ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.2f} ms"


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def targets(results: Mapping[str, Any]) -> list[tuple[str, bool, str]]:
    """(target, met, measured) for every target the results cover."""
    rows: list[tuple[str, bool, str]] = []
    coalesced, baseline = results.get("coalesced"), results.get("baseline")
    if coalesced:
        per_call = coalesced["asins_per_call"]
        rows.append(
            (f"ASINs per call >= {TARGET_ASINS_PER_CALL:g}", per_call >= 9, f"{per_call:.2f}")
        )
        rows.append(
            ("upstream 429s = 0", coalesced["upstream_429"] == 0, str(coalesced["upstream_429"]))
        )
    if coalesced and baseline:
        speedup = _ratio(coalesced["products_per_second"], baseline["products_per_second"])
        rows.append(
            (f"products/s >= {TARGET_SPEEDUP:g}x baseline", speedup >= 8, f"{speedup:.1f}x")
        )
        rows.append(
            (
                "baseline upstream 429s = 0",
                baseline["upstream_429"] == 0,
                str(baseline["upstream_429"]),
            )
        )
    cache = results.get("cache")
    if cache:
        ratio = cache["latency_ratio"]
        rows.append(
            (
                f"cache-hit p50 <= {TARGET_HIT_LATENCY_RATIO:g}x /healthz",
                ratio <= 2,
                f"{ratio:.2f}x",
            )
        )
        if "bare_latency_ratio" in cache:
            rows.append(
                (
                    f"cache-hit p50 <= {TARGET_HIT_VS_BARE_P50:g}x bare POST route",
                    cache["bare_latency_ratio"] <= TARGET_HIT_VS_BARE_P50,
                    f"{cache['bare_latency_ratio']:.2f}x",
                )
            )
            rows.append(
                (
                    f"cache-hit req/s >= {TARGET_HIT_VS_BARE_RPS:g}x bare POST route",
                    cache["bare_rps_ratio"] >= TARGET_HIT_VS_BARE_RPS,
                    f"{cache['bare_rps_ratio']:.2f}x",
                )
            )
        rows.append(
            (
                f"cache hits >= {TARGET_HIT_RPS:,.0f} req/s",
                cache["hit_rps"] >= 1000,
                f"{cache['hit_rps']:,.0f}/s",
            )
        )
        rows.append(
            (
                "no upstream call for a cache hit",
                cache["upstream_calls_during_hits"] == 0,
                str(cache["upstream_calls_during_hits"]),
            )
        )
    memory = results.get("memory")
    if memory:
        total, where = memory["rss_after_mb"], "bare interpreter"
        workers = [mb for mb in results.get("worker_rss_mb") or [] if not math.isnan(mb)]
        if workers and not math.isnan(memory["delta_mb"]):
            total, where = max(workers) + memory["delta_mb"], "gunicorn worker + cache"
        rows.append(
            (
                f"{memory['entries']:,} cached products < 200 MB RSS",
                bool(memory["within_budget"]) and total < 200,
                f"{total:.1f} MB ({where})",
            )
        )
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b else math.inf


def render(results: Mapping[str, Any]) -> str:
    """The report: one table per part, then the targets."""
    o = results["options"]
    out: list[str] = []
    add = out.append
    coalesced, baseline = results.get("coalesced"), results.get("baseline")
    load = [results.get("loadavg_before"), results.get("loadavg_after")]
    add(
        f"machine: {results.get('cpus')} CPUs, shared by gunicorn, Redis, the sandbox and the "
        "load generator; 1-min load average before/after: "
        + "/".join(f"{value[0]:.1f}" if value else "?" for value in load)
        + (
            f"; 10^6-iteration Python loop: {results['cpu_calibration_ms']:.0f} ms"
            if "cpu_calibration_ms" in results
            else ""
        )
    )
    add("")
    if coalesced:
        add(
            f"1. Distinct ASINs - {o['clients']} clients for {o['duration']:g} s; sandbox "
            f"{o['rate']} calls/s; AMAZON_RATE_LIMITS {o['rate']}/second;100000/day (margin "
            f"default); gunicorn {o['workers']} workers x {o['threads']} gthread threads; "
            "Redis limiter + cache"
        )
        add(f"   {'':<34}{'coalesced':>14}{'naive baseline':>16}{'ratio':>9}")
        base = baseline or {}

        def row(label: str, key: str, fmt: Callable[[Any], str], ratio: bool = False) -> None:
            a = coalesced.get(key)
            b = base.get(key)
            r = f"{_ratio(a, b):.1f}x" if ratio and b is not None else ""
            add(f"   {label:<34}{fmt(a):>14}{(fmt(b) if b is not None else '-'):>16}{r:>9}")

        row("products/second", "products_per_second", lambda v: f"{v:.2f}", ratio=True)
        row("products imported", "products", lambda v: f"{v:,}", ratio=True)
        row("upstream getItems calls", "upstream_calls", lambda v: f"{v:,}")
        row("upstream calls/second", "upstream_calls_per_second", lambda v: f"{v:.2f}")
        row("ASINs per call (avg)", "asins_per_call", lambda v: f"{v:.2f}")
        row("calls carrying 10 ASINs", "full_calls", lambda v: f"{v:,}")
        row("p50 latency", "p50", _ms)
        row("p95 latency", "p95", _ms)
        row("upstream 429s", "upstream_429", lambda v: f"{v:,}")
        row("max calls in any sandbox window", "max_calls_in_window", lambda v: f"{v:,}")
        row("local 429s (client waits Retry-After)", "local_429", lambda v: f"{v:,}")
        row("cache hit rate", "cache_hit_rate", lambda v: f"{v:.0%}")
        add(f"   batch sizes (ASINs: calls), coalesced: {coalesced['calls_by_size']}")
        if coalesced.get("stores", 1) > 1:
            add(
                f"   two stores on two credentials; max calls in a window per credential: "
                f"{coalesced['max_calls_in_window_by_credential']}"
            )
        ceiling = 10 * o["rate"]
        add(
            f"   ceiling at {o['rate']} calls/s x 10 ASINs = {ceiling} products/s; the 0.15 s "
            f"margin makes our limiter allow {o['rate']} calls per 1.15 s = "
            f"{o['rate'] / 1.15 * 10:.1f} products/s at most"
        )
        add("")
    cache = results.get("cache")
    if cache:
        add(
            f"2. Cache hits - same server setup; {cache['cached_asins']} ASINs cached in Redis "
            f"(upstream calls during the hit runs: {cache['upstream_calls_during_hits']})"
        )
        add(
            f"   {'':<34}{'/healthz':>10}{'bare POST':>11}{'cached import':>15}"
            f"{'vs /healthz':>13}{'vs bare':>9}"
        )

        def hit_row(label: str, health: float, bare: float, hit: float, fmt: Any) -> None:
            add(
                f"   {label:<34}{fmt(health):>10}{fmt(bare):>11}{fmt(hit):>15}"
                f"{_ratio(hit, health):>12.2f}x{_ratio(hit, bare):>8.2f}x"
            )

        nan = math.nan
        hit_row(
            "p50 latency, 1 sequential client",
            cache["health_p50"],
            cache.get("bare_p50", nan),
            cache["hit_p50"],
            _ms,
        )
        hit_row(
            "p95 latency, 1 sequential client",
            cache["health_p95"],
            cache.get("bare_p95", nan),
            cache["hit_p95"],
            _ms,
        )
        hit_row(
            f"req/s, {cache['clients']} clients in {cache['procs']} procs",
            cache["health_rps"],
            cache.get("bare_rps", nan),
            cache["hit_rps"],
            lambda v: "-" if math.isnan(v) else f"{v:,.0f}",
        )
        hit_row(
            "p50 latency under that load",
            cache["health_load_p50"],
            cache.get("bare_load_p50", nan),
            cache["hit_load_p50"],
            _ms,
        )
        add(
            f"   statuses: /healthz {cache['health_statuses']}, bare "
            f"{cache.get('bare_statuses', {})}, import {cache['hit_statuses']}"
        )
        add("")
    memory = results.get("memory")
    if memory:
        add(f"3. Memory - benchmarks/bench_cache_memory.py --entries {memory['entries']}")
        for line in memory["output"].splitlines():
            add(f"   {line}")
        if memory["returncode"] not in (0, 1):
            add(f"   (failed, exit {memory['returncode']}): {memory['stderr']}")
        workers = [mb for mb in results.get("worker_rss_mb") or [] if not math.isnan(mb)]
        if workers and not math.isnan(memory["delta_mb"]):
            biggest = max(workers)
            add(
                f"   a gunicorn worker of part 1/2 (app loaded, Redis cache) holds "
                f"{biggest:.1f} MB RSS; plus {memory['entries']:,} products in memory:// "
                f"({memory['delta_mb']:.1f} MB) = {biggest + memory['delta_mb']:.1f} MB per worker"
            )
        add("")
    rows = targets(results)
    if rows:
        add("Targets")
        for name, ok, measured in rows:
            add(f"   {_verdict(ok):<7} {name:<44} {measured}")
    errors = {
        phase: results[phase].get("client_errors")
        for phase in ("coalesced", "baseline", "cache")
        if phase in results and results[phase].get("client_errors")
    }
    if errors:
        add(f"client-side errors: {errors}")
    return "\n".join(out)


# ---------------------------------------------------------------------------- main


class _TimeLimit(Exception):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one interruption: let cleanup finish
    raise _TimeLimit("the benchmark ran past --time-limit; everything it started is stopped")


def _on_term(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.alarm(0)
    raise KeyboardInterrupt


def parse_args(argv: Sequence[str] | None) -> tuple[Options, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run (~40 s)")
    parser.add_argument("--duration", type=float, help="seconds per distinct-ASIN run (30)")
    parser.add_argument("--clients", type=int, help="concurrent clients, distinct ASINs (50)")
    parser.add_argument("--rate", type=int, help="sandbox getItems calls/second (5)")
    parser.add_argument("--workers", type=int, help="gunicorn workers (2)")
    parser.add_argument("--threads", type=int, help="gthread threads per worker (32)")
    parser.add_argument("--max-wait", type=float, help="AMAZON_MAX_WAIT_SECONDS (default 3)")
    parser.add_argument("--hit-clients", type=int, help="connections for cache-hit load (16)")
    parser.add_argument("--hit-duration", type=float, help="seconds per cache-hit load (10)")
    parser.add_argument("--client-procs", type=int, help="load-generator processes (2)")
    parser.add_argument("--memory-entries", type=int, help="products for the memory run")
    parser.add_argument(
        "--stores",
        type=int,
        choices=(1, 2),
        help="1 (default) or 2: links alternate between US and UK, each on its own credential",
    )
    parser.add_argument(
        "--parts",
        default="coalesced,cache,baseline,memory",
        help="comma-separated subset of: coalesced,cache,baseline,memory",
    )
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--time-limit", type=float, default=900, help="stop everything after this (s)"
    )
    args = parser.parse_args(argv)
    options = Options.quick() if args.quick else Options()
    for name in (
        "duration",
        "clients",
        "rate",
        "workers",
        "threads",
        "max_wait",
        "hit_clients",
        "hit_duration",
        "client_procs",
        "memory_entries",
        "stores",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(options, name, value)
    parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
    unknown = set(parts) - set(Options.parts)
    if unknown or not parts:
        parser.error(f"--parts: unknown {sorted(unknown)}; choose from {list(Options.parts)}")
    options.parts = parts
    if options.rate < 1 or options.clients < 1 or options.workers < 1 or options.threads < 1:
        parser.error("--rate, --clients, --workers and --threads must be >= 1")
    return options, args


def main(argv: Sequence[str] | None = None) -> int:
    options, args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(max(1, int(args.time_limit)))
    try:
        results = run_all(options, log=lambda text: print(text, file=sys.stderr, flush=True))
    except _TimeLimit as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything the benchmark started is stopped", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
    print(render(results), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if args.check and not all(ok for _, ok, _ in targets(results)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
