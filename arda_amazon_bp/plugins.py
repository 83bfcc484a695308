"""The plugin manager: hookspecs, built-in plugins, then setuptools entry points."""

from __future__ import annotations

import importlib

import pluggy

from . import hookspecs

#: Built-in plugins, registered exactly like third-party ones (datasette's DEFAULT_PLUGINS).
DEFAULT_PLUGINS: tuple[str, ...] = (
    "arda_amazon_bp.backends.env",
)


def make_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with every built-in and installed plugin; fails on a misspelled hook."""
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name=name)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT_NAME)
    pm.check_pending()
    return pm
