"""``env`` backend: the four ``AMAZON_CREATORS_*`` environment variables (CI, containers)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from arda_amazon_bp.credentials import FIELDS, Credentials, CredentialsError, validate
from arda_amazon_bp.hookspecs import hookimpl

#: credential field -> environment variable
VARIABLES: dict[str, str] = {name: f"AMAZON_CREATORS_{name.upper()}" for name in FIELDS}


class EnvBackend:
    """Reads the variables at every load, so a changed environment is picked up.

    ``environ`` defaults to the process environment (read at load time, not copied).
    """

    name = "env"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def load(self) -> Credentials:
        """The four variables, validated; a missing or empty one is named in the error."""
        environ = os.environ if self._environ is None else self._environ
        missing = {name: var for name, var in VARIABLES.items() if not environ.get(var, "").strip()}
        if missing:
            raise CredentialsError(
                f"environment variable(s) not set: {', '.join(missing.values())}",
                missing=missing,
            )
        fields = {name: environ[var] for name, var in VARIABLES.items()}
        return validate(fields, "environment variables AMAZON_CREATORS_*")

    def __repr__(self) -> str:
        return "EnvBackend()"


@hookimpl
def arda_amazon_credential_backends() -> dict[str, Callable[[Mapping[str, Any]], EnvBackend]]:
    """Offer ``env``; it needs no configuration key of its own."""
    return {"env": lambda config: EnvBackend()}
