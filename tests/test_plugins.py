"""The plugin manager: built-in backends as plugins, real entry points, loud misspellings.

Third-party plugins are installed the way pip leaves them: a module plus a ``*.dist-info``
directory whose ``entry_points.txt`` names it under the ``arda_amazon_bp`` group, in a
directory on ``sys.path``. ``importlib.metadata`` — and so pluggy's
``load_setuptools_entrypoints`` — finds it exactly as it finds an installed distribution.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pluggy
import pytest

from arda_amazon_bp.config import ConfigError
from arda_amazon_bp.credentials import Credentials, backend_from_plugins
from arda_amazon_bp.plugins import DEFAULT_PLUGINS, make_plugin_manager

InstallDist = Callable[[str, str], str]

VAULT_PLUGIN = """
    from arda_amazon_bp import hookimpl
    from arda_amazon_bp.credentials import Credentials


    class VaultBackend:
        def __init__(self, config):
            self.address = config.get("VAULT_ADDR")

        def load(self):
            return Credentials("amzn1.vault.client.0000WXYZ", "vault-secret", "2.2", "vault-21")


    @hookimpl
    def arda_amazon_credential_backends():
        return {"hashicorp-vault": VaultBackend}
"""


@pytest.fixture
def install_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> InstallDist:
    """``install_dist(entry_point_name, module_source) -> module name``, found via metadata."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))

    def install(entry_point: str, source: str) -> str:
        module = f"arda_test_plugin_{uuid.uuid4().hex[:8]}"
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        info = site / f"{module}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n", encoding="utf-8"
        )
        (info / "entry_points.txt").write_text(
            f"[arda_amazon_bp]\n{entry_point} = {module}\n", encoding="utf-8"
        )
        monkeypatch.delitem(sys.modules, module, raising=False)  # forgotten after the test
        importlib.invalidate_caches()
        return module

    return install


def test_builtins_are_registered_under_their_module_names() -> None:
    pm = make_plugin_manager()
    assert DEFAULT_PLUGINS == (
        "arda_amazon_bp.backends.env",
        "arda_amazon_bp.backends.file",
        "arda_amazon_bp.backends.onepassword",
        "arda_amazon_bp.backends.config",
        "arda_amazon_bp.budgets",
    )
    for name in DEFAULT_PLUGINS:
        assert pm.get_plugin(name) is importlib.import_module(name)


def test_each_call_builds_an_independent_manager() -> None:
    first, second = make_plugin_manager(), make_plugin_manager()
    first.unregister(name="arda_amazon_bp.backends.file")
    assert second.get_plugin("arda_amazon_bp.backends.file") is not None


def test_a_third_party_backend_is_found_through_its_entry_point_and_selected(
    install_dist: InstallDist,
) -> None:
    module = install_dist("ardavault", VAULT_PLUGIN)
    pm = make_plugin_manager()
    plugin = pm.get_plugin("ardavault")
    assert plugin is sys.modules[module]
    assert [dist.project_name for _, dist in pm.list_plugin_distinfo()] == [module]
    backend = backend_from_plugins(pm, "hashicorp-vault", {"VAULT_ADDR": "http://127.0.0.1:8200"})
    assert backend.address == "http://127.0.0.1:8200"  # type: ignore[attr-defined]
    assert backend.load() == Credentials(
        "amzn1.vault.client.0000WXYZ", "vault-secret", "2.2", "vault-21"
    )


def test_without_the_distribution_the_name_is_unknown() -> None:
    with pytest.raises(ConfigError, match="available: config, env, file, onepassword"):
        backend_from_plugins(make_plugin_manager(), "hashicorp-vault", {})


def test_the_unknown_name_error_lists_third_party_backends(install_dist: InstallDist) -> None:
    install_dist("ardavault", VAULT_PLUGIN)
    with pytest.raises(
        ConfigError, match="available: config, env, file, hashicorp-vault, onepassword"
    ):
        backend_from_plugins(make_plugin_manager(), "vault", {})


def test_a_misspelled_hookimpl_fails_make_plugin_manager_loudly(
    install_dist: InstallDist,
) -> None:
    install_dist(
        "typo",
        """
        from arda_amazon_bp import hookimpl

        @hookimpl
        def arda_amazon_credential_backend():  # missing "s"
            return {}
        """,
    )
    with pytest.raises(pluggy.PluginValidationError) as info:
        make_plugin_manager()
    assert "arda_amazon_credential_backend" in str(info.value)
    assert info.value.plugin is not None


def test_a_hookimpl_with_a_wrong_argument_fails_at_registration(
    install_dist: InstallDist,
) -> None:
    install_dist(
        "badargs",
        """
        from arda_amazon_bp import hookimpl

        @hookimpl
        def arda_amazon_authenticate(req):  # the hookspec's argument is "request"
            return None
        """,
    )
    with pytest.raises(pluggy.PluginValidationError, match="req"):
        make_plugin_manager()


def test_a_third_party_plugin_reusing_a_builtin_name_is_named(
    install_dist: InstallDist,
) -> None:
    install_dist(
        "shadow",
        """
        from arda_amazon_bp import hookimpl

        @hookimpl
        def arda_amazon_credential_backends():
            return {"onepassword": lambda config: None}
        """,
    )
    with pytest.raises(ConfigError) as info:
        backend_from_plugins(make_plugin_manager(), "env", {})
    assert "'arda_amazon_bp.backends.onepassword' and 'shadow'" in str(info.value)
