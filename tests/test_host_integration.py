"""A good guest in a realistic host (tests/fixtures_host.py): the host's errors pass through
our routes unchanged, CORS preflights are the host's, our own errors keep our envelope and
request id, hooks see ``current_app``, the README's import type-checks, and the OpenAPI
document (3.1.0 and 3.0.3) carries a readable tag and no phantom ``default`` response.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures_app import GET_ITEMS_URL, LWA_TOKEN_URL, make_item
from fixtures_host import ORIGIN, amazon, bearer
from flask import Flask, current_app

import arda_amazon_bp
from arda_amazon_bp import hookimpl

IMPORT = "/api/amazon/import"
HOST_ROUTE = "/api/things"
LINK = "https://www.amazon.com/dp/B0GUEST001"


def upstream_requests(mock: Any) -> int:
    return sum(1 for r in mock.mocker.request_history if r.url in (GET_ITEMS_URL, LWA_TOKEN_URL))


def ours(response: Any) -> dict[str, Any]:
    """Our envelope, with the request id of the response."""
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert body["error"]["details"]["requestId"] == response.headers["X-Request-ID"]
    error: dict[str, Any] = body["error"]
    return error


def same_answer(ours_: Any, hosts: Any) -> None:
    """Our route answered exactly as the host's own route does."""
    assert ours_.status_code == hosts.status_code
    assert ours_.get_json() == hosts.get_json()
    assert "X-Request-ID" not in ours_.headers  # we never touched it


# -- the host's errors pass through ------------------------------------------------------


def test_flask_limiters_429_keeps_its_status_body_and_retry_after(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    app = make_host(default_limits="1 per minute")
    client = app.test_client()
    headers = bearer(app)
    first = client.post(IMPORT, json={"url": "not a link"}, headers=headers)
    assert first.status_code == 422  # ours, counted by the host's limiter
    limited = client.post(IMPORT, json={"url": LINK}, headers=headers)
    client.get(HOST_ROUTE, headers=headers)
    host_limited = client.get(HOST_ROUTE, headers=headers)
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert limited.headers["X-RateLimit-Limit"] == "1"  # Flask-Limiter's own headers kept
    same_answer(limited, host_limited)
    assert upstream_requests(amazon) == 0


def test_a_hosts_abort_in_before_request_keeps_its_status_and_body(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    app = make_host()
    client = app.test_client()
    headers = {**bearer(app), "X-Maintenance": "1"}
    ours_ = client.post(IMPORT, json={"url": LINK}, headers=headers)
    assert ours_.status_code == 503
    same_answer(ours_, client.post(HOST_ROUTE, json={}, headers=headers))


def test_a_host_exception_goes_to_the_hosts_own_handler(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    app = make_host()
    client = app.test_client()
    headers = {**bearer(app), "X-Host-Error": "1"}
    ours_ = client.post(IMPORT, json={"url": LINK}, headers=headers)
    assert ours_.status_code == 418
    assert ours_.get_json() == {"hostError": "the host's own failure"}
    same_answer(ours_, client.get(HOST_ROUTE, headers=headers))


def test_a_global_jwt_check_answers_401_as_on_host_routes(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    app = make_host()
    client = app.test_client()
    ours_ = client.post(IMPORT, json={"url": LINK})
    assert ours_.status_code == 401
    assert ours_.get_json() == {"msg": "Missing Authorization Header"}
    same_answer(ours_, client.get(HOST_ROUTE))
    assert upstream_requests(amazon) == 0


def test_a_host_exception_raised_in_our_auth_hook_goes_to_the_host(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    """No global check this time: the JWT error comes from inside our authentication."""
    app = make_host()
    app.before_request_funcs[None].clear()  # drop the host's global checks
    response = app.test_client().post(IMPORT, json={"url": LINK})
    assert response.status_code == 401
    assert response.get_json() == {"msg": "Missing Authorization Header"}


# -- our own errors stay ours ------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "not json", "content_type": "application/json"}, 400, "INVALID_REQUEST"),
        ({"json": {"url": LINK, "extra": 1}}, 400, "INVALID_REQUEST"),
        ({"data": b"x" * 2048, "content_type": "application/json"}, 413, "INVALID_REQUEST"),
        ({"json": {"url": "https://example.com/dp/B0GUEST001"}}, 422, "UNRECOGNIZED_AMAZON_URL"),
    ],
    ids=["not-json", "unknown-field", "too-large", "not-amazon"],
)
def test_our_validation_errors_keep_our_envelope_and_request_id(
    make_host: Callable[..., Flask],
    amazon: Any,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    app = make_host(MAX_CONTENT_LENGTH=1024)
    response = app.test_client().post(IMPORT, headers=bearer(app), **kwargs)
    assert response.status_code == status
    assert ours(response)["code"] == code


def test_a_bug_of_ours_is_our_500_even_with_a_host_catch_all(
    make_host: Callable[..., Flask], amazon: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_host()

    def explode(ref: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.extensions["arda_amazon_bp"].lookup, "lookup", explode)
    response = app.test_client().post(
        IMPORT, json={"url": LINK}, headers={**bearer(app), "X-Request-ID": "bug-7"}
    )
    assert response.status_code == 500
    error = ours(response)
    assert error["code"] == "INTERNAL_ERROR"
    assert error["details"]["requestId"] == "bug-7"


def test_unauthenticated_by_our_hook_is_our_401_with_request_id(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    app = make_host()
    # A valid token of someone who is not one of the host's users: the hook says None.
    response = app.test_client().post(IMPORT, json={"url": LINK}, headers=bearer(app, "x"))
    assert response.status_code == 401
    assert ours(response)["code"] == "AUTHENTICATION_REQUIRED"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_a_successful_import_through_the_host(make_host: Callable[..., Flask], amazon: Any) -> None:
    amazon.add(make_item("B0GUEST001"))
    app = make_host()
    response = app.test_client().post(
        IMPORT, json={"url": LINK}, headers={**bearer(app), "Origin": ORIGIN}
    )
    assert response.status_code == 200
    assert response.get_json()["asin"] == "B0GUEST001"
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


# -- CORS preflights ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [IMPORT, IMPORT + "/batch"])
def test_a_preflight_needs_no_credentials_and_calls_nobody(
    make_host: Callable[..., Flask], amazon: Any, path: str
) -> None:
    app = make_host()
    response = app.test_client().options(
        path,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Authorization, Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "authorization" in response.headers["Access-Control-Allow-Headers"].lower()
    assert upstream_requests(amazon) == 0


# -- hooks run inside the app context ----------------------------------------------------


class ContextRecorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []  # (hook, current_app.name, thread name)

    @hookimpl
    def arda_amazon_upstream_call(self, event: Any) -> None:
        self.seen.append(("call", current_app.name, threading.current_thread().name))

    @hookimpl
    def arda_amazon_upstream_event(self, name: str, details: Any) -> None:
        current_app.logger.info("paging for %s", name)  # what a real pager hook does
        self.seen.append(("event", current_app.name, threading.current_thread().name))


def test_hooks_on_the_dispatchers_threads_see_current_app(
    make_host: Callable[..., Flask], amazon: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_host()
    recorder = ContextRecorder()
    amazon_ext = app.extensions["arda_amazon_bp"]
    amazon_ext.plugin_manager.register(recorder)
    amazon.fail_get_items(status_code=403, json={"reason": "AssociateNotEligible"})
    response = app.test_client().post(IMPORT, json={"url": LINK}, headers=bearer(app))
    assert response.status_code == 502
    hooks = {hook for hook, _, _ in recorder.seen}
    assert hooks == {"call", "event"}, recorder.seen
    for hook, app_name, thread in recorder.seen:
        assert app_name == app.name, (hook, thread)
        assert thread.startswith(f"arda-amazon-{app.name}-"), (hook, thread)
    assert "hook failed" not in caplog.text


def test_plugins_registered_in_the_factory_serve_their_own_app_only(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    """Two apps from one factory: the second registration does not collide, and a plugin
    registered for one app is not asked by the other."""
    amazon.add(make_item("B0GUEST001"))
    first, second = make_host(), make_host()
    recorder = ContextRecorder()
    first.extensions["arda_amazon_bp"].plugin_manager.register(recorder)
    for app in (first, second):
        response = app.test_client().post(IMPORT, json={"url": LINK}, headers=bearer(app))
        assert response.status_code == 200
    assert recorder.seen and {name for _, name, _ in recorder.seen} == {first.name}
    assert all(thread.startswith("arda-amazon-host_bff-") for _, _, thread in recorder.seen)
    assert len([c for c in recorder.seen if c[0] == "call"]) == 2  # token + getItems, once


def test_close_unregisters_the_apps_plugins(make_host: Callable[..., Flask]) -> None:
    app = make_host()
    before = len(amazon.plugin_manager.get_plugins())
    amazon.close(app)
    amazon.close(app)  # idempotent
    assert len(amazon.plugin_manager.get_plugins()) == before - 1


# -- the quota is per process and credential ---------------------------------------------


def test_two_apps_with_one_credential_share_the_rate(
    make_host: Callable[..., Flask], amazon: Any
) -> None:
    amazon.add(make_item("B0GUEST001"), make_item("B0GUEST002"))
    config = {"AMAZON_RATE_LIMITS": "1/minute;8640/day", "AMAZON_MAX_WAIT_SECONDS": 0}
    first, second = make_host(**config), make_host(**config)
    ok = first.test_client().post(IMPORT, json={"url": LINK}, headers=bearer(first))
    assert ok.status_code == 200
    refused = second.test_client().post(
        IMPORT, json={"url": "https://www.amazon.com/dp/B0GUEST002"}, headers=bearer(second)
    )
    assert refused.status_code == 429
    assert ours(refused)["details"]["source"] == "local"  # refused here, not by Amazon
    assert amazon.get_items_requests() == 1


# -- the OpenAPI document -----------------------------------------------------------------


@pytest.mark.parametrize("version", ["3.1.0", "3.0.3"])
def test_the_hosts_openapi_document_is_valid_with_our_routes(
    make_host: Callable[..., Flask], version: str
) -> None:
    from openapi_spec_validator import validate

    app = make_host(openapi_version=version)
    spec = app.test_client().get("/openapi.json").get_json()
    validate(spec)
    assert spec["openapi"] == version
    assert HOST_ROUTE in spec["paths"]
    tags = [tag["name"] for tag in spec["tags"]]
    assert "Amazon import" in tags and "amazon_import" not in tags
    for path in (IMPORT, IMPORT + "/batch"):
        operation = spec["paths"][path]["post"]
        assert operation["tags"] == ["Amazon import"]
        assert "default" not in operation["responses"]
    # The host's own routes keep flask-smorest's default response: that setting is theirs.
    assert "default" in spec["paths"][HOST_ROUTE]["get"]["responses"]


# -- the README's import type-checks -------------------------------------------------------


def test_mypy_is_clean_on_a_host_file_with_the_readmes_import(tmp_path: Path) -> None:
    (tmp_path / "host.py").write_text(
        textwrap.dedent(
            """
            from flask import Flask, Request
            from flask_smorest import Api
            from arda_amazon_bp import AmazonImport, hookimpl

            app = Flask("bff")
            api = Api(app)
            amazon = AmazonImport(app, api)
            reveal_type(AmazonImport)


            class BffAuth:
                @hookimpl
                def arda_amazon_authenticate(self, request: Request) -> str | None:
                    return None


            amazon.register(BffAuth(), app=app)
            amazon.close(app)
            """
        )
    )
    # The host's own config: strict, and flask-smorest ships no type information. mypy
    # cannot follow an editable install's import hook, so it is pointed at the source;
    # follow_imports=silent then reports nothing inside it, as for an installed package.
    package_root = Path(arda_amazon_bp.__file__).resolve().parent.parent
    (tmp_path / "mypy.ini").write_text(
        f"[mypy]\nstrict = True\nmypy_path = {package_root}\n\n"
        "[mypy-arda_amazon_bp.*]\nfollow_imports = silent\n\n"
        "[mypy-flask_smorest.*]\nignore_missing_imports = True\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", "host.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "arda_amazon_bp.extension.AmazonImport" in result.stdout
