"""``AmazonSandbox``: start the sandbox Creators API on loopback and drive it over HTTP.

The handle speaks only HTTP to the sandbox's ``/_sandbox/`` control API (see the
``sandbox`` module's docstring), so the same class drives a sandbox in this process
(:func:`running_sandbox`, the ``amazon_sandbox`` pytest fixture) and one in another
process (``python -m arda_amazon_bp.testing --port 0``). docs/testing-your-integration.md
shows it in host tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from flask import Flask

from . import sandbox as cs

#: Seconds any control call may take (they answer at once unless the sandbox is stuck).
TIMEOUT = 5.0

#: A catalog item with every field the import returns (title, image, price, brand, …).
EXAMPLE_ASIN = "B0C7NTRL01"


@dataclass
class AmazonSandbox:
    """Drives one sandbox over HTTP; ``app`` is set when it runs in this process."""

    url: str
    app: Flask | None = None

    #: The variables the ``env`` credentials backend reads (``app_config(backend="env")``
    #: returns them; the host exports them, the backend never reads them from app config).
    CREDENTIAL_VARIABLES: ClassVar[tuple[str, ...]] = (
        "AMAZON_CREATORS_CREDENTIAL_ID",
        "AMAZON_CREATORS_CREDENTIAL_SECRET",
        "AMAZON_CREATORS_VERSION",
        "AMAZON_CREATORS_PARTNER_TAG",
    )

    # -- what a host test needs

    @property
    def config(self) -> dict[str, Any]:
        """App config pointing the plugin at this sandbox, with working credentials.

        Uses the ``config`` credentials backend (a 3.1 credential), so it needs no
        environment variable: ``app.config.update(amazon_sandbox.config)``.
        """
        return self.app_config()

    @property
    def example_url(self) -> str:
        """A product link whose import answers 200 with every field filled."""
        return f"https://{cs.DEFAULT_MARKETPLACE}/dp/{EXAMPLE_ASIN}"

    def stats(self, calls: bool = True) -> dict[str, Any]:
        """``GET /_sandbox/stats``: ``total_calls``, ``calls_by_status``, ``token_requests``…

        ``calls=False`` leaves out the per-call log (``calls``).
        """
        response = requests.get(
            self.url + "/_sandbox/stats", params={"calls": int(calls)}, timeout=TIMEOUT
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def fault(self, name: str, count: int = 1, endpoint: str = cs.GET_ITEMS, **params: Any) -> None:
        """Queue fault ``name`` (``"429"``, ``"status"``, ``"html"``, ``"reset"``, …) for the
        next ``count`` calls to ``endpoint`` (``"getItems"`` or ``"token"``)."""
        self._post(
            "/_sandbox/faults", {"fault": name, "count": count, "endpoint": endpoint, **params}
        )

    # -- control

    def clear_faults(self) -> None:
        """``DELETE /_sandbox/faults``."""
        requests.delete(self.url + "/_sandbox/faults", timeout=TIMEOUT).raise_for_status()

    def set_credentials(
        self,
        credentials: Iterable[cs.Credential | tuple[str, str, str]],
        partner_tags: Iterable[str] | None = None,
        revoke_tokens: bool = False,
    ) -> None:
        """Replace the accepted credentials (rotation tests)."""
        parsed = [cs.Credential.parse(c) for c in credentials]
        payload: dict[str, Any] = {
            "credentials": [[c.credential_id, c.credential_secret, c.version] for c in parsed],
            "revoke_tokens": revoke_tokens,
        }
        if partner_tags is not None:
            payload["partner_tags"] = list(partner_tags)
        self._post("/_sandbox/credentials", payload)

    def configure(self, **changes: Any) -> dict[str, Any]:
        """``POST /_sandbox/config``: rate, token_rate, window_seconds, token_expires_in, …"""
        if isinstance(changes.get("partner_tags"), (set, frozenset)):
            changes["partner_tags"] = sorted(changes["partner_tags"])
        return self._post("/_sandbox/config", changes)

    def expire_tokens(self) -> None:
        """Make every token issued so far expired."""
        self._post("/_sandbox/tokens/expire")

    def reset(self, full: bool = True) -> None:
        """Clear the call log; ``full`` also clears faults and restores config/credentials."""
        self._post("/_sandbox/reset", {"full": full})

    @property
    def state(self) -> cs.SandboxState:
        """The in-process state (only for a sandbox running in this process)."""
        if self.app is None:
            raise RuntimeError("this sandbox runs in another process; use its HTTP API")
        return cs.sandbox_state(self.app)

    # -- client-side helpers

    @staticmethod
    def credential(version: str = "2.1") -> cs.Credential:
        """The demo credential for ``version``."""
        return cs.Credential(cs.DEMO_CREDENTIAL_ID, cs.DEMO_CREDENTIAL_SECRET, version)

    def token_url(self, version: str = "2.1") -> str:
        """The sandbox token endpoint of the family of ``version``."""
        family = cs.credential_family(version)
        return self.url + (cs.COGNITO_TOKEN_PATH if family == cs.COGNITO else cs.LWA_TOKEN_PATH)

    def token(self, version: str = "2.1") -> str:
        """Fetch an access token for the demo credential, as a correct client would."""
        fields = {
            "grant_type": "client_credentials",
            "client_id": cs.DEMO_CREDENTIAL_ID,
            "client_secret": cs.DEMO_CREDENTIAL_SECRET,
        }
        if cs.credential_family(version) == cs.COGNITO:
            # Cognito takes a form body, Login with Amazon a JSON one (sandbox docstring).
            response = requests.post(
                self.token_url(version),
                data={**fields, "scope": cs.COGNITO_SCOPE},
                timeout=TIMEOUT,
            )
        else:
            response = requests.post(
                self.token_url(version), json={**fields, "scope": cs.LWA_SCOPE}, timeout=TIMEOUT
            )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def headers(self, version: str = "2.1", token: str | None = None) -> dict[str, str]:
        """Correct getItems headers for ``version`` (fetches a token when none is given)."""
        token = token or self.token(version)
        authorization = f"Bearer {token}"
        if cs.credential_family(version) == cs.COGNITO:
            authorization += f", Version {version}"
        return {"Authorization": authorization, "x-marketplace": cs.DEFAULT_MARKETPLACE}

    def get_items_url(self) -> str:
        """The sandbox getItems endpoint."""
        return self.url + cs.GET_ITEMS_PATH

    def app_config(self, version: str = "3.1", *, backend: str = "config") -> dict[str, Any]:
        """``AMAZON_*`` settings (docs/configuration.md) pointing the plugin at this sandbox.

        ``backend="config"`` carries the demo credential in ``AMAZON_CREDENTIALS``;
        ``backend="env"`` returns the ``env`` backend's four ``AMAZON_CREATORS_*``
        variables instead, for the caller to export (:attr:`CREDENTIAL_VARIABLES`).
        """
        config: dict[str, Any] = {
            "AMAZON_CREATORS_API_HOST": self.url,
            "AMAZON_TOKEN_URL": self.token_url(version),
            "AMAZON_MARKETPLACE": cs.DEFAULT_MARKETPLACE,
            "AMAZON_CREDENTIALS_BACKEND": backend,
        }
        if backend == "config":
            config["AMAZON_CREDENTIALS"] = {
                "credential_id": cs.DEMO_CREDENTIAL_ID,
                "credential_secret": cs.DEMO_CREDENTIAL_SECRET,
                "version": version,
                "partner_tag": cs.DEMO_PARTNER_TAG,
            }
        elif backend == "env":
            config.update(
                zip(
                    self.CREDENTIAL_VARIABLES,
                    (
                        cs.DEMO_CREDENTIAL_ID,
                        cs.DEMO_CREDENTIAL_SECRET,
                        version,
                        cs.DEMO_PARTNER_TAG,
                    ),
                    strict=True,
                )
            )
        else:
            raise ValueError(f"backend must be 'config' or 'env', not {backend!r}")
        return config

    def stores_config(self, us_version: str = "3.1") -> dict[str, Any]:
        """Config serving two stores from this sandbox (docs/configuration.md, "Several
        stores"): ``www.amazon.com`` on the demo credential (``us_version``, an NA version)
        with ``DEMO_PARTNER_TAG``, and ``www.amazon.co.uk`` on the demo EU credential
        (3.2) with ``DEMO_UK_PARTNER_TAG``; ``AMAZON_TOKEN_URL`` holds ``{version}``."""
        return {
            "AMAZON_CREATORS_API_HOST": self.url,
            "AMAZON_TOKEN_URL": self.url + "/_token/{version}",
            "AMAZON_MARKETPLACE": cs.DEFAULT_MARKETPLACE,
            "AMAZON_MARKETPLACES": f"{cs.DEFAULT_MARKETPLACE},{cs.UK_MARKETPLACE}",
            "AMAZON_CREDENTIALS_BACKEND": "config",
            "AMAZON_CREDENTIALS": {
                "credential_id": cs.DEMO_CREDENTIAL_ID,
                "credential_secret": cs.DEMO_CREDENTIAL_SECRET,
                "version": us_version,
                "partner_tag": cs.DEMO_PARTNER_TAG,
                "stores": {
                    "GB": {
                        "credential_id": cs.DEMO_EU_CREDENTIAL_ID,
                        "credential_secret": cs.DEMO_EU_CREDENTIAL_SECRET,
                        "version": "3.2",
                        "partner_tag": cs.DEMO_UK_PARTNER_TAG,
                    }
                },
            },
        }

    def _post(self, path: str, payload: Any = None) -> dict[str, Any]:
        response = requests.post(self.url + path, json=payload, timeout=TIMEOUT)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


@contextlib.contextmanager
def running_sandbox(config: cs.SandboxConfig | None = None) -> Iterator[AmazonSandbox]:
    """Serve a sandbox on 127.0.0.1 (a free port) from a thread until the block ends.

    ``config`` defaults to Amazon's own limits: 1 getItems call per second, the demo
    credential accepted as 2.1 (Cognito) and 3.1 (Login with Amazon).
    """
    app = cs.create_sandbox_app(config)
    url, shutdown = cs.serve_in_thread(app)
    try:
        yield AmazonSandbox(url, app)
    finally:
        shutdown()
