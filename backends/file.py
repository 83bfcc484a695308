"""``file`` backend: a JSON file of the four fields (a developer laptop, a mounted secret).

The file holds ``{"credential_id", "credential_secret", "version", "partner_tag"}`` (and,
for several stores, ``"stores": {"GB": {...}}``, whose fields win for that store) and
must be readable by its owner only — like ssh with a private key, a group- or
world-readable file is refused (``chmod 600 <path>``), and so is anything but a regular
file (a FIFO, a device), without blocking on it. It is re-read at every load, so
replacing it rotates the credentials without a restart.

A field whose value is a 1Password secret reference (``op://vault/item/field``) is read
with ``op read`` (:mod:`op_cli`), so the file may hold references instead of secrets.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from arda_amazon_bp import config
from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import (
    FIELDS,
    Credentials,
    CredentialsError,
    store_fields,
    validate,
)
from arda_amazon_bp.hookspecs import hookimpl

from . import op_cli

KEY = "AMAZON_CREDENTIALS_FILE"

#: Permission bits that let anyone but the owner read, write or execute the file.
_NOT_OWNER_ONLY = stat.S_IRWXG | stat.S_IRWXO


class FileBackend:
    """Reads and checks ``path`` at every load."""

    name = "file"

    def __init__(self, path: str | os.PathLike[str], marketplace: str | None = None) -> None:
        self.path = Path(path).expanduser()
        #: The store whose entry under ``"stores"`` wins over the default set, if any.
        self.marketplace = marketplace

    def load(self) -> Credentials:
        """The file's four fields, validated, or a :class:`CredentialsError` saying what to fix."""
        path = self.path
        try:
            raw = _read_regular_file(path)
        except FileNotFoundError:
            raise CredentialsError(
                f"credentials file {path} does not exist (set {KEY} to the JSON file holding "
                f"{', '.join(FIELDS)})",
                missing=FIELDS,
            ) from None
        except IsADirectoryError:
            raise CredentialsError(f"credentials file {path} is a directory") from None
        except PermissionError:
            raise CredentialsError(
                f"credentials file {path} cannot be read by this process (user id {os.getuid()})"
            ) from None
        except OSError as exc:
            raise CredentialsError(
                f"credentials file {path} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
        data = _parse(raw)
        if data is _INVALID:
            # No parser detail: a JSON error quotes the text around the fault (the secret).
            raise CredentialsError(
                f"credentials file {path} is not valid UTF-8 JSON", missing=FIELDS
            )
        if not isinstance(data, dict):
            raise CredentialsError(
                f"credentials file {path} must hold a JSON object with {', '.join(FIELDS)}; "
                f"found a JSON {_json_type(data)}",
                missing=FIELDS,
            )
        data = store_fields(data, self.marketplace)
        for name in FIELDS:
            if op_cli.is_reference(data.get(name)):
                source = f"field {name} of credentials file {path}"
                try:
                    data[name] = op_cli.read_reference(data[name], source)
                except CredentialsError as exc:
                    raise CredentialsError(exc.message, missing=(name,)) from None
        return validate(data, f"credentials file {path}")

    def __repr__(self) -> str:
        return f"FileBackend(path={str(self.path)!r})"


_INVALID = object()


def _open(path: Path) -> int:
    """A read-only descriptor, opened without blocking: a FIFO with no writer would
    block a plain ``open`` forever, before any check could refuse it."""
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))


def _read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is an owner-only regular file; else a CredentialsError.

    The open descriptor is checked (``fstat``), not the path: no window for a swap
    between the check and the read.
    """
    fd = _open(path)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(21, "Is a directory", str(path))
        if not stat.S_ISREG(mode):
            raise CredentialsError(f"credentials file {path} is not a regular file")
        if mode & _NOT_OWNER_ONLY:
            raise CredentialsError(
                f"credentials file {path} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
            )
        # O_NONBLOCK does not affect reads of a regular file.
        return handle.read()


def _parse(raw: bytes) -> Any:
    """The JSON value, or ``_INVALID`` (``None`` is JSON's null)."""
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        return _INVALID


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def from_config(app_config: Mapping[str, Any], marketplace: str | None = None) -> FileBackend:
    """A backend for ``AMAZON_CREDENTIALS_FILE``; raises ``ConfigError`` when it is unset."""
    path = config.read(app_config, KEY)
    if path is None or (isinstance(path, str) and not path.strip()):
        raise ConfigError(
            f"{KEY} must be set to the path of the credentials JSON file when "
            "AMAZON_CREDENTIALS_BACKEND is 'file'"
        )
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"{KEY} must be a path, got {type(path).__name__}")
    return FileBackend(os.fspath(path).strip() if isinstance(path, str) else path, marketplace)


@hookimpl
def arda_amazon_credential_backends(
    marketplace: str | None,
) -> dict[str, Callable[[Mapping[str, Any]], FileBackend]]:
    """Offer ``file``."""
    return {"file": lambda app_config: from_config(app_config, marketplace)}
