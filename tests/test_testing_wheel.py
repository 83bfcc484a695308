"""Done-means of the testing kit: a host project uses ``amazon_sandbox`` from the wheel.

The wheel is built from a copy of the package sources (nothing is written into the
repository), installed into a fresh virtual environment, and a one-file host project in
a temporary directory runs pytest there. The environment sees this interpreter's
third-party packages (flask, pytest, …) through a directory of links that leaves out
every trace of this repository's own install, so the fixture, the catalog and the
entry point can only come from the wheel. No network: the build uses the installed
setuptools (``--no-build-isolation``) and the install ``--no-index --no-deps``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "arda_amazon_bp", "backends")
TIMEOUT = 240

pytestmark = pytest.mark.slow

HOST_TEST = """
import sys
from pathlib import Path

from flask import Flask
from flask_smorest import Api

import arda_amazon_bp
from arda_amazon_bp import hookimpl
from arda_amazon_bp.extension import AmazonImport


class Auth:
    @hookimpl
    def arda_amazon_authenticate(self, request):
        return "host-user"


def test_example_url_imports_from_the_installed_wheel(amazon_sandbox):
    # The package is the wheel's copy inside this virtual environment.
    assert Path(arda_amazon_bp.__file__).resolve().is_relative_to(Path(sys.prefix).resolve())
    app = Flask("host")
    app.config.update(API_TITLE="Host", API_VERSION="1", OPENAPI_VERSION="3.0.3")
    app.config.update(amazon_sandbox.config)
    AmazonImport(app, Api(app)).plugin_manager.register(Auth())
    response = app.test_client().post(
        "/api/amazon/import", json={"url": amazon_sandbox.example_url}
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["missingFields"] == []
    assert amazon_sandbox.stats()["total_calls"] == 1
"""


def _run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{command[:4]} exit {done.returncode}:\n{output[-4000:]}"
    return output


def _clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AMAZON_", "PYTEST_", "PIP_", "PYTHON"))
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package's wheel, built from a copy of its sources."""
    base = tmp_path_factory.mktemp("wheel-build")
    source = base / "src"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    dist = base / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(dist),
            str(source),
        ],
        cwd=base,
        env=_clean_env(),
    )
    (built,) = dist.glob("arda_amazon_bp-*.whl")
    return built


def test_the_wheel_ships_the_testing_kit_and_its_entry_point(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        declared = archive.read(entry_points).decode()
    for name in (
        "arda_amazon_bp/testing/__init__.py",
        "arda_amazon_bp/testing/__main__.py",
        "arda_amazon_bp/testing/client.py",
        "arda_amazon_bp/testing/sandbox.py",
        "arda_amazon_bp/testing/sandbox_catalog.json",
        "arda_amazon_bp/testing/pytest_plugin.py",
        "arda_amazon_bp/backends/config.py",
        "arda_amazon_bp/py.typed",
    ):
        assert name in names, name
    assert "[pytest11]" in declared
    assert "arda_amazon_bp = arda_amazon_bp.testing.pytest_plugin" in declared


def _dependencies_without_this_repo(target: Path) -> Path:
    """Links to this interpreter's site-packages entries, minus this package's install."""
    target.mkdir()
    seen: set[str] = set()
    for key in ("purelib", "platlib"):
        site = Path(sysconfig.get_paths()[key])
        if not site.is_dir():
            continue
        for entry in site.iterdir():
            if "arda_amazon_bp" in entry.name or entry.name in seen:
                continue
            if entry.suffix == ".pth":  # not processed here anyway; editable hooks live there
                continue
            seen.add(entry.name)
            (target / entry.name).symlink_to(entry)
    return target


def test_a_host_project_uses_amazon_sandbox_from_the_installed_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(environment)
    python = environment / "bin" / "python"
    purelib = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=tmp_path,
            env=_clean_env(),
        ).strip()
    )
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "-q",
            "--target",
            str(purelib),
            str(wheel),
        ],
        cwd=tmp_path,
        env=_clean_env(),
    )
    deps = _dependencies_without_this_repo(tmp_path / "deps")
    (purelib / "host-test-deps.pth").write_text(f"{deps}\n", encoding="utf-8")

    host = tmp_path / "host"
    host.mkdir()
    (host / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (host / "test_host.py").write_text(HOST_TEST, encoding="utf-8")
    output = _run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=host,
        env=_clean_env(),
    )
    assert "1 passed" in output, output[-4000:]
