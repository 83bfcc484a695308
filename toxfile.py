"""tox inline plugin: let tox find every pyenv-installed interpreter.

pyenv's shims (``python3.10`` …) only run the versions pyenv is told to expose. When
pyenv is present and ``PYENV_VERSION`` is unset, expose all installed CPython 3.x
versions so the py310..py313 envs resolve on a machine that has them under pyenv.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

from tox.plugin import impl


def _expose_pyenv_versions() -> None:
    pyenv = shutil.which("pyenv")
    if pyenv is None or os.environ.get("PYENV_VERSION"):
        return
    found = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [pyenv, "versions", "--bare"], capture_output=True, text=True, check=False
    ).stdout.split()
    versions = [v for v in found if re.fullmatch(r"3\.\d+\.\d+", v)]
    if versions:
        os.environ["PYENV_VERSION"] = ":".join(versions)


_expose_pyenv_versions()


@impl
def tox_add_option(parser: object) -> None:
    """No option to add; the hook only makes tox load this file before discovery."""
