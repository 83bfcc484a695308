"""``python -m arda_amazon_bp`` (also the ``arda-amazon`` console script): operator
commands that need no Flask app — see docs/runbook.md.

* ``check-vaults`` — the pre-deploy vault gate (:mod:`arda_amazon_bp.vault_gate`).

The per-partition checks that need the BFF's app stay under ``flask amazon …``
(:mod:`arda_amazon_bp.cli`).
"""

from __future__ import annotations

import click

from .vault_gate import check_vaults_command


@click.group("arda-amazon")
def main() -> None:
    """Amazon import plugin: checks that run without the BFF (e.g. in CI before a deploy)."""


main.add_command(check_vaults_command)


if __name__ == "__main__":
    main()
