"""The Flask extension: init_app, per-app state, plugin manager, events."""

from __future__ import annotations

import threading
import time

import pytest
from fixtures_app import FAST_CONFIG, make_item
from flask import Flask
from flask_smorest import Api

from arda_amazon_bp import AmazonImport, hookimpl
from arda_amazon_bp.config import ConfigError


def test_init_app_later_with_the_hosts_api(creators_env):
    app = Flask("late")
    app.config.update(API_TITLE="Host", API_VERSION="2", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    extension = AmazonImport()
    assert extension.init_app(app, api) is extension
    assert "arda_amazon_bp" in app.extensions
    assert api.spec.title == "Host"
    assert "/api/amazon/import" in api.spec.to_dict()["paths"]
    app.extensions["arda_amazon_bp"].close()


def test_without_an_api_the_extension_creates_one(creators_env):
    app = Flask("no_api")
    AmazonImport(app)
    try:
        assert app.url_map.bind("").match("/api/amazon/import", method="POST")
        assert "flask-smorest" in app.extensions
    finally:
        app.extensions["arda_amazon_bp"].close()


def test_without_an_api_argument_the_apps_own_api_is_used(creators_env):
    """The README's no-argument path with a host that has its Api already: no second Api
    (which would clash with the host's), our routes join the host's document."""
    app = Flask("has_api")
    app.config.update(API_TITLE="Host", API_VERSION="2", OPENAPI_VERSION="3.0.3")
    api = Api(app)
    extension = AmazonImport(app)
    try:
        assert list(app.extensions["flask-smorest"]["apis"]) == [""]
        assert "/api/amazon/import" in api.spec.to_dict()["paths"]
    finally:
        extension.close(app)


def test_url_prefix_is_configurable(make_app):
    app = make_app(AMAZON_IMPORT_URL_PREFIX="/bff/amazon/")
    assert app.url_map.bind("").match("/bff/amazon/import", method="POST")


def test_unknown_backend_fails_at_init_listing_the_names(creators_env):
    app = Flask("bad_backend")
    app.config.update(AMAZON_CREDENTIALS_BACKEND="vault9000")
    with pytest.raises(ConfigError) as error:
        AmazonImport(app)
    assert "vault9000" in str(error.value)
    for name in ("env", "file", "onepassword"):
        assert name in str(error.value)


def test_bad_config_fails_at_init_naming_the_key(creators_env):
    app = Flask("bad_config")
    app.config.update(AMAZON_CACHE_TTL_SECONDS=999_999)
    with pytest.raises(ConfigError, match="AMAZON_CACHE_TTL_SECONDS"):
        AmazonImport(app)


def test_two_apps_get_separate_state(make_app):
    first, second = make_app(), make_app()
    assert first.extensions["arda_amazon_bp"] is not second.extensions["arda_amazon_bp"]
    assert first.extensions["arda_amazon_bp"].quota is not second.extensions["arda_amazon_bp"].quota


def test_cli_group_is_registered(app):
    assert "amazon" in app.cli.commands


class AllowAll:
    @hookimpl
    def arda_amazon_authenticate(self, request):
        return "anyone"


class Recorder:
    def __init__(self):
        self.calls, self.events = [], []

    @hookimpl
    def arda_amazon_upstream_call(self, event):
        self.calls.append(event)

    @hookimpl
    def arda_amazon_upstream_event(self, name, details):
        self.events.append((name, details))


def test_upstream_calls_are_observed_through_the_hook(app, client, amazon):
    recorder = Recorder()
    app.extensions["test_extension"].plugin_manager.register(recorder)
    client.post("/api/amazon/import", json={"url": "https://www.amazon.com/dp/B0HOOKED01"})
    kinds = [call["kind"] for call in recorder.calls]
    assert kinds == ["token", "getItems"]
    assert recorder.calls[1]["asins"] == ["B0HOOKED01"]


def test_upstream_event_is_logged_and_hooked_once_per_interval(app, caplog):
    recorder = Recorder()
    app.extensions["test_extension"].plugin_manager.register(recorder)
    state = app.extensions["arda_amazon_bp"]
    for _ in range(3):
        state.upstream_event("associate_not_eligible", {"status": 403})
    assert recorder.events == [("associate_not_eligible", {"status": 403})]
    lines = [r for r in caplog.records if "amazon_upstream_event" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelname == "ERROR"


def test_a_failing_observer_never_breaks_an_import(app, client, amazon):
    class Broken:
        @hookimpl
        def arda_amazon_upstream_call(self, event):
            raise RuntimeError("metrics down")

    app.extensions["test_extension"].plugin_manager.register(Broken())
    response = client.post(
        "/api/amazon/import", json={"url": "https://www.amazon.com/dp/B0HOOKED01"}
    )
    assert response.status_code == 206


def _our_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("arda-amazon-")]


def test_fifty_apps_opened_and_closed_leave_no_threads_behind(creators_env, amazon):
    """Every app starts a dispatcher, call threads and the quota's expiry timer; close(app)
    stops them all. Threads are daemon threads named after their app."""
    amazon.add(make_item("B0CLOSED01"))
    baseline = set(threading.enumerate())
    extension = AmazonImport()
    extension.register(AllowAll())
    for number in range(50):
        app = Flask(f"tenant{number}")
        app.config.update(API_TITLE="T", API_VERSION="1", OPENAPI_VERSION="3.0.3", **FAST_CONFIG)
        extension.init_app(app, Api(app))
        response = app.test_client().post(
            "/api/amazon/import", json={"url": "https://www.amazon.com/dp/B0CLOSED01"}
        )
        assert response.status_code == 200
        mine = [t for t in _our_threads() if t.name.startswith(f"arda-amazon-{app.name}-")]
        assert mine and all(t.daemon for t in mine)
        extension.close(app)
        extension.close(app)  # idempotent
        assert not [t for t in mine if t.is_alive()]
    deadline = time.monotonic() + 5  # a cancelled Timer's thread ends on its own, promptly
    while set(threading.enumerate()) - baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - baseline == set()


def test_close_of_an_app_never_initialised_is_a_no_op():
    AmazonImport().close(Flask("stranger"))


def test_a_plugin_registered_for_one_app_is_not_asked_by_another(make_app):
    extension = AmazonImport()
    first, second = Flask("first"), Flask("second")
    for app in (first, second):
        app.config.update(API_TITLE="T", API_VERSION="1", OPENAPI_VERSION="3.0.3", **FAST_CONFIG)
        extension.init_app(app, Api(app))
    seen = []

    class Auth:
        def __init__(self, name):
            self.name = name

        @hookimpl
        def arda_amazon_authenticate(self, request):
            seen.append(self.name)

    # Same plugin name for both apps, as an app factory registers it.
    extension.register(Auth("first"), app=first, name="auth")
    extension.register(Auth("second"), app=second, name="auth")
    for app in (first, second):
        app.test_client().post("/api/amazon/import", json={"url": "x"})
    assert seen == ["first", "second"]
    for app in (first, second):
        extension.close(app)


def test_every_module_that_logs_gets_request_ids():
    # The request-id filter sits on each named logger (filters do not inherit), so a
    # module whose logger is missing from _LOGGERS would log lines no request id names.
    import pathlib
    import re

    from arda_amazon_bp import extension

    package = pathlib.Path(extension.__file__).parent
    logging_modules = {
        "arda_amazon_bp." + ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if re.search(r"^logger = logging\.getLogger\(__name__\)$", path.read_text(), re.M)
    }
    assert "arda_amazon_bp.tokens" in logging_modules  # the scan finds what it should
    assert logging_modules <= set(extension._LOGGERS)


def test_auth_disabled_set_only_in_the_environment_is_refused_at_init_app(
    creators_env, monkeypatch
):
    monkeypatch.setenv("AMAZON_IMPORT_AUTH_DISABLED", "true")
    app = Flask("env_only_auth_switch")
    with pytest.raises(ConfigError) as refused:
        AmazonImport(app)
    message = str(refused.value)
    assert message.startswith("arda_amazon_bp: AMAZON_IMPORT_AUTH_DISABLED")
    assert "environment only" in message and "switch authentication off" in message
    assert "arda_amazon_bp" not in app.extensions  # nothing was served half-configured


def test_auth_disabled_in_app_config_is_honoured_whatever_the_environment(
    creators_env, monkeypatch
):
    monkeypatch.setenv("AMAZON_IMPORT_AUTH_DISABLED", "true")
    app = Flask("app_config_auth_switch")
    app.config["AMAZON_IMPORT_AUTH_DISABLED"] = False
    AmazonImport(app)
    try:
        assert app.extensions["arda_amazon_bp"].settings.auth_disabled is False
    finally:
        app.extensions["arda_amazon_bp"].close()
