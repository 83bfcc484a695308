"""The demo: the sandbox Creators API and the example BFF, both on 127.0.0.1.

    python3 -m tox -e demo            # or: python examples/demo.py [--port 5000]

Prints a ready-to-paste ``curl`` and serves until Ctrl-C. Short links are resolved
(``AMAZON_SHORT_LINKS = resolve``) against the sandbox's shortener routes, so
``https://a.co/d/3V4ITBv`` imports the demo product. Everything stays on loopback:
the BFF talks to the sandbox exactly as it would talk to Amazon (OAuth2 token, then
``getItems``). The sandbox and its app config come from ``arda_amazon_bp.testing``, the
same code a host's tests use (docs/testing-your-integration.md): its demo credentials
travel in the ``config`` credentials backend, so no environment variable is needed.

Two stores are served (``AMAZON_MARKETPLACES``, docs/configuration.md "Several stores"):
``www.amazon.com`` on the demo NA credential and ``www.amazon.co.uk`` on the demo EU
credential (3.2), each with its own partner tag.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import example_bff
from flask import Flask
from werkzeug.serving import make_server

from arda_amazon_bp.testing import EXAMPLE_ASIN, running_sandbox
from arda_amazon_bp.testing.sandbox import SandboxConfig

DEMO_ASIN = EXAMPLE_ASIN
#: A share link the sandbox's shortener redirects to DEMO_ASIN (one hop).
DEMO_SHORT_LINK = "https://a.co/d/3V4ITBv"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=5000, help="BFF port on 127.0.0.1")
    parser.add_argument("--sandbox-rate", type=float, default=1.0, help="sandbox calls/second")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    with running_sandbox(SandboxConfig(rate=args.sandbox_rate)) as sandbox:
        # Short links are resolved, against the sandbox's shortener routes.
        app = example_bff.create_app(
            {
                **sandbox.stores_config(),
                "AMAZON_SHORT_LINKS": "resolve",
                "AMAZON_SHORT_LINK_BASE_URL": sandbox.url,
            }
        )
        return serve(app, args.port, sandbox.url)


def serve(app: Flask, port: int, sandbox_url: str) -> int:
    """Serve the BFF on 127.0.0.1 until Ctrl-C, after printing a ready-to-paste curl."""
    server = make_server("127.0.0.1", port, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    token = example_bff.DEFAULT_DEMO_TOKEN
    has_metrics = "prometheus_metrics" in app.view_functions  # the prometheus extra
    metrics_line = f"Prometheus metrics on {base}/metrics\n" if has_metrics else ""
    print(
        f"\nsandbox Creators API on {sandbox_url}\n"
        f"example BFF on {base}  (OpenAPI: {base}/openapi.json)\n"
        f"{metrics_line}\n"
        f"Short links resolve against the sandbox: put {DEMO_SHORT_LINK} (or share\n"
        f'text such as "Check out this deal on Amazon: {DEMO_SHORT_LINK}") in "url".\n'
        "Two stores are served, each with its own credential and partner tag: put\n"
        f'https://www.amazon.co.uk/dp/{DEMO_ASIN} in "url" for the UK one.\n\n'
        "Try:\n"
        f"  curl -s -X POST {base}/api/amazon/import \\\n"
        f"    -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        f'    -d \'{{"url": "https://www.amazon.com/dp/{DEMO_ASIN}?th=1"}}\'\n\n'
        "Ctrl-C stops.\n",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
