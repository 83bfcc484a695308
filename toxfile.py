"""tox inline plugin: let tox find every pyenv-installed interpreter.

pyenv's shims (``python3.10`` …) only run the versions pyenv is told to expose, and
``python3 -m tox`` run through a shim has ``PYENV_VERSION`` set to that one version.
When pyenv is present, add every installed CPython 3.x version to ``PYENV_VERSION``
(keeping the versions already there first, so ``python3`` stays what it was), so the
py310..py313 envs resolve on a machine that has them under pyenv. tox passes
``PYENV_VERSION`` to discovery through ``pass_env`` in tox.ini.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from tox.plugin import impl


def _expose_pyenv_versions() -> None:
    pyenv = shutil.which("pyenv")
    if pyenv is None:
        return
    found = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [pyenv, "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    current = [v for v in os.environ.get("PYENV_VERSION", "").split(":") if v]
    wanted = current + [v for v in found if re.fullmatch(r"3\.\d+\.\d+", v) and v not in current]
    if wanted:
        os.environ["PYENV_VERSION"] = ":".join(wanted)


_expose_pyenv_versions()


@impl
def tox_add_option(parser: object) -> None:
    """No option to add; the hook only makes tox load this file before discovery."""
