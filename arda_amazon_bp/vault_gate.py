"""The pre-deploy vault gate: ``arda-amazon check-vaults`` (docs/runbook.md, Gate 1c).

For each partition (Dev, Stage, Demo, Prod by default) it loads the credential item from
the partition's vault ``Arda-{P}OAM`` through the ``onepassword`` backend, exactly as the
deployed BFF will, and checks the four fields: their format, that the version's region
serves the marketplace, and the partner tag's shape. It needs no Flask app and no
``AMAZON_*`` setting — only ``op`` and ``OP_SERVICE_ACCOUNT_TOKEN`` — so CI can run it
before a deploy.

Exit status 0 only when every checked partition is OK, 1 otherwise, 2 for usage errors.
Nothing printed holds a secret, the token or a full credential id: ids are masked to
their last 4 characters, and every line passes through a scrubber that replaces the
secrets and ids it has seen and the token, should a message quote them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import click
import pluggy

from .config import DEFAULTS, ConfigError
from .credentials import Credentials, CredentialsError, backend_from_plugins, mask
from .marketplaces import MARKETPLACES, REGION_BY_VERSION
from .partitions import DEFAULT_ITEM, PARTITIONS, canonical_partition, vault_of
from .plugins import make_plugin_manager

TOKEN_VARIABLE = "OP_SERVICE_ACCOUNT_TOKEN"  # noqa: S105 - the variable name, not a token

__all__ = ["PartitionResult", "check_partition", "check_vaults", "check_vaults_command"]


@dataclass(frozen=True)
class PartitionResult:
    """The outcome for one partition; ``problem`` says what to fix when not ``ok``."""

    partition: str
    vault: str
    item: str
    ok: bool
    problem: str | None = None
    version: str | None = None
    region: str | None = None
    partner_tag: str | None = None
    credential_id: str | None = None  # masked
    marketplace: str | None = None  # set when several stores are checked

    def as_json(self) -> dict[str, Any]:
        store = {} if self.marketplace is None else {"marketplace": self.marketplace}
        return {
            **store,
            "partition": self.partition,
            "vault": self.vault,
            "item": self.item,
            "ok": self.ok,
            "problem": self.problem,
            "version": self.version,
            "region": self.region,
            "partnerTag": self.partner_tag,
            "credentialId": self.credential_id,
        }


def check_partition(
    partition: str,
    *,
    item: str = DEFAULT_ITEM,
    marketplace: str = str(DEFAULTS["AMAZON_MARKETPLACE"]),
    seen: list[Credentials] | None = None,
    plugin_manager: pluggy.PluginManager | None = None,
    stores: Iterable[str] | None = None,
) -> PartitionResult:
    """Load and check one partition's item; loaded sets are appended to ``seen``.

    The item is loaded by the ``onepassword`` backend as the plugins offer it, the same
    code path the deployed BFF takes (with its vault and item set explicitly). ``stores``
    are every store the BFF serves: with more than one, ``marketplace``'s own item
    (``Amazon Creators API (GB)``) is read when it exists, as the BFF would.
    """
    vault = vault_of(partition)
    settings = {"AMAZON_ONEPASSWORD_VAULT": vault, "AMAZON_ONEPASSWORD_ITEM": item}
    checked = list(stores or [marketplace])
    several = len(checked) > 1
    if several:
        settings["AMAZON_MARKETPLACES"] = ",".join(checked)
    shown = marketplace if several else None
    try:
        pm = plugin_manager or make_plugin_manager()
        backend = backend_from_plugins(
            pm, "onepassword", settings, marketplace if several else None
        )
        credentials = backend.load()
    except CredentialsError as exc:
        return PartitionResult(
            partition, vault, item, ok=False, problem=exc.message, marketplace=shown
        )
    except ConfigError as exc:  # e.g. a stray, malformed AMAZON_PARTITION in the environment
        return PartitionResult(
            partition, vault, item, ok=False, problem=str(exc), marketplace=shown
        )
    if seen is not None:
        seen.append(credentials)
    region = REGION_BY_VERSION.get(credentials.version)
    result = PartitionResult(
        partition,
        vault,
        item,
        ok=True,
        version=credentials.version,
        region=region,
        partner_tag=credentials.partner_tag,
        credential_id=mask(credentials.credential_id),
        marketplace=shown,
    )
    served = MARKETPLACES[marketplace].region
    if region != served:
        problem = (
            f"credential version {credentials.version} serves region {region}, but "
            f"marketplace {marketplace} is in region {served}"
        )
        return replace(result, ok=False, problem=problem)
    return result


def check_vaults(
    partitions: Iterable[str] = PARTITIONS,
    *,
    item: str = DEFAULT_ITEM,
    marketplace: str | Iterable[str] = str(DEFAULTS["AMAZON_MARKETPLACE"]),
    seen: list[Credentials] | None = None,
) -> list[PartitionResult]:
    """:func:`check_partition` for each partition and store, in order; every one is
    checked. ``marketplace`` is one store or every store the BFF serves."""
    pm = make_plugin_manager()
    stores = [marketplace] if isinstance(marketplace, str) else list(marketplace)
    return [
        check_partition(p, item=item, marketplace=m, seen=seen, plugin_manager=pm, stores=stores)
        for p in partitions
        for m in stores
    ]


class _Scrubber:
    """Replaces the token and every secret and full id seen, in anything printed."""

    def __init__(self, environ: Mapping[str, str], seen: Iterable[Credentials]) -> None:
        self._secrets: dict[str, str] = {}
        token = environ.get(TOKEN_VARIABLE, "")
        if token.strip():
            self._secrets[token] = f"<{TOKEN_VARIABLE}>"
        for credentials in seen:
            self._secrets[credentials.credential_secret] = "<secret>"
            self._secrets[credentials.credential_id] = mask(credentials.credential_id)

    def __call__(self, text: str) -> str:
        # Longest first, so a secret containing another is replaced whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret:
                text = text.replace(secret, self._secrets[secret])
        return text


def _line(result: PartitionResult, width: int) -> str:
    head = f"{result.partition:<6} {result.vault:<{width}}"
    if result.marketplace is not None:
        head += f" {result.marketplace:<17}"
    if not result.ok and result.version is None:
        return f"{head} FAIL  {result.problem}"
    facts = (
        f"version {result.version} (region {result.region}), partner tag "
        f"{result.partner_tag}, credential id {result.credential_id}"
    )
    if result.ok:
        return f"{head} OK    {facts}"
    return f"{head} FAIL  {result.problem} ({facts})"


def _partitions(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    if not value:
        return PARTITIONS
    chosen: list[str] = []
    for name in value:
        partition = canonical_partition(name)
        if partition is None:
            raise click.BadParameter(
                f"{name!r} is not a partition; choose from {', '.join(PARTITIONS)}"
            )
        chosen.append(partition)
    return tuple(dict.fromkeys(chosen))  # in the order given, once each


def _marketplace(
    ctx: click.Context, param: click.Parameter, value: tuple[str, ...]
) -> tuple[str, ...]:
    """The stores to check: ``--marketplace`` (repeatable), else the served stores of
    ``AMAZON_MARKETPLACES`` in the environment, else ``AMAZON_MARKETPLACE``'s one."""
    if not value:
        served = os.environ.get("AMAZON_MARKETPLACES", "").strip()
        single = os.environ.get("AMAZON_MARKETPLACE", "").strip()
        value = (
            tuple(served.split(",")) if served else (single or str(DEFAULTS["AMAZON_MARKETPLACE"]),)
        )
    hosts: list[str] = []
    for text in value:
        host = text.strip().lower()
        if host not in MARKETPLACES:
            raise click.BadParameter(f"{text!r} is not a known Amazon marketplace host")
        hosts.append(host)
    return tuple(dict.fromkeys(hosts))


@click.command("check-vaults")
@click.option(
    "--partition",
    "partitions",
    multiple=True,
    callback=_partitions,
    metavar="P",
    help=f"Check only partition P ({', '.join(PARTITIONS)}); repeatable. Default: all four.",
)
@click.option(
    "--item",
    default=DEFAULT_ITEM,
    show_default=True,
    help="Title (or id) of the credential item in each vault.",
)
@click.option(
    "--marketplace",
    "marketplaces",
    multiple=True,
    callback=_marketplace,
    metavar="HOST",
    help=(
        "A store the credentials must serve (its region must match the version's); "
        "repeatable. Default: AMAZON_MARKETPLACES, else AMAZON_MARKETPLACE, else "
        "www.amazon.com. With several, each store's own item is checked when it exists."
    ),
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def check_vaults_command(
    partitions: tuple[str, ...], item: str, marketplaces: tuple[str, ...], as_json: bool
) -> None:
    """Check every partition's 1Password vault before a deploy (Gate 1c).

    Loads the credential item of each partition's vault (Arda-{P}OAM) through the
    onepassword backend with OP_SERVICE_ACCOUNT_TOKEN and checks its four fields. Prints
    one line per partition and a summary (or one JSON object with --json). Exit status 0
    when every checked partition is OK, else 1. Needs no FLASK_APP and no AMAZON_* setting.
    """
    seen: list[Credentials] = []
    results = check_vaults(partitions, item=item, marketplace=marketplaces, seen=seen)
    scrub = _Scrubber(os.environ, seen)
    ok = all(result.ok for result in results)
    if as_json:
        body = {"ok": ok, "partitions": [result.as_json() for result in results]}
        click.echo(scrub(json.dumps(body, ensure_ascii=False)))
    else:
        width = max(len(result.vault) for result in results)
        for result in results:
            click.echo(scrub(_line(result, width)))
        failed = [
            result.partition + (f" {result.marketplace}" if result.marketplace else "")
            for result in results
            if not result.ok
        ]
        if ok:
            click.echo(f"OK: {len(results)} of {len(results)} partitions' vaults are ready")
        else:
            click.echo(
                f"FAIL: {len(failed)} of {len(results)} partitions not ready: {', '.join(failed)}",
                err=True,
            )
    click.get_current_context().exit(0 if ok else 1)
