"""An example third-party plugin for arda_amazon_bp.

It adds two things through pluggy hooks:

* a credential backend named ``mounted-secret`` that reads the four fields from a
  directory with one file per field — the way Kubernetes mounts a Secret volume —
  chosen with ``AMAZON_CREDENTIALS_BACKEND = "mounted-secret"`` and
  ``MOUNTED_SECRET_DIR = "/var/run/secrets/amazon"``;
* an ``arda_amazon_authenticate`` hook that accepts an ``X-Api-Key`` header listed in
  the app's ``EXAMPLE_API_KEYS``.

Installed, it is found through the ``arda_amazon_bp`` entry point in ``setup.cfg``.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from flask import Request, current_app

from arda_amazon_bp import hookimpl
from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import Credentials, CredentialsError, validate

#: file name in the secret directory -> credential field
FILES = {
    "credential-id": "credential_id",
    "credential-secret": "credential_secret",
    "version": "version",
    "partner-tag": "partner_tag",
}


class MountedSecretBackend:
    """Reads the directory at every load, so an updated Secret rotates the credentials."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def load(self) -> Credentials:
        fields: dict[str, str] = {}
        for filename, field in FILES.items():
            path = self.directory / filename
            if not path.is_file():
                continue  # reported below, by name, with the other missing ones
            try:
                fields[field] = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise CredentialsError(f"cannot read {path}: {type(exc).__name__}") from None
        missing = [field for field in FILES.values() if field not in fields]
        if missing:
            # Name what to fix; never include a value.
            raise CredentialsError(
                f"no file for {', '.join(missing)} in {self.directory}", missing=missing
            )
        return validate(fields, f"mounted secret {self.directory}")

    def __repr__(self) -> str:  # shown by `flask amazon check-credentials`
        return f"MountedSecretBackend({str(self.directory)!r})"


def mounted_secret(config: Mapping[str, Any]) -> MountedSecretBackend:
    directory = config.get("MOUNTED_SECRET_DIR")
    if not directory:
        raise ConfigError("MOUNTED_SECRET_DIR must name the directory of the mounted secret")
    return MountedSecretBackend(str(directory))


@hookimpl
def arda_amazon_credential_backends() -> dict[str, Callable[[Mapping[str, Any]], Any]]:
    return {"mounted-secret": mounted_secret}


@hookimpl
def arda_amazon_authenticate(request: Request) -> dict[str, str] | None:
    presented = request.headers.get("X-Api-Key", "")
    for key in current_app.config.get("EXAMPLE_API_KEYS", ()):
        if presented and hmac.compare_digest(presented.encode(), key.encode()):
            return {"api_key": "…" + key[-4:]}
    return None  # not ours: another implementation may still accept the request
