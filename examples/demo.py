"""The demo: the sandbox Creators API and the example BFF, both on 127.0.0.1.

    python3 -m tox -e demo            # or: python examples/demo.py [--port 5000]

Prints a ready-to-paste ``curl`` and serves until Ctrl-C. Short links are resolved
(``AMAZON_SHORT_LINKS = resolve``) against the sandbox's shortener routes, so
``https://a.co/d/3V4ITBv`` imports the demo product. Everything stays on loopback:
the BFF talks to the sandbox exactly as it would talk to Amazon (OAuth2 token, then
``getItems``), with the sandbox's demo credentials in the ``env`` backend's variables.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import creators_sandbox
import example_bff
from werkzeug.serving import make_server

DEMO_ASIN = "B0C7NTRL01"
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

    sandbox_config = creators_sandbox.SandboxConfig(rate=args.sandbox_rate)
    sandbox_url, stop_sandbox = creators_sandbox.serve_in_thread(
        creators_sandbox.create_sandbox_app(sandbox_config)
    )
    credential = sandbox_config.credentials[0]
    os.environ.update(
        {
            "AMAZON_CREATORS_CREDENTIAL_ID": credential.credential_id,
            "AMAZON_CREATORS_CREDENTIAL_SECRET": credential.credential_secret,
            "AMAZON_CREATORS_VERSION": "3.1",
            "AMAZON_CREATORS_PARTNER_TAG": sorted(sandbox_config.partner_tags)[0],
        }
    )
    app = example_bff.create_app(
        {
            "AMAZON_CREATORS_API_HOST": sandbox_url,
            "AMAZON_TOKEN_URL": f"{sandbox_url}/auth/o2/token",
            # Short links are resolved, against the sandbox's shortener routes.
            "AMAZON_SHORT_LINKS": "resolve",
            "AMAZON_SHORT_LINK_BASE_URL": sandbox_url,
        }
    )
    server = make_server("127.0.0.1", args.port, app, threaded=True)
    base = f"http://127.0.0.1:{server.server_port}"
    token = example_bff.DEFAULT_DEMO_TOKEN
    print(
        f"\nsandbox Creators API on {sandbox_url}\n"
        f"example BFF on {base}  (OpenAPI: {base}/openapi.json)\n\n"
        f"Short links resolve against the sandbox: put {DEMO_SHORT_LINK} (or share\n"
        f'text such as "Check out this deal on Amazon: {DEMO_SHORT_LINK}") in "url".\n\n'
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
        server.shutdown()
        stop_sandbox()
    return 0


if __name__ == "__main__":
    sys.exit(main())
