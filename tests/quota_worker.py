"""One "process" of the multi-process quota tests (run by tests/test_quota.py).

Usage: ``python quota_worker.py <storage-uri> <limits> <margin> <seconds> <key>``. Prints
``ready``, waits for a line on stdin (so every worker starts together), then takes slots
for ``seconds`` and prints ``{"times": [...], "refused": n}``: the moment each
``acquire`` returned, and how many were refused.
"""

from __future__ import annotations

import json
import sys
import time

from arda_amazon_bp.config import Settings
from arda_amazon_bp.errors import AmazonImportError
from arda_amazon_bp.quota import Quota


def main() -> None:
    uri, limits, margin, seconds, key = sys.argv[1:6]
    quota = Quota(
        Settings.from_config(
            {
                "AMAZON_RATE_LIMIT_STORAGE_URI": uri,
                "AMAZON_RATE_LIMITS": limits,
                "AMAZON_RATE_MARGIN_SECONDS": float(margin),
                "AMAZON_MAX_WAIT_SECONDS": 5,
            }
        )
    )
    quota.status(key)  # connect before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    times: list[float] = []
    refused = 0
    end = time.time() + float(seconds)
    while time.time() < end:
        try:
            quota.acquire(key)
        except AmazonImportError:
            refused += 1
            continue
        times.append(time.time())
    quota.close()
    print(json.dumps({"times": times, "refused": refused}), flush=True)


if __name__ == "__main__":
    main()
