"""``env`` backend: the four ``AMAZON_CREATORS_*`` environment variables (CI, containers).

A variable whose value is a 1Password secret reference (``op://vault/item/field``) is
read with ``op read`` as the service account of ``OP_SERVICE_ACCOUNT_TOKEN`` (:mod:`op_cli`),
never used as the value: a deployment can keep only references in its environment,
with or without ``op run`` (which would have replaced them before the process started).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from arda_amazon_bp.credentials import FIELDS, Credentials, CredentialsError, validate
from arda_amazon_bp.hookspecs import hookimpl

from . import op_cli

#: credential field -> environment variable
VARIABLES: dict[str, str] = {name: f"AMAZON_CREATORS_{name.upper()}" for name in FIELDS}


def variables_for(marketplace: str | None) -> dict[str, list[str]]:
    """credential field -> the variables read for it, the store's own first.

    ``AMAZON_CREATORS_<CC>_*`` (CC: the store's ISO country code, ``GB`` for
    ``www.amazon.co.uk``) wins over the unsuffixed variable, field by field, so a store
    that shares the default credential may set only its partner tag.
    """
    from arda_amazon_bp.marketplaces import MARKETPLACES

    store = MARKETPLACES.get(marketplace) if marketplace else None
    return {
        name: ([f"AMAZON_CREATORS_{store.country}_{name.upper()}"] if store else []) + [var]
        for name, var in VARIABLES.items()
    }


class EnvBackend:
    """Reads the variables at every load, so a changed environment is picked up.

    ``environ`` defaults to the process environment (read at load time, not copied).
    ``marketplace`` selects the store's own ``AMAZON_CREATORS_<CC>_*`` variables.
    """

    name = "env"

    def __init__(
        self, environ: Mapping[str, str] | None = None, marketplace: str | None = None
    ) -> None:
        self._environ = environ
        self.marketplace = marketplace
        self._variables = variables_for(marketplace)

    def load(self) -> Credentials:
        """The four variables (references read with op), validated; a missing or empty
        one, or a reference op cannot read, is named in the error."""
        environ = os.environ if self._environ is None else self._environ
        chosen: dict[str, str] = {}
        missing: dict[str, str] = {}
        for name, candidates in self._variables.items():
            found = next((var for var in candidates if environ.get(var, "").strip()), None)
            if found is None:
                missing[name] = " or ".join(candidates)
            else:
                chosen[name] = found
        if missing:
            raise CredentialsError(
                f"environment variable(s) not set: {', '.join(missing.values())}",
                missing=missing,
            )
        fields: dict[str, str] = {}
        for name, var in chosen.items():
            value = environ[var]
            if op_cli.is_reference(value):
                # One op read per reference and load; the message names the variable only.
                try:
                    value = op_cli.read_reference(value, var, environ=environ)
                except CredentialsError as exc:
                    raise CredentialsError(exc.message, missing=(name,)) from None
            fields[name] = value
        return validate(fields, "environment variables AMAZON_CREATORS_*")

    @property
    def loads_without_io(self) -> bool:
        """True when a load only reads variables (no ``op://`` reference to run op for):
        ``init_app`` then checks the set against its store at once."""
        environ = os.environ if self._environ is None else self._environ
        return not any(
            op_cli.is_reference(environ.get(var))
            for candidates in self._variables.values()
            for var in candidates
        )

    def __repr__(self) -> str:
        return "EnvBackend()" if self.marketplace is None else f"EnvBackend({self.marketplace!r})"


@hookimpl
def arda_amazon_credential_backends(
    marketplace: str | None,
) -> dict[str, Callable[[Mapping[str, Any]], EnvBackend]]:
    """Offer ``env``; it needs no configuration key of its own."""
    return {"env": lambda config: EnvBackend(marketplace=marketplace)}
