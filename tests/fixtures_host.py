"""A realistic host BFF, built the way a host team builds theirs, with our extension inside.

``make_host(openapi_version="3.1.0", default_limits="5 per minute", **config)`` runs an
app factory that has, besides ``AmazonImport``:

* its own flask-smorest ``Api`` and a blueprint of its own (``GET /api/things``);
* its own error handlers: ``HostError`` -> 418 in the host's format, and a catch-all
  ``Exception`` handler (many hosts have one);
* a ``before_request`` that aborts: ``X-Maintenance: 1`` -> ``abort(503)``,
  ``X-Host-Error: 1`` -> ``raise HostError``;
* a global JWT check (flask-jwt-extended's ``verify_jwt_in_request``) on every
  ``/api/`` request except CORS preflights, and our auth hook reading the same JWT;
* flask-cors for ``https://app.example``;
* Flask-Limiter with default limits on every route, headers on (``Retry-After``).

One module-level ``AmazonImport`` serves every app (as in a host's ``extensions.py``);
the auth hook is registered per app inside the factory, and every app is closed with
``amazon.close(app)`` after the test. Amazon itself is the ``amazon`` requests-mock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fixtures_app import FAST_CONFIG
from flask import Flask, Request, abort, jsonify, request
from flask_cors import CORS
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_jwt_identity,
    verify_jwt_in_request,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api, Blueprint

from arda_amazon_bp import AmazonImport, hookimpl

ORIGIN = "https://app.example"
JWT_SECRET = "host-jwt-signing-key-for-tests-only-0123456789"

#: The host's one extension object, shared by every app its factory builds.
amazon = AmazonImport()
#: The host's users by JWT identity; a valid token of anyone else is not a user.
USERS = {"user-1": {"id": "user-1", "name": "Ada"}}


class HostError(Exception):
    """An exception of the host's own, with an app-wide handler."""


class JwtAuth:
    """Our auth hook as a JWT host writes it: the principal is the token's user."""

    @hookimpl
    def arda_amazon_authenticate(self, request: Request) -> Any | None:
        verify_jwt_in_request()  # raises the JWT extension's own errors (host-handled)
        return USERS.get(get_jwt_identity())


def create_host(
    *, openapi_version: str = "3.1.0", default_limits: str = "5 per minute", **config: Any
) -> Flask:
    """The host's app factory."""
    app = Flask("host_bff")
    app.config.update(
        API_TITLE="Host BFF",
        API_VERSION="1",
        OPENAPI_VERSION=openapi_version,
        OPENAPI_URL_PREFIX="/",
        JWT_SECRET_KEY=JWT_SECRET,
        RATELIMIT_HEADERS_ENABLED=True,
        TESTING=True,
    )
    app.config.update({**FAST_CONFIG, **config})

    api = Api(app)
    things = Blueprint("things", __name__, url_prefix="/api/things")

    @things.route("", methods=["GET", "POST"])
    def list_things() -> Any:
        return {"things": []}

    api.register_blueprint(things)

    JWTManager(app)
    CORS(app, origins=[ORIGIN], supports_credentials=True)
    Limiter(get_remote_address, app=app, default_limits=[default_limits], storage_uri="memory://")

    @app.before_request
    def host_checks() -> None:
        if request.headers.get("X-Maintenance"):
            abort(503, description="Down for maintenance")
        if request.headers.get("X-Host-Error"):
            raise HostError("the host's own failure")
        if request.path.startswith("/api/") and request.method != "OPTIONS":
            verify_jwt_in_request()

    @app.errorhandler(HostError)
    def host_error(error: HostError) -> Any:
        return jsonify(hostError=str(error)), 418

    @app.errorhandler(Exception)
    def host_catch_all(error: Exception) -> Any:
        return jsonify(hostError="unexpected"), 500

    amazon.init_app(app, api)
    amazon.register(JwtAuth(), app=app)  # inside the factory: once per app
    return app


@pytest.fixture
def make_host(creators_env: dict[str, str]) -> Iterator[Callable[..., Flask]]:
    """``make_host(**kwargs)``: :func:`create_host`, closed after the test."""
    apps: list[Flask] = []

    def factory(**kwargs: Any) -> Flask:
        app = create_host(**kwargs)
        apps.append(app)
        return app

    yield factory
    for app in apps:
        amazon.close(app)


def bearer(app: Flask, identity: str = "user-1") -> dict[str, str]:
    """An ``Authorization`` header with a JWT the host issued."""
    with app.app_context():
        return {"Authorization": f"Bearer {create_access_token(identity=identity)}"}
