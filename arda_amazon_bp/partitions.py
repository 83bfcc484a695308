"""Arda's deployment partitions and where each keeps its Amazon credential in 1Password.

Shared by the ``onepassword`` backend (``AMAZON_PARTITION`` → vault) and the pre-deploy
vault gate (:mod:`arda_amazon_bp.vault_gate`); docs/runbook.md, 2.1, shows the layout.
"""

from __future__ import annotations

PARTITIONS: tuple[str, ...] = ("Dev", "Stage", "Demo", "Prod")
#: One vault per partition: ``Arda-DevOAM`` … ``Arda-ProdOAM``.
VAULT_TEMPLATE = "Arda-{partition}OAM"
#: The title of the credential item in each vault.
DEFAULT_ITEM = "Amazon Creators API"


def canonical_partition(name: str) -> str | None:
    """``prod`` → ``Prod`` (deploy pipelines spell environments many ways); ``None`` else."""
    wanted = name.strip().lower()
    return next((p for p in PARTITIONS if p.lower() == wanted), None)


def vault_of(partition: str) -> str:
    """The vault of a (canonical) partition."""
    return VAULT_TEMPLATE.format(partition=partition)
