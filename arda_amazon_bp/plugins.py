"""The plugin manager: hookspecs, built-in plugins, then setuptools entry points; and the
per-app view of it (plugins registered for one app, hooks run in that app's context)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pluggy
from flask import Flask, current_app, has_app_context

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


@contextlib.contextmanager
def app_context(app: Flask | None) -> Iterator[None]:
    """Run the block inside ``app``'s app context, pushing one only when needed.

    Hooks run on the request thread (which already has the context) and on the lookup
    dispatcher's threads (which have none): there ``current_app`` would raise.
    """
    if app is None or (
        has_app_context() and current_app._get_current_object() is app  # type: ignore[attr-defined]
    ):
        yield
        return
    with app.app_context():
        yield


class PluginScopes:
    """The names of the plugins registered for one app only, to unregister them with it.

    One extension may serve several apps (an app factory, tests); a plugin registered
    with ``AmazonImport.register(plugin, app=app)`` answers only that app's hook calls
    (:class:`_ScopedPlugin`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: dict[str, weakref.ref[Flask]] = {}  # plugin name -> its app

    def add(self, name: str, app: Flask) -> None:
        with self._lock:
            self._owner[name] = weakref.ref(app)

    def forget(self, pm: pluggy.PluginManager, app: Flask) -> None:
        """Unregister the plugins of ``app`` (and of apps already collected)."""
        with self._lock:
            gone = [n for n, ref in self._owner.items() if ref() is None or ref() is app]
            for name in gone:
                del self._owner[name]
        for name in gone:
            if pm.get_plugin(name) is not None:
                pm.unregister(name=name)


class AppHookCaller:
    """One hook, called inside its app's context (where other apps' plugins keep quiet)."""

    def __init__(self, caller: pluggy.HookCaller, app: Flask | None) -> None:
        self._caller = caller
        self._app = app

    def __call__(self, **kwargs: Any) -> Any:
        with app_context(self._app):
            return self._caller(**kwargs)

    def get_hookimpls(self) -> list[pluggy.HookImpl]:
        return self._caller.get_hookimpls()


class _AppHooks:
    def __init__(self, plugins: AppPlugins) -> None:
        self._plugins = plugins

    def __getattr__(self, name: str) -> AppHookCaller:
        return self._plugins.caller(name)


class AppPlugins:
    """The extension's plugin manager as one app sees it (``state.plugin_manager``).

    ``hook.<name>(...)`` calls every plugin registered for all apps plus those registered
    for this app, inside this app's app context. ``register`` registers for this app
    only. Anything else is the shared ``pluggy.PluginManager``'s.
    """

    def __init__(self, pm: pluggy.PluginManager, scopes: PluginScopes, app: Flask) -> None:
        self.shared = pm
        self._scopes = scopes
        self._app = weakref.ref(app)  # the app holds this object: no cycle through it
        self.hook = _AppHooks(self)

    def caller(self, name: str) -> AppHookCaller:
        # Plugins of other apps stay quiet by themselves (_ScopedPlugin) in this context.
        return AppHookCaller(getattr(self.shared.hook, name), self._app())

    def register(self, plugin: object, name: str | None = None) -> str:
        app = self._app()
        if app is None:
            raise RuntimeError("this app is gone")
        return register_for_app(self.shared, self._scopes, plugin, app, name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.shared, name)


def register_for_app(
    pm: pluggy.PluginManager,
    scopes: PluginScopes,
    plugin: object,
    app: Flask,
    name: str | None = None,
) -> str:
    """Register ``plugin`` on ``pm`` for ``app`` only; returns the name it got.

    The name carries the app's identity, so one factory may register "the same" plugin
    (a new instance) for every app it builds.
    """
    base = name or pm.get_canonical_name(plugin)
    scoped = f"{base}@{app.name}#{id(app):x}"
    pm.register(_ScopedPlugin(pm, plugin, app), name=scoped)
    scopes.add(scoped, app)
    return scoped


class _ScopedPlugin:
    """Stands for a plugin registered for one app: its hook implementations answer
    ``None`` (which pluggy skips) unless called for that app.

    Every hook runs inside its app's context (:func:`app_context`), so ``current_app``
    says which app a call is for. Each implementation is copied onto this object as a
    plain function (pluggy looks hooks up statically, in the instance ``__dict__``
    among others), its signature and hookimpl marker kept by ``functools.wraps``. One
    object may so be registered for several apps.
    """

    def __init__(self, pm: pluggy.PluginManager, plugin: object, app: Flask) -> None:
        self.plugin = plugin
        owner = weakref.ref(app)
        for name in dir(plugin):
            if pm.parse_hookimpl_opts(plugin, name) is not None:
                setattr(self, name, _for_app(getattr(plugin, name), owner))

    def __repr__(self) -> str:
        return f"<{self.plugin!r} for one app>"


def _for_app(implementation: Callable[..., Any], owner: weakref.ref[Flask]) -> Any:
    @functools.wraps(implementation)
    def for_its_app(*args: Any, **kwargs: Any) -> Any:
        if not has_app_context() or current_app._get_current_object() is not owner():  # type: ignore[attr-defined]
            return None
        return implementation(*args, **kwargs)

    return for_its_app
