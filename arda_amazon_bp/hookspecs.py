"""Every pluggy hook of arda_amazon_bp, each documented here (and checked by a test).

Plugins implement hooks with :data:`hookimpl` and are either registered on an
extension's ``plugin_manager`` or found through the setuptools entry-point group
``arda_amazon_bp``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from flask import Request

    from .credentials import CredentialBackend

PROJECT_NAME = "arda_amazon_bp"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec(firstresult=True)
def arda_amazon_authenticate(request: Request) -> Any | None:
    """Return the principal making ``request``, or ``None`` when it is not authenticated.

    The host BFF decides what a principal is (a user object, a token's claims …); the
    first non-``None`` answer wins. Only a *truthy* answer lets the request in (fail
    closed): ``None``, ``False``, ``""``, ``0`` or an empty container answers 401
    ``AUTHENTICATION_REQUIRED``. With no implementation registered every import is
    refused, unless the app's own config sets ``AMAZON_IMPORT_AUTH_DISABLED = True``
    (demo only).
    """


@hookspec(firstresult=True)
def arda_amazon_principal_key(principal: Any) -> str | None:
    """Return the key that ``AMAZON_PRINCIPAL_LIMITS`` counts ``principal`` under.

    ``principal`` is what ``arda_amazon_authenticate`` returned (``None`` only with
    authentication disabled). Two principals with one key share one budget, so return
    something stable and unique per user (a user id, a token's ``sub``). The first
    non-``None`` answer wins; the built-in implementation, asked last, answers
    ``principal["id"]`` or ``principal.id`` when present, else ``str(principal)``. The
    key is hashed before it is stored.
    """


@hookspec
def arda_amazon_credential_backends(
    marketplace: str | None,
) -> Mapping[str, Callable[[Mapping[str, Any]], CredentialBackend]]:
    """Return ``{name: factory}`` of credential backends this plugin provides.

    ``marketplace`` is the store the backend will load for (its canonical host, e.g.
    ``"www.amazon.co.uk"``; one backend is built per served store, see
    ``AMAZON_MARKETPLACES``), or ``None`` when a caller wants the default set.
    ``factory(config)`` receives the app's config mapping and returns an object with
    ``load() -> Credentials`` (raising ``CredentialsError`` with a message that names
    what to fix and never contains a secret). ``AMAZON_CREDENTIALS_BACKEND`` picks one
    by name; the built-ins ``env``, ``file``, ``config`` and ``onepassword`` register
    through this very hook. An implementation written before stores existed may leave
    ``marketplace`` out (pluggy passes only the arguments an implementation names): its
    backend then serves every store, and a set whose region does not serve a store is
    refused for that store (docs/plugins.md, "Migrating to several stores").
    """


@hookspec
def arda_amazon_upstream_call(event: Mapping[str, Any]) -> None:
    """Observe one finished call to Amazon (for metrics or tracing).

    ``event`` holds ``kind`` (``"token"`` or ``"getItems"``), ``marketplace``,
    ``asins`` (list, empty for tokens), ``status`` (HTTP status or ``None`` when no
    answer came), ``outcome`` (``"ok"`` or an upstream reason such as ``"timeout"``),
    and ``elapsed`` in seconds. It never contains a credential or a token. Exceptions
    raised by an implementation are logged and ignored. Runs on a lookup thread, inside
    the app's app context (``current_app`` works; docs/plugins.md, *Where hooks run*).
    """


@hookspec
def arda_amazon_upstream_event(name: str, details: Mapping[str, Any]) -> None:
    """Be told of an account-level event that needs a person, e.g. to page someone.

    ``name`` is ``"associate_not_eligible"`` when Amazon answers ``AssociateNotEligible``
    (the account lost Creators API access, usually because qualifying sales lapsed) or
    ``"credentials_rejected"`` when Amazon refuses the credential itself. Called at most
    once per event name per ``AMAZON_UPSTREAM_EVENT_INTERVAL_SECONDS`` per process.
    ``details`` never contains a secret. Runs inside the app's app context, usually on a
    lookup thread.
    """
