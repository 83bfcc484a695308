"""Memory cost of the ``memory://`` product cache (run by ``tox -e bench``; not a test).

Inserts N distinct, realistic product records (default 100,000, ~1.5 KB of JSON each)
and reports the process's resident set size (``VmRSS`` from ``/proc/self/status``)
before and after, per entry, for three layouts:

* ``dict``       — a plain ``{key: record}`` dict of dicts: the baseline;
* ``json``       — ``MemoryCache(compress=False)``: compact JSON bytes;
* ``memory://``  — ``MemoryCache()`` as shipped: deflate with a preset dictionary.

Each layout runs in a fresh interpreter so one's freed memory cannot flatter the next.
Also reported: the average stored payload and the cost of one ``get`` (decompress, parse,
copy). Exits non-zero if the shipped layout exceeds the budget of 200 MB RSS per worker.

Records are random but shaped like ours (docs/api.md): pseudo-English words from a
4,000-word vocabulary, so text compresses about like real titles and feature bullets
(no more, since no record repeats another's sentences). The RSS delta includes the key
strings (``www.amazon.com:B0…``), which every layout needs, and a list of the keys kept
for the ``get`` timing (0.8 MB).

    python benchmarks/bench_cache_memory.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUDGET_MB = 200.0
LAYOUTS = ("dict", "json", "memory://")

_ONSETS = [*"bcdfghlmnprstvw", "br", "ch", "cl", "dr", "fl", "gr", "pl", "pr", "sh", "st", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "io", "ou", "oo"]
_CODAS = ["", "", "n", "r", "s", "t", "l", "ck", "nd", "ng", "st", "ss", "x"]
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-"


def rss_kib() -> int:
    """Resident set size in KiB, from /proc (no psutil needed)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def vocabulary(rng: random.Random, size: int = 4000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        syllables = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        words.add(
            "".join(
                rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                for _ in range(syllables)
            )
        )
    return sorted(words)


def sentence(rng: random.Random, words: list[str], low: int, high: int) -> str:
    return " ".join(rng.choices(words, k=rng.randint(low, high))).capitalize()


def product_record(rng: random.Random, words: list[str]) -> dict[str, Any]:
    """One record as our lookup layer caches it (every field present, some null)."""
    asin = "B0" + "".join(rng.choices(_ALNUM[:26] + _ALNUM[52:62], k=8))

    def image() -> str:
        name = "".join(rng.choices(_ALNUM, k=11))
        return f"https://m.media-amazon.com/images/I/{name}._SL500_.jpg"

    amount = round(rng.uniform(3, 300), 2)
    units = rng.choice([None, 1, 2, 4, 6, 12, 24])
    images = [image() for _ in range(rng.randint(2, 6))]
    return {
        "asin": asin,
        "marketplace": "www.amazon.com",
        "detailPageUrl": f"https://www.amazon.com/dp/{asin}?tag=arda-20",
        "title": sentence(rng, words, 10, 22),
        "brand": sentence(rng, words, 1, 2),
        "manufacturer": sentence(rng, words, 1, 3),
        "imageUrl": images[0],
        "images": images,
        "price": {"amount": amount, "currency": "USD", "display": f"${amount:,.2f}"},
        "unitCount": units,
        "unitPrice": ({"amount": round(amount / units, 2), "currency": "USD"} if units else None),
        "upc": "".join(rng.choices("0123456789", k=12)),
        "ean": rng.choice([None, "".join(rng.choices("0123456789", k=13))]),
        "features": [sentence(rng, words, 8, 20) for _ in range(rng.randint(3, 5))],
        "availability": rng.choice(["In Stock", "Only 3 left in stock - order soon.", None]),
        "minOrderQuantity": 1,
        "missingFields": [],
        "retrievedAt": f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
    }


def measure(layout: str, entries: int) -> dict[str, Any]:
    """Runs inside the child interpreter."""
    from arda_amazon_bp.cache import MemoryCache

    rng = random.Random(20261127)  # noqa: S311 - reproducible test data, not secrets
    words = vocabulary(rng)
    cache = None
    baseline: dict[str, dict[str, Any]] = {}
    if layout != "dict":
        cache = MemoryCache(entries, compress=layout == "memory://")
    gc.collect()
    before = rss_kib()
    json_bytes = 0
    keys = []
    for _ in range(entries):
        record = product_record(rng, words)
        key = f"www.amazon.com:{record['asin']}"
        keys.append(key)
        json_bytes += len(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
        if cache is None:
            baseline[key] = record
        else:
            cache.set(key, record, 3600)
    gc.collect()
    after = rss_kib()
    result: dict[str, Any] = {
        "layout": layout,
        "entries": entries,
        "before_kib": before,
        "after_kib": after,
        "avg_json_bytes": json_bytes / entries,
    }
    if cache is not None:
        if len(cache) != entries:
            raise RuntimeError("nothing may be evicted at exactly max_entries")
        payloads = [node.payload for node in cache._data.values()]
        result["avg_payload_bytes"] = sum(map(len, payloads)) / len(payloads)
        sample = rng.sample(keys, min(20_000, entries))
        started = time.perf_counter()
        misses = sum(cache.get(key) is None for key in sample)
        if misses:
            raise RuntimeError(f"{misses} unexpected misses")
        result["get_us"] = (time.perf_counter() - started) / len(sample) * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--layout", choices=LAYOUTS, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.layout:
        print(json.dumps(measure(args.layout, args.entries)))
        return 0

    results = []
    for layout in LAYOUTS:
        child = subprocess.run(  # noqa: S603 - our own script, fixed arguments
            [sys.executable, __file__, "--entries", str(args.entries), "--layout", layout],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            sys.stderr.write(child.stderr)
            return child.returncode
        results.append(json.loads(child.stdout.strip().splitlines()[-1]))

    base = results[0]
    base_per_entry = (base["after_kib"] - base["before_kib"]) * 1024 / base["entries"]
    print(
        f"{args.entries:,} product records, average {base['avg_json_bytes']:,.0f} bytes "
        "of compact JSON each"
    )
    print(
        f"{'layout':<10} {'RSS before':>11} {'RSS after':>10} {'delta':>9} "
        f"{'bytes/entry':>12} {'vs dict':>8} {'payload':>8} {'get':>8}"
    )
    for r in results:
        delta_kib = r["after_kib"] - r["before_kib"]
        per_entry = delta_kib * 1024 / r["entries"]
        payload = f"{r['avg_payload_bytes']:,.0f} B" if "avg_payload_bytes" in r else "-"
        get = f"{r['get_us']:.1f} µs" if "get_us" in r else "-"
        print(
            f"{r['layout']:<10} {r['before_kib'] / 1024:>8.1f} MB {r['after_kib'] / 1024:>7.1f} MB "
            f"{delta_kib / 1024:>6.1f} MB {per_entry:>12,.0f} {per_entry / base_per_entry:>7.2f}x "
            f"{payload:>8} {get:>8}"
        )
    shipped = results[-1]
    total_mb = shipped["after_kib"] / 1024
    verdict = "OK" if total_mb < BUDGET_MB else "OVER BUDGET"
    print(f"memory:// total RSS {total_mb:.1f} MB; budget {BUDGET_MB:.0f} MB per worker: {verdict}")
    return 0 if total_mb < BUDGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
