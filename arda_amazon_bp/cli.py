"""``flask amazon …``: the operators' per-partition checks of the deploy runbook.

* ``check-credentials`` — load the credentials through the configured backend (a fresh
  read, not the cache) and say which fields were found, the version and the marketplace;
* ``smoke`` — one real ``getItems`` for a known ASIN, with its title and latency;
* ``quota`` — the credential's quota windows as the limiter's storage sees them.

Each exits 0 when all is well and 1 with a one-line reason otherwise (2 for usage
errors, as click does), and ``--json`` prints one JSON object for pipelines. Nothing
printed ever holds a secret: the credential id is masked to its last 4 characters, and
every line passes through a scrubber that removes the secret, the full id and
``OP_SERVICE_ACCOUNT_TOKEN`` should any message quote them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any, NoReturn

import click
from flask import current_app
from flask.cli import AppGroup

from . import config
from .credentials import FIELDS, Credentials, CredentialsError, mask
from .errors import AmazonImportError
from .marketplaces import MARKETPLACES, REGION_BY_VERSION
from .quota import slots_for_retries

EXTENSION_NAME = "arda_amazon_bp"

#: ASIN the smoke test looks up unless ``--asin`` or ``AMAZON_SMOKE_ASIN`` says otherwise:
#: a perennial bestseller on www.amazon.com (a book's ASIN is its ISBN-10, so it does not
#: change with relistings). Other marketplaces should set ``AMAZON_SMOKE_ASIN``.
DEFAULT_SMOKE_ASIN = "0735211299"
SMOKE_ASIN_KEY = "AMAZON_SMOKE_ASIN"

_ASIN = re.compile(r"^[A-Z0-9]{10}$")

#: What an operator should do about an upstream ``details.reason`` (printed as ``hint:``).
OPERATOR_HINTS: dict[str, str] = {
    "associate_not_eligible": (
        "Amazon has revoked Creators API access for this Associates account, usually "
        "because it no longer meets the qualifying-sales requirement. New credentials "
        "will not help: check the account in Associates Central and tell its owner."
    ),
    "invalid_partner_tag": (
        "the partner tag is not a tracking id of the Associates store these credentials "
        "belong to; fix the partner-tag field of the credential set."
    ),
    "credentials_rejected": (
        "Amazon refused the credential id or secret; rotate them where the backend reads "
        "them, then run `flask amazon check-credentials` again."
    ),
}

amazon_cli = AppGroup(
    "amazon",
    help="Operator checks for the Amazon import plugin: credentials, a smoke test, quota.",
)


class _Output:
    """Prints human lines or one JSON object, scrubbing anything secret from both."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._secrets: dict[str, str] = {}
        token = os.environ.get("OP_SERVICE_ACCOUNT_TOKEN", "")
        if token.strip():
            self._secrets[token] = "<OP_SERVICE_ACCOUNT_TOKEN>"

    def learn(self, credentials: Credentials) -> None:
        """Scrub this set's secret and full id from everything printed from now on."""
        self._secrets[credentials.credential_secret] = "<secret>"
        self._secrets[credentials.credential_id] = mask(credentials.credential_id)

    def scrub(self, text: str) -> str:
        # Longest first, so a secret containing another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, self._secrets[secret])
        return text

    def line(self, text: str = "") -> None:
        if not self.as_json:
            click.echo(self.scrub(text))

    def result(
        self, payload: Mapping[str, Any], *, ok: bool, reason: str | None = None
    ) -> NoReturn:
        """Print the outcome and exit 0 (``ok``) or 1."""
        if self.as_json:
            body = {"ok": ok, **payload, "error": None if ok else self.scrub(reason or "")}
            click.echo(self.scrub(json.dumps(body, ensure_ascii=False, sort_keys=True)))
        elif ok:
            click.echo(self.scrub(f"OK: {reason}" if reason else "OK"))
        else:
            click.echo(self.scrub(f"FAIL: {reason}"), err=True)
        click.get_current_context().exit(0 if ok else 1)


def _state() -> Any:
    state = current_app.extensions.get(EXTENSION_NAME)
    if state is None:
        raise click.ClickException(
            "arda_amazon_bp is not initialised on this app (AmazonImport(app, api) missing)"
        )
    return state


class _StoreView:
    """The extension state as one store sees it: that store's credentials and client,
    ``settings.marketplace`` set to it; everything else (quota, plugins) is the app's."""

    def __init__(self, state: Any, marketplace: str) -> None:
        self._state = state
        store = (getattr(state, "stores", None) or {}).get(marketplace)
        self.settings = dataclasses.replace(state.settings, marketplace=marketplace)
        self.credentials = store.credentials if store is not None else state.credentials
        self.client = store.client if store is not None else state.client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._state, name)


def _marketplace_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--marketplace",
        default=None,
        metavar="HOST",
        help="One served store (e.g. www.amazon.co.uk); default: every served store.",
    )(command)


def _per_store(marketplace: str | None, as_json: bool, run: Callable[[Any], None]) -> None:
    """Run ``run`` once per selected store (``--marketplace``, else every served store,
    primary first) and exit with the worst status. With several stores each gets a
    ``== <host>`` heading (text) or its own JSON object on its own line (``--json``)."""
    state = _state()
    served = list(getattr(state, "stores", None) or state.settings.marketplaces)
    if marketplace is not None:
        host = marketplace.strip().lower()
        if host not in served:
            raise click.BadParameter(
                f"{marketplace!r} is not a served store; served: {', '.join(served)}",
                param_hint="--marketplace",
            )
        served = [host]
    if len(served) == 1:
        run(_StoreView(state, served[0]))
        return
    worst = 0
    for host in served:
        if not as_json:
            click.echo(f"== {host}")
        try:
            run(_StoreView(state, host))
        except click.exceptions.Exit as exc:
            worst = max(worst, exc.exit_code)
    click.get_current_context().exit(worst)


def _upstream_reason(exc: AmazonImportError) -> str:
    reason = exc.details.get("reason") or exc.details.get("source")
    return f"{exc.code.value}{f' ({reason})' if reason else ''}: {exc.message}"


def _hint(out: _Output, report: dict[str, Any], exc: AmazonImportError) -> None:
    """Add the operator hint for the error's reason, if there is one, to both outputs."""
    hint = OPERATOR_HINTS.get(str(exc.details.get("reason")))
    if hint is not None:
        report["hint"] = hint
        out.line(f"hint: {hint}")


def _unexpected(exc: Exception) -> str:
    # The type only: an arbitrary exception's text may quote what it was handling.
    return f"unexpected {type(exc).__name__}; see the application log"


def _json_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object instead of text."
    )(command)


# --- check-credentials ------------------------------------------------------------------


def _fields_found(missing: Iterable[str] | None) -> dict[str, bool | None]:
    if missing is None:
        return dict.fromkeys(FIELDS)
    absent = set(missing)
    return {name: name not in absent for name in FIELDS}


def _describe_fields(found: Mapping[str, bool | None]) -> str:
    if all(value is None for value in found.values()):
        return "not read"
    return ", ".join(f"{name} {'found' if ok else 'MISSING'}" for name, ok in found.items())


@amazon_cli.command("check-credentials")
@_marketplace_option
@_json_option
def check_credentials(marketplace: str | None, as_json: bool) -> None:
    """Load the credentials through the configured backend and check them.

    Reads afresh (bypassing the cache), reports the 1Password CLI's version when the
    backend runs op, which of the four fields were found, the version and its family,
    the partner tag, the masked credential id and whether the version's region serves
    the store. Checks every served store unless --marketplace names one; exit status 0
    when every checked store's set is usable, else 1.
    """
    _per_store(marketplace, as_json, lambda state: _check_credentials(state, as_json))


def _check_credentials(state: Any, as_json: bool) -> None:
    out = _Output(as_json)
    settings = state.settings
    backend = state.credentials.backend
    report: dict[str, Any] = {
        "backend": settings.credentials_backend,
        "source": repr(backend),
        "marketplace": settings.marketplace,
        "fields": dict.fromkeys(FIELDS),
    }
    out.line(f"backend:       {settings.credentials_backend} ({backend!r})")
    out.line(f"marketplace:   {settings.marketplace}")
    # Backends that run the 1Password CLI say which op they run (docs/runbook.md, 2.2).
    op_version = getattr(backend, "op_version", None)
    if callable(op_version):
        try:
            report["opVersion"] = str(op_version())
        except CredentialsError as exc:
            report["opVersion"] = None
            out.line(f"op version:    unknown ({exc.message})")
        else:
            out.line(f"op version:    {report['opVersion']}")
    try:
        credentials: Credentials = state.credentials.reload()
    except CredentialsError as exc:
        report["fields"] = _fields_found(exc.missing)
        out.line(f"fields:        {_describe_fields(report['fields'])}")
        out.result(report, ok=False, reason=f"credentials could not be loaded: {exc.message}")
    except Exception as exc:
        out.result(report, ok=False, reason=_unexpected(exc))
    out.learn(credentials)

    marketplace = MARKETPLACES.get(settings.marketplace)
    region = REGION_BY_VERSION.get(credentials.version)
    served = marketplace is not None and marketplace.region == region
    report.update(
        fields=_fields_found(()),
        version=credentials.version,
        family=credentials.family,
        region=region,
        partnerTag=credentials.partner_tag,
        credentialId=mask(credentials.credential_id),
        marketplaceRegion=marketplace.region if marketplace else None,
        marketplaceServed=served,
        token={"checked": False, "seconds": None},
    )
    out.line(f"fields:        {_describe_fields(report['fields'])}")
    out.line(f"version:       {credentials.version} ({credentials.family}, region {region})")
    out.line(f"partner tag:   {credentials.partner_tag}")
    out.line(f"credential id: {mask(credentials.credential_id)}")
    if marketplace is None:
        out.result(
            report,
            ok=False,
            reason=f"AMAZON_MARKETPLACE {settings.marketplace!r} is not a known marketplace",
        )
    if not served:
        out.result(
            report,
            ok=False,
            reason=(
                f"credential version {credentials.version} serves region {region}, but "
                f"AMAZON_MARKETPLACE {settings.marketplace} is in region {marketplace.region}"
            ),
        )

    out.line("eligibility:   Amazon tells per getItems call; `flask amazon smoke` shows it")
    check_token = getattr(state.client, "check_token", None)
    if not callable(check_token):
        out.line("token:         not checked here; `flask amazon smoke` requests one")
        out.result(report, ok=True, reason="credentials load and match the marketplace")
    try:
        seconds = float(check_token())
    except AmazonImportError as exc:
        report["token"] = {"checked": True, "seconds": None}
        _hint(out, report, exc)
        out.result(report, ok=False, reason=f"token request failed: {_upstream_reason(exc)}")
    except Exception as exc:
        out.result(report, ok=False, reason=_unexpected(exc))
    report["token"] = {"checked": True, "seconds": round(seconds, 3)}
    out.line(f"token:         issued in {seconds:.2f} s")
    out.result(report, ok=True, reason="credentials load, match the marketplace and get a token")


# --- smoke --------------------------------------------------------------------------------


def _smoke_asin(given: str | None) -> str:
    value: Any = given if given is not None else config.read(current_app.config, SMOKE_ASIN_KEY)
    if value is None or value == "":
        value = DEFAULT_SMOKE_ASIN
    # An environment value that looks like a number arrives parsed as JSON.
    asin = str(value).strip().upper()
    if not _ASIN.match(asin):
        source = "--asin" if given is not None else SMOKE_ASIN_KEY
        raise click.BadParameter(
            f"{asin!r} is not an ASIN (10 letters or digits)", param_hint=source
        )
    return asin


def _title(item: Mapping[str, Any]) -> str | None:
    title = item.get("itemInfo", {}).get("title", {}).get("displayValue")
    return title if isinstance(title, str) else None


@amazon_cli.command("smoke")
@click.option(
    "--asin",
    default=None,
    help=f"ASIN to look up (default: {SMOKE_ASIN_KEY}, else {DEFAULT_SMOKE_ASIN}).",
)
@_json_option
@_marketplace_option
def smoke(asin: str | None, marketplace: str | None, as_json: bool) -> None:
    """Look up one known ASIN with a real getItems call (takes one quota slot).

    Prints the title, the latency and the partner tag used, for every served store
    unless --marketplace names one (set AMAZON_SMOKE_ASIN or --asin to an ASIN sold in
    each). Exit status 0 when Amazon returned the item, else 1 with the error code,
    reason and message.
    """
    chosen = _smoke_asin(asin)
    _per_store(marketplace, as_json, lambda state: _smoke(state, chosen, as_json))


def _smoke(state: Any, asin: str, as_json: bool) -> None:
    out = _Output(as_json)
    settings = state.settings
    report: dict[str, Any] = {"asin": asin, "marketplace": settings.marketplace}
    try:
        credentials: Credentials = state.credentials.get()
    except CredentialsError as exc:
        out.result(report, ok=False, reason=f"credentials could not be loaded: {exc.message}")
    out.learn(credentials)
    report["credentialId"] = mask(credentials.credential_id)

    try:
        slot_taken_at = state.quota.acquire(credentials.quota_key)
    except AmazonImportError as exc:
        out.result(report, ok=False, reason=f"no quota slot: {_upstream_reason(exc)}")

    # The first attempt's slot is taken above; a retry needs its own.
    before_call = slots_for_retries(state.quota, slot_taken_at)

    started = time.perf_counter()
    try:
        result = state.client.get_items(settings.marketplace, [asin], before_call=before_call)
    except AmazonImportError as exc:
        report.update(
            code=exc.code.value,
            reason=exc.details.get("reason"),
            latency=round(time.perf_counter() - started, 3),
        )
        _hint(out, report, exc)
        out.result(report, ok=False, reason=f"getItems failed: {_upstream_reason(exc)}")
    except Exception as exc:
        out.result(report, ok=False, reason=_unexpected(exc))
    latency = time.perf_counter() - started
    out.learn(result.credentials)
    report.update(latency=round(latency, 3), partnerTag=result.credentials.partner_tag)

    if asin in result.errors:
        error = result.errors[asin]
        report.update(code=error.code)
        out.result(
            report, ok=False, reason=f"Amazon returned no item: {error.code}: {error.message}"
        )
    item = result.items.get(asin)
    if item is None:
        out.result(report, ok=False, reason="Amazon's answer did not include the ASIN")
    title = _title(item)
    report.update(title=title, detailPageUrl=item.get("detailPageURL"))
    out.line(f"asin:        {asin} on {settings.marketplace}")
    out.line(f"title:       {title if title is not None else '(none returned)'}")
    out.line(f"latency:     {latency:.2f} s")
    out.line(f"partner tag: {result.credentials.partner_tag}")
    out.result(report, ok=True, reason="getItems answered")


# --- quota --------------------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, timezone.utc)
        .isoformat(timespec="seconds")
        .replace("+00:00", "Z")
    )


@amazon_cli.command("quota")
@_marketplace_option
@_json_option
def quota(marketplace: str | None, as_json: bool) -> None:
    """Show the quota windows of each store's credential: limit, used, remaining, reset (UTC).

    Every served store unless --marketplace names one; stores sharing a credential show
    the same bucket (same quota key).
    """
    _per_store(marketplace, as_json, lambda state: _quota(state, as_json))


def _quota(state: Any, as_json: bool) -> None:
    out = _Output(as_json)
    try:
        credentials: Credentials = state.credentials.get()
    except CredentialsError as exc:
        out.result({}, ok=False, reason=f"credentials could not be loaded: {exc.message}")
    out.learn(credentials)
    key = credentials.quota_key
    try:
        windows = list(state.quota.status(key))
    except AmazonImportError as exc:
        out.result({}, ok=False, reason=f"quota storage: {_upstream_reason(exc)}")
    except Exception as exc:
        out.result({}, ok=False, reason=f"quota storage: {_unexpected(exc)}")
    report: dict[str, Any] = {
        "credentialId": mask(credentials.credential_id),
        "quotaKey": key,
        "windows": [
            {
                "limit": w.limit,
                "amount": w.amount,
                "used": w.used,
                "remaining": w.remaining,
                "resetAt": _iso(w.reset_at),
            }
            for w in windows
        ],
    }
    out.line(f"credential {mask(credentials.credential_id)} (quota key {key})")
    out.line(f"{'limit':<20} {'used':>7} {'remaining':>10}  resets at (UTC)")
    for w in windows:
        out.line(f"{w.limit:<20} {w.used:>7} {w.remaining:>10}  {_iso(w.reset_at)}")
    out.result(report, ok=True)
