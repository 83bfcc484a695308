"""Several stores in one app (``AMAZON_MARKETPLACES``, ``stores.py``), against the sandbox.

Two stores on two credential versions: ``www.amazon.com`` on the demo NA credential and
``www.amazon.co.uk`` on the demo EU credential (3.2), each with its own partner tag
(``AmazonSandbox.stores_config``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures_app import USER_TOKEN
from fixtures_sandbox import SandboxHandle
from flask import Flask
from flask.testing import FlaskClient

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.extension import AmazonImportState
from arda_amazon_bp.testing import EXAMPLE_ASIN
from arda_amazon_bp.testing import sandbox as cs

US = "www.amazon.com"
UK = "www.amazon.co.uk"
DE = "www.amazon.de"
DE_TAG = "ardademode-21"


def get_state(app: Flask) -> AmazonImportState:
    state: AmazonImportState = app.extensions["arda_amazon_bp"]
    return state


def _client(app: Flask) -> FlaskClient:
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {USER_TOKEN}"
    return client


def _import(client: FlaskClient, url: str) -> Any:
    return client.post(
        "/api/amazon/import", data=json.dumps({"url": url}), content_type="application/json"
    )


def _batch(client: FlaskClient, urls: list[str]) -> Any:
    return client.post(
        "/api/amazon/import/batch",
        data=json.dumps({"urls": urls}),
        content_type="application/json",
    )


def _get_items_calls(sandbox: SandboxHandle) -> list[dict[str, Any]]:
    return [c for c in sandbox.stats()["calls"] if c["endpoint"] == cs.GET_ITEMS]


def _file_config(sandbox: SandboxHandle, tmp_path: Path, gb_version: str) -> dict[str, Any]:
    """``stores_config`` with its credentials in an owner-only file (read on first use,
    not at ``init_app``) and the UK set's version replaced."""
    fields = sandbox.stores_config()["AMAZON_CREDENTIALS"]
    fields["stores"]["GB"]["version"] = gb_version
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(fields), encoding="utf-8")
    path.chmod(0o600)
    config = {**sandbox.stores_config(), "AMAZON_CREDENTIALS_BACKEND": "file"}
    config["AMAZON_CREDENTIALS_FILE"] = str(path)
    del config["AMAZON_CREDENTIALS"]
    return config


@pytest.fixture
def two_stores(make_app: Callable[..., Flask], sandbox: SandboxHandle) -> Callable[..., Flask]:
    """``two_stores(**overrides)``: an app serving US and UK from the sandbox."""
    sandbox.configure(rate=100)

    def factory(**overrides: Any) -> Flask:
        return make_app(**{**sandbox.stores_config(), **overrides})

    return factory


def test_each_store_uses_its_own_credential_and_partner_tag(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    client = _client(two_stores())

    us = _import(client, f"https://{US}/dp/{EXAMPLE_ASIN}")
    uk = _import(client, f"https://{UK}/dp/{EXAMPLE_ASIN}")

    assert us.status_code == 200, us.get_json()
    assert uk.status_code == 200, uk.get_json()
    assert us.get_json()["marketplace"] == US
    assert uk.get_json()["marketplace"] == UK
    assert f"tag={cs.DEMO_PARTNER_TAG}" in us.get_json()["detailPageUrl"]
    assert uk.get_json()["detailPageUrl"].startswith(f"https://{UK}/")
    assert f"tag={cs.DEMO_UK_PARTNER_TAG}" in uk.get_json()["detailPageUrl"]
    calls = {c["marketplace"]: c for c in _get_items_calls(sandbox)}
    assert calls[US]["credential"] == cs.DEMO_CREDENTIAL_ID[-4:]
    assert calls[US]["partner_tag"] == cs.DEMO_PARTNER_TAG
    assert calls[UK]["credential"] == cs.DEMO_EU_CREDENTIAL_ID[-4:]
    assert calls[UK]["partner_tag"] == cs.DEMO_UK_PARTNER_TAG


def test_two_credentials_have_two_buckets(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    # One call per minute per credential: each store still gets its own call.
    app = two_stores(AMAZON_RATE_LIMITS="1/minute", AMAZON_MAX_WAIT_SECONDS=0.2)
    client = _client(app)

    assert _import(client, f"https://{US}/dp/{EXAMPLE_ASIN}").status_code == 200
    uk = _import(client, f"https://{UK}/dp/{EXAMPLE_ASIN}")

    assert uk.status_code == 200, uk.get_json()
    state = get_state(app)
    keys = {m: store.credentials.get().quota_key for m, store in state.stores.items()}
    assert keys[US] != keys[UK]
    assert state.quota.daily(keys[US]).amount == state.quota.daily(keys[UK]).amount
    assert uk.headers["RateLimit-Remaining"] == str(state.quota.daily(keys[UK]).remaining)


def test_rate_limit_headers_describe_the_bucket_of_the_requests_store(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    client = _client(two_stores(AMAZON_RATE_LIMITS="100/second;50/day"))

    for asin in ("B0SYN00001", "B0SYN00002", "B0SYN00003"):
        us = _import(client, f"https://{US}/dp/{asin}")
    uk = _import(client, f"https://{UK}/dp/B0SYN00004")

    assert us.headers["RateLimit-Remaining"] == "47"  # three calls on the NA credential
    assert uk.headers["RateLimit-Remaining"] == "49"  # one on the EU credential
    assert uk.headers["RateLimit-Limit"] == "50"


def test_one_credential_serving_two_stores_shares_one_bucket(
    make_app: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    sandbox.configure(rate=100, stores={UK: [cs.DEMO_UK_PARTNER_TAG], DE: [DE_TAG]})
    config = sandbox.stores_config()
    eu = config["AMAZON_CREDENTIALS"]["stores"]["GB"]
    # The EU credential is the default set; Germany overrides only its partner tag.
    config["AMAZON_CREDENTIALS"] = {**eu, "stores": {"DE": {"partner_tag": DE_TAG}}}
    config["AMAZON_MARKETPLACES"] = f"{UK},{DE}"
    app = make_app(**config, AMAZON_RATE_LIMITS="1/minute", AMAZON_MAX_WAIT_SECONDS=0.2)
    client = _client(app)

    assert _import(client, f"https://{UK}/dp/{EXAMPLE_ASIN}").status_code == 200
    de = _import(client, f"https://{DE}/dp/{EXAMPLE_ASIN}")

    assert de.status_code == 429, de.get_json()
    assert de.get_json()["error"]["details"]["source"] == "local"
    assert [c["marketplace"] for c in _get_items_calls(sandbox)] == [UK]
    state = get_state(app)
    assert state.stores[UK].credentials.get().quota_key == (
        state.stores[DE].credentials.get().quota_key
    )
    assert state.stores[DE].credentials.get().partner_tag == DE_TAG


def test_a_link_for_an_unserved_store_lists_every_served_store(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    response = _import(_client(two_stores()), f"https://{DE}/dp/{EXAMPLE_ASIN}")

    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "UNSUPPORTED_AMAZON_LOCALE"
    assert error["details"]["marketplace"] == DE
    assert error["details"]["supportedMarketplaces"] == [US, UK]
    assert sandbox.stats()["total_calls"] == 0


def test_a_mixed_batch_makes_one_call_per_store_and_answers_in_input_order(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    asins = [f"B0SYN0000{i}" for i in range(1, 6)]
    urls = [
        f"https://{US}/dp/{asins[0]}",
        f"https://{UK}/dp/{asins[1]}",
        f"https://{US}/dp/{asins[2]}",
        f"https://{DE}/dp/{asins[3]}",
        f"https://{UK}/dp/{asins[4]}",
    ]

    response = _batch(_client(two_stores()), urls)

    assert response.status_code == 200
    results = response.get_json()["results"]
    assert [r["url"] for r in results] == urls
    assert [r["status"] for r in results] == [200, 200, 200, 422, 200]
    assert [r["product"]["asin"] for r in results if r["product"]] == [
        asins[0],
        asins[1],
        asins[2],
        asins[4],
    ]
    calls = _get_items_calls(sandbox)
    assert sorted((c["marketplace"], sorted(c["asins"])) for c in calls) == sorted(
        [(US, [asins[0], asins[2]]), (UK, [asins[1], asins[4]])]
    )


def test_an_na_credential_configured_for_the_uk_fails_at_init_app(
    make_app: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    config = sandbox.stores_config()
    config["AMAZON_CREDENTIALS"]["stores"]["GB"]["version"] = "3.1"

    with pytest.raises(ConfigError) as raised:
        make_app(**config)

    assert UK in str(raised.value)
    assert "region NA" in str(raised.value) and "region EU" in str(raised.value)
    assert sandbox.stats()["token_requests"] == 0


def test_an_na_credential_for_the_uk_in_the_environment_fails_at_init_app(
    make_app: Callable[..., Flask], sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**sandbox.stores_config(), "AMAZON_CREDENTIALS_BACKEND": "env"}
    del config["AMAZON_CREDENTIALS"]
    monkeypatch.setenv("AMAZON_CREATORS_VERSION", "3.1")  # the rest: make_app's env

    with pytest.raises(ConfigError, match=f"store {UK} has version 3.1, which serves region NA"):
        make_app(**config)


def test_an_na_credential_for_the_uk_is_refused_before_any_call(
    make_app: Callable[..., Flask],
    sandbox: SandboxHandle,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A file is read on first use, not at init_app: refused there, and still never sent.
    config = _file_config(sandbox, tmp_path, gb_version="3.1")
    client = _client(make_app(**config))

    uk = _import(client, f"https://{UK}/dp/{EXAMPLE_ASIN}")
    us = _import(client, f"https://{US}/dp/{EXAMPLE_ASIN}")

    assert uk.status_code == 502, uk.get_json()
    assert uk.get_json()["error"]["details"]["reason"] == "credentials_unavailable"
    assert us.status_code == 200
    stats = sandbox.stats()
    assert [c["marketplace"] for c in _get_items_calls(sandbox)] == [US]
    assert stats["token_requests"] == 1  # the US one
    assert any(UK in r.getMessage() and "region EU" in r.getMessage() for r in caplog.records)


def test_the_same_asin_is_cached_separately_per_store(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    client = _client(two_stores())
    urls = [f"https://{US}/dp/{EXAMPLE_ASIN}", f"https://{UK}/dp/{EXAMPLE_ASIN}"]

    first = [_import(client, url).get_json() for url in urls]
    again = [_import(client, url).get_json() for url in urls]

    assert sandbox.stats()["total_calls"] == 2  # one per store, then two hits
    assert [p["marketplace"] for p in again] == [US, UK]
    assert again == first
    assert f"tag={cs.DEMO_UK_PARTNER_TAG}" in again[1]["detailPageUrl"]
    assert (first[0]["price"]["currency"], first[1]["price"]["currency"]) == ("USD", "GBP")


def test_one_token_url_with_version_serves_both_credential_families(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    # US on a 2.1 (Cognito) credential, UK on 3.2 (Login with Amazon): one override.
    client = _client(two_stores(**_with_us_version(sandbox, "2.1")))

    assert _import(client, f"https://{US}/dp/{EXAMPLE_ASIN}").status_code == 200
    assert _import(client, f"https://{UK}/dp/{EXAMPLE_ASIN}").status_code == 200

    families = sorted(c["family"] for c in sandbox.stats()["calls"] if c["endpoint"] == "token")
    assert families == [cs.COGNITO, cs.LWA]


def _with_us_version(sandbox: SandboxHandle, version: str) -> dict[str, Any]:
    return {"AMAZON_CREDENTIALS": sandbox.stores_config(version)["AMAZON_CREDENTIALS"]}


def test_single_store_config_serves_only_amazon_marketplace(
    make_app: Callable[..., Flask],
) -> None:
    state = get_state(make_app())

    assert list(state.stores) == [US]
    assert state.settings.marketplaces == (US,)
    assert state.store().credentials is state.credentials


# --- operators' commands, per store ------------------------------------------------------


def _cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["amazon", *args])


def test_check_credentials_checks_every_served_store(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    result = _cli(two_stores(), "check-credentials", "--json")

    assert result.exit_code == 0, result.output
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["marketplace"], r["partnerTag"], r["region"]) for r in reports] == [
        (US, cs.DEMO_PARTNER_TAG, "NA"),
        (UK, cs.DEMO_UK_PARTNER_TAG, "EU"),
    ]
    assert cs.DEMO_EU_CREDENTIAL_SECRET not in result.output


def test_check_credentials_fails_for_the_one_store_whose_region_differs(
    make_app: Callable[..., Flask], sandbox: SandboxHandle, tmp_path: Path
) -> None:
    config = _file_config(sandbox, tmp_path, gb_version="3.1")
    app = make_app(**config)

    both = _cli(app, "check-credentials")
    us_only = _cli(app, "check-credentials", "--marketplace", US)

    assert both.exit_code == 1
    assert f"== {US}" in both.stdout and f"== {UK}" in both.stdout
    assert f"store {UK} has version 3.1, which serves region NA" in both.stderr
    assert us_only.exit_code == 0, us_only.output
    assert "==" not in us_only.stdout


def test_an_unserved_marketplace_option_is_a_usage_error(
    two_stores: Callable[..., Flask],
) -> None:
    result = _cli(two_stores(), "quota", "--marketplace", DE)

    assert result.exit_code == 2
    assert f"served: {US}, {UK}" in result.output


def test_smoke_and_quota_run_per_store(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    app = two_stores(AMAZON_SMOKE_ASIN=EXAMPLE_ASIN)

    smoke = _cli(app, "smoke", "--json")
    quota = _cli(app, "quota", "--json")

    assert smoke.exit_code == 0, smoke.output
    assert [json.loads(line)["partnerTag"] for line in smoke.stdout.splitlines()] == [
        cs.DEMO_PARTNER_TAG,
        cs.DEMO_UK_PARTNER_TAG,
    ]
    assert sorted(c["marketplace"] for c in _get_items_calls(sandbox)) == sorted([US, UK])
    assert quota.exit_code == 0, quota.output
    keys = [json.loads(line)["quotaKey"] for line in quota.stdout.splitlines()]
    assert len(set(keys)) == 2


def test_a_repeat_link_of_the_second_store_is_served_in_front_with_its_own_tag_and_bucket(
    two_stores: Callable[..., Flask], sandbox: SandboxHandle
) -> None:
    app = two_stores(AMAZON_RATE_LIMITS="100/second;50/day", AMAZON_FRONT_CACHE_TTL_SECONDS=30)
    client = _client(app)
    _import(client, f"https://{US}/dp/B0SYN00001")
    _import(client, f"https://{US}/dp/B0SYN00002")  # the NA bucket: 48 left, the EU one 50
    url = f"https://{UK}/dp/{EXAMPLE_ASIN}"

    first = _import(client, url)
    front = get_state(app).front_cache
    again = _import(client, url)

    assert front.get(url) is not None  # the UK answer was kept in front
    assert again.get_data() == first.get_data()
    assert f"tag={cs.DEMO_UK_PARTNER_TAG}" in again.get_json()["detailPageUrl"]
    assert again.headers["RateLimit-Remaining"] == "49"  # the EU bucket, not the NA one
    assert sandbox.stats()["total_calls"] == 3
