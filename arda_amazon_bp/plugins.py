"""The plugin manager: hookspecs, built-in plugins, then setuptools entry points."""

from __future__ import annotations

import importlib

import pluggy

from . import hookspecs

#: Built-in plugins, registered exactly like third-party ones (datasette's DEFAULT_PLUGINS).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "arda_amazon_bp.backends.env",
    "arda_amazon_bp.backends.file",
    "arda_amazon_bp.backends.onepassword",
    "arda_amazon_bp.backends.config",
    "arda_amazon_bp.budgets",  # the default arda_amazon_principal_key
)


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with every built-in and installed plugin; fails on a misspelled hook.

    Built-ins are registered under their module names first, then every entry point of
    the ``arda_amazon_bp`` group (named by the entry point), then ``check_pending()``
    raises ``pluggy.PluginValidationError`` for a hookimpl that matches no hookspec.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    pm.check_pending()
    return pm
