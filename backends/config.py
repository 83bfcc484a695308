"""``config`` backend: the four fields in the app config key ``AMAZON_CREDENTIALS``.

Meant for tests and local development (the pytest fixture ``amazon_sandbox`` uses it), so
a test app needs no environment variables and no file. A deployed app should keep its
secret out of the app config and use ``env``, ``file`` or ``onepassword``
(docs/configuration.md). ``AMAZON_CREDENTIALS`` holds ``{"credential_id",
"credential_secret", "version", "partner_tag"}`` and, for several stores,
``"stores": {"GB": {...}}`` (per-store fields over the default ones, ``store_fields``);
like every ``AMAZON_*`` key it may also come from the environment variable of the same
name, as a JSON object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from arda_amazon_bp import config
from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import FIELDS, Credentials, store_fields, validate
from arda_amazon_bp.hookspecs import hookimpl

KEY = "AMAZON_CREDENTIALS"


class ConfigBackend:
    """Serves the mapping it was given; a mutable mapping is re-read at every load."""

    name = "config"

    def __init__(self, fields: Mapping[str, Any], marketplace: str | None = None) -> None:
        self._fields = fields
        self.marketplace = marketplace

    def load(self) -> Credentials:
        """The four fields, validated; the error names the field, never its value."""
        return validate(store_fields(self._fields, self.marketplace), f"app config {KEY}")

    #: A load reads the app config only: ``init_app`` checks the set against its store.
    loads_without_io = True

    def __repr__(self) -> str:
        return "ConfigBackend()"


def from_config(app_config: Mapping[str, Any], marketplace: str | None = None) -> ConfigBackend:
    """A backend for ``AMAZON_CREDENTIALS``; ``ConfigError`` when it is unset or no object."""
    fields = config.read(app_config, KEY)
    if fields is None:
        raise ConfigError(
            f"{KEY} must be set to a mapping of {', '.join(FIELDS)} when "
            "AMAZON_CREDENTIALS_BACKEND is 'config'"
        )
    if not isinstance(fields, Mapping):
        # The type only: a string here may well be the secret itself.
        raise ConfigError(
            f"{KEY} must be a mapping of {', '.join(FIELDS)}, got {type(fields).__name__}"
        )
    return ConfigBackend(fields, marketplace)


@hookimpl
def arda_amazon_credential_backends(
    marketplace: str | None,
) -> dict[str, Callable[[Mapping[str, Any]], ConfigBackend]]:
    """Offer ``config``."""
    return {"config": lambda app_config: from_config(app_config, marketplace)}
