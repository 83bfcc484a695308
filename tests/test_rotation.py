"""Credential rotation while the app runs, end to end against the sandbox Creators API.

Amazon (the sandbox) switches to a new secret and revokes issued tokens; the backend
(file, env or 1Password) is updated to the new secret. The next import must recover
on its own: getItems 401 → fresh token refused with ``invalid_client`` → exactly one
credential reload → one token retry with the new secret → the product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fixtures_app import USER_TOKEN
from fixtures_credentials import (
    KNOWN_FIELDS,
    KNOWN_ID,
    KNOWN_SECRET,
    KNOWN_TAG,
    KNOWN_VERSION,
    OP_LABELS,
    ROTATED_SECRET,
    CredentialsFile,
    FakeOp,
)
from fixtures_sandbox import SandboxHandle
from flask import Flask

ASIN_BEFORE, ASIN_AFTER = "B0SYN00001", "B0SYN00002"


class Backend:
    """One way of holding the credentials, and of changing the secret in place."""

    def __init__(self, config: dict[str, Any], rotate: Callable[[str], None]) -> None:
        self.config = config
        self.rotate = rotate


@pytest.fixture(params=["file", "env", "onepassword"])
def backend(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    credentials_file: CredentialsFile,
    fake_op: FakeOp,
) -> Backend:
    if request.param == "file":
        return Backend(
            credentials_file.config,
            lambda secret: credentials_file.write({**KNOWN_FIELDS, "credential_secret": secret}),
        )
    if request.param == "env":
        for field, value in KNOWN_FIELDS.items():
            monkeypatch.setenv(f"AMAZON_CREATORS_{field.upper()}", value)
        return Backend(
            {"AMAZON_CREDENTIALS_BACKEND": "env"},
            lambda secret: monkeypatch.setenv("AMAZON_CREATORS_CREDENTIAL_SECRET", secret),
        )
    return Backend(
        fake_op.config, lambda secret: fake_op.set_field(OP_LABELS["credential_secret"], secret)
    )


@pytest.fixture
def rotating_app(make_app: Callable[..., Flask], sandbox: SandboxHandle, backend: Backend) -> Flask:
    sandbox.configure(rate=100)
    sandbox.set_credentials([(KNOWN_ID, KNOWN_SECRET, KNOWN_VERSION)], partner_tags=[KNOWN_TAG])
    return make_app(
        AMAZON_CREATORS_API_HOST=sandbox.url,
        AMAZON_TOKEN_URL=sandbox.token_url(KNOWN_VERSION),
        **backend.config,
    )


def rotate_at_amazon(sandbox: SandboxHandle) -> None:
    """Amazon accepts only the new secret, and tokens issued before are dead."""
    sandbox.set_credentials([(KNOWN_ID, ROTATED_SECRET, KNOWN_VERSION)], partner_tags=[KNOWN_TAG])
    sandbox.expire_tokens()


def import_asin(app: Flask, asin: str) -> Any:
    return app.test_client().post(
        "/api/amazon/import",
        json={"url": f"https://www.amazon.com/dp/{asin}"},
        headers={"Authorization": f"Bearer {USER_TOKEN}"},
    )


def test_a_rotated_secret_is_picked_up_with_one_reload_and_one_retry(
    rotating_app: Flask, sandbox: SandboxHandle, backend: Backend
) -> None:
    provider = rotating_app.extensions["arda_amazon_bp"].credentials
    assert import_asin(rotating_app, ASIN_BEFORE).status_code == 200
    loads_before = provider.loads

    rotate_at_amazon(sandbox)
    backend.rotate(ROTATED_SECRET)
    response = import_asin(rotating_app, ASIN_AFTER)

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["asin"] == ASIN_AFTER
    assert provider.loads == loads_before + 1  # exactly one reload
    tokens = sandbox.stats()["token_requests_by_status"]
    # first token, the refused one with the old secret, the retry with the new one
    assert tokens == {"200": 2, "401": 1}
    assert provider.get().credential_secret == ROTATED_SECRET


def test_a_secret_not_yet_rotated_in_the_backend_fails_once_without_a_retry_loop(
    rotating_app: Flask, sandbox: SandboxHandle
) -> None:
    provider = rotating_app.extensions["arda_amazon_bp"].credentials
    assert import_asin(rotating_app, ASIN_BEFORE).status_code == 200
    loads_before = provider.loads
    rotate_at_amazon(sandbox)

    response = import_asin(rotating_app, ASIN_AFTER)

    assert response.status_code == 502
    assert response.get_json()["error"]["details"]["reason"] == "credentials_rejected"
    assert provider.loads == loads_before + 1
    assert sandbox.stats()["token_requests_by_status"] == {"200": 1, "401": 1}
