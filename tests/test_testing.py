"""``arda_amazon_bp.testing``: the handle, ``running_sandbox`` and the pytest plugin."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from collections.abc import Callable

import pytest
import requests
from fixtures_app import USER_TOKEN
from flask import Flask
from flask.testing import FlaskClient

from arda_amazon_bp.testing import EXAMPLE_ASIN, AmazonSandbox, pytest_plugin, running_sandbox
from arda_amazon_bp.testing.sandbox import SandboxConfig


def _client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    return client


@pytest.fixture
def config_only_app(
    make_app: Callable[..., Flask], amazon_sandbox: AmazonSandbox, monkeypatch: pytest.MonkeyPatch
) -> Flask:
    """An app made from ``amazon_sandbox.config`` alone, with no credential variable set."""
    for name in AmazonSandbox.CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return make_app(**amazon_sandbox.config)


def test_config_and_example_url_import_a_complete_product_without_environment(
    config_only_app: Flask, amazon_sandbox: AmazonSandbox
) -> None:
    response = _client(config_only_app).post(
        "/api/amazon/import", json={"url": amazon_sandbox.example_url}
    )
    assert response.status_code == 200, response.get_json()
    product = response.get_json()
    assert product["asin"] == EXAMPLE_ASIN
    assert product["missingFields"] == []
    assert product["title"] and product["imageUrl"] and product["price"]
    stats = amazon_sandbox.stats()
    assert stats["total_calls"] == 1
    assert stats["calls_by_status"] == {"200": 1}
    assert stats["token_requests"] == 1
    get_items = [call for call in stats["calls"] if call["endpoint"] == "getItems"]
    assert [call["asins"] for call in get_items] == [[EXAMPLE_ASIN]]


def test_config_uses_the_config_backend_and_points_at_the_sandbox(
    amazon_sandbox: AmazonSandbox,
) -> None:
    config = amazon_sandbox.config
    assert config["AMAZON_CREDENTIALS_BACKEND"] == "config"
    assert config["AMAZON_CREATORS_API_HOST"] == amazon_sandbox.url
    assert config["AMAZON_TOKEN_URL"] == amazon_sandbox.url + "/auth/o2/token"
    assert set(config["AMAZON_CREDENTIALS"]) == {
        "credential_id",
        "credential_secret",
        "version",
        "partner_tag",
    }
    assert not any(key.startswith("AMAZON_CREATORS_C") for key in config)
    assert amazon_sandbox.url.startswith("http://127.0.0.1:")


def test_fault_reaches_the_plugin_as_a_typed_error(
    config_only_app: Flask, amazon_sandbox: AmazonSandbox
) -> None:
    amazon_sandbox.fault("associate_not_eligible")
    response = _client(config_only_app).post(
        "/api/amazon/import", json={"url": amazon_sandbox.example_url}
    )
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "AMAZON_UPSTREAM_UNAVAILABLE"
    assert error["details"]["reason"] == "associate_not_eligible"
    assert amazon_sandbox.stats()["calls"][-1]["fault"] == "associate_not_eligible"


def test_app_config_for_the_env_backend_names_the_four_variables(
    amazon_sandbox: AmazonSandbox,
) -> None:
    config = amazon_sandbox.app_config("2.1", backend="env")
    assert config["AMAZON_CREDENTIALS_BACKEND"] == "env"
    assert config["AMAZON_TOKEN_URL"] == amazon_sandbox.url + "/oauth2/token"
    assert set(AmazonSandbox.CREDENTIAL_VARIABLES) <= set(config)
    assert config["AMAZON_CREATORS_VERSION"] == "2.1"
    assert "AMAZON_CREDENTIALS" not in config
    with pytest.raises(ValueError, match="backend must be"):
        amazon_sandbox.app_config(backend="file")


def test_amazon_sandbox_resets_faults_config_and_log_before_the_test(
    amazon_sandbox_server: AmazonSandbox, request: pytest.FixtureRequest
) -> None:
    amazon_sandbox_server.fault("html", count=3)
    amazon_sandbox_server.configure(rate=7)
    amazon_sandbox_server.set_credentials([("someone-else", "other-secret", "3.1")])
    requests.post(amazon_sandbox_server.get_items_url(), json={}, timeout=5)
    assert amazon_sandbox_server.stats()["total_calls"] == 1

    sandbox = request.getfixturevalue("amazon_sandbox")

    assert sandbox is amazon_sandbox_server
    assert sandbox.state.pending_faults() == {"getItems": [], "token": []}
    stats = sandbox.stats()
    assert stats["rate"] == 1.0
    assert stats["total_calls"] == 0
    assert sandbox.token("3.1")  # the demo credential is accepted again


def test_running_sandbox_serves_on_loopback_and_stops() -> None:
    with running_sandbox(SandboxConfig(rate=5)) as sandbox:
        assert sandbox.url.startswith("http://127.0.0.1:")
        assert sandbox.stats()["rate"] == 5
        assert sandbox.app is not None
        url = sandbox.url
    with pytest.raises(requests.ConnectionError):
        requests.get(url + "/_sandbox/stats", timeout=2)


def test_a_handle_of_another_process_has_no_in_process_state() -> None:
    with pytest.raises(RuntimeError, match="another process"):
        _ = AmazonSandbox("http://127.0.0.1:9").state


def test_the_plugin_is_registered_through_the_pytest11_entry_point(
    pytestconfig: pytest.Config,
) -> None:
    points = [
        point
        for point in importlib.metadata.entry_points(group="pytest11")
        if point.value == "arda_amazon_bp.testing.pytest_plugin"
    ]
    assert [point.name for point in points] == ["arda_amazon_bp"]
    assert pytestconfig.pluginmanager.get_plugin("arda_amazon_bp") is pytest_plugin


def test_importing_the_package_and_its_testing_kit_does_not_import_pytest() -> None:
    code = (
        "import sys\n"
        "import arda_amazon_bp, arda_amazon_bp.extension, arda_amazon_bp.blueprint\n"
        "import arda_amazon_bp.testing, arda_amazon_bp.testing.sandbox\n"
        "from arda_amazon_bp.testing import AmazonSandbox, running_sandbox\n"
        "assert 'pytest' not in sys.modules, 'pytest was imported'\n"
        "assert '_pytest' not in sys.modules, '_pytest was imported'\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
