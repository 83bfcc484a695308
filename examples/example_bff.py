"""An example host BFF: the five lines a BFF team adds, plus a demo auth hook.

Run it through ``examples/demo.py`` (which also starts the sandbox Creators API), or
under gunicorn: ``gunicorn --chdir examples 'example_bff:create_app()'`` with the
``AMAZON_*`` settings in the environment.
"""

from __future__ import annotations

import hmac
import importlib.util
import json
import os
from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, Request, jsonify, request
from flask_smorest import Api

from arda_amazon_bp import AmazonImport, hookimpl

#: The bearer token the demo BFF accepts (a real BFF checks its own session or JWT).
DEMO_TOKEN_ENV = "EXAMPLE_BFF_TOKEN"
DEFAULT_DEMO_TOKEN = "demo-token"
#: More demo users, as a JSON object ``{"<token>": "<user id>"}`` (per-user budget demos).
DEMO_USERS_ENV = "EXAMPLE_BFF_USERS"


class DemoAuth:
    """Accepts ``Authorization: Bearer <EXAMPLE_BFF_TOKEN>`` (user ``demo``) and the tokens
    of ``EXAMPLE_BFF_USERS``; stands in for the BFF's auth."""

    def __init__(self, token: str, users: Mapping[str, str] | None = None) -> None:
        self._users = {token: "demo", **(users or {})}

    @hookimpl
    def arda_amazon_authenticate(self, request: Request) -> dict[str, str] | None:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        for token, user in self._users.items():
            if hmac.compare_digest(presented.strip(), token):
                return {"id": user}  # "id": the per-user budget's key (docs/plugins.md)
        return None


#: A bare POST route that parses a small JSON body and answers a product-sized (~1 KB)
#: JSON object from memory: what a cached import is measured against.
BARE_PRODUCT_PATH = "/_bench/bare-product"
BARE_PRODUCT: dict[str, Any] = {
    "asin": "B0BARE0000",
    "availability": "In Stock",
    "brand": "Synthline",
    "detailPageUrl": "https://www.amazon.com/dp/B0BARE0000?tag=ardademo-20",
    "ean": "0084100001006",
    "features": ["Synthetic item for load tests", "Not a real product"],
    "imageUrl": "https://m.media-amazon.com/images/I/51SYN00001L._SL500_.jpg",
    "images": ["https://m.media-amazon.com/images/I/51SYN00001L._SL500_.jpg"],
    "manufacturer": "Synthline Test Goods",
    "marketplace": "www.amazon.com",
    "minOrderQuantity": 1,
    "missingFields": [],
    "notices": [],
    "price": {"amount": 5.0, "currency": "USD", "display": "$5.00"},
    "retrievedAt": "2026-01-01T00:00:00Z",
    "title": "Synthetic Load-Test Shelf Label Holder, Pack of 2",
    "unitCount": 2,
    "unitPrice": {"amount": 2.5, "currency": "USD"},
    "upc": "084100001006",
}


#: Where the Swagger UI page and its (locally served) assets live.
SWAGGER_UI_PATH = "/swagger-ui"
SWAGGER_UI_ASSETS = "/_swagger-ui/"


def serve_swagger_ui(app: Flask) -> None:
    """Serve a Swagger UI for the OpenAPI document, its assets from this app (no CDN).

    The assets come from the ``swagger-ui-bundle`` package (a dev dependency); without
    it the app simply has no Swagger UI. Hosts may reach only Amazon and loopback, so
    nothing on the page may load from another host.
    """
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return
    app.register_blueprint(
        Blueprint(
            "swagger_ui_assets",
            __name__,
            static_folder=swagger_ui_path,
            static_url_path=SWAGGER_UI_ASSETS.rstrip("/"),
        )
    )
    app.config.setdefault("OPENAPI_SWAGGER_UI_PATH", SWAGGER_UI_PATH)
    app.config.setdefault("OPENAPI_SWAGGER_UI_URL", SWAGGER_UI_ASSETS)
    # validatorUrl=None: never ask an online validator about the document.
    app.config.setdefault("OPENAPI_SWAGGER_UI_CONFIG", {"validatorUrl": None})


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        API_TITLE="Example BFF",
        API_VERSION="1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.config.from_mapping(config or {})
    serve_swagger_ui(app)  # before Api(app): it reads the OPENAPI_SWAGGER_UI_* keys
    api = Api(app)  # the host's own Api: our route joins its OpenAPI document

    amazon = AmazonImport(app, api)
    users = json.loads(os.environ.get(DEMO_USERS_ENV) or "{}")
    amazon.plugin_manager.register(
        DemoAuth(os.environ.get(DEMO_TOKEN_ENV, DEFAULT_DEMO_TOKEN), users),
        name="example-bff-auth",
    )

    @app.get("/healthz")
    def healthz() -> Any:  # a bare JSON route: the benchmark's baseline
        return jsonify(ok=True)

    if importlib.util.find_spec("prometheus_client") is not None:  # the prometheus extra

        @app.get("/metrics")
        def prometheus_metrics() -> Any:  # every worker's under gunicorn: docs/metrics.md
            from arda_amazon_bp.metrics import exposition

            body, content_type = exposition()
            return body, 200, {"Content-Type": content_type}

    @app.post(BARE_PRODUCT_PATH)
    def bare_product() -> Any:  # the cache-hit benchmark's baseline (docs/performance.md)
        body = request.get_json(silent=True)
        asin = body.get("asin") if isinstance(body, dict) else None
        return jsonify({**BARE_PRODUCT, "asin": asin if isinstance(asin, str) else "B0BARE0000"})

    return app
