"""The ``AmazonImport`` Flask extension: config defaults, wiring, blueprint registration."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy
from flask import Flask
from flask_smorest import Api

from . import config, logs
from .blueprint import make_blueprint
from .cache import NullCache, ProductCache, cache_from_uri
from .config import ConfigError, Settings
from .creators import CreatorsClient
from .credentials import CredentialProvider, backend_from_plugins
from .front_cache import FrontCache
from .lookup import ProductLookup
from .plugins import make_plugin_manager
from .quota import Quota

logger = logging.getLogger(__name__)

EXTENSION_NAME = "arda_amazon_bp"

#: Loggers that carry request ids (filters are per logger, not inherited).
_LOGGERS = (
    "arda_amazon_bp.blueprint",
    "arda_amazon_bp.lookup",
    "arda_amazon_bp.creators",
    "arda_amazon_bp.tokens",
    "arda_amazon_bp.get_items",
    "arda_amazon_bp.quota",
    "arda_amazon_bp.cache",
    "arda_amazon_bp.credentials",
    "arda_amazon_bp.extension",
)


@dataclass
class AmazonImportState:
    """Per-app state, kept in ``app.extensions["arda_amazon_bp"]``."""

    settings: Settings
    plugin_manager: pluggy.PluginManager
    credentials: CredentialProvider
    client: CreatorsClient
    quota: Quota
    cache: ProductCache
    lookup: ProductLookup
    #: Repeat imports answered from memory for a few seconds (fast_hits.py).
    front_cache: FrontCache[Any] = field(default_factory=lambda: FrontCache(0, 1))
    _event_times: dict[str, float] = field(default_factory=dict)
    _event_lock: threading.Lock = field(default_factory=threading.Lock)

    def observe_call(self, event: Mapping[str, Any]) -> None:
        """Forward one upstream call to ``arda_amazon_upstream_call`` implementations."""
        try:
            self.plugin_manager.hook.arda_amazon_upstream_call(event=dict(event))
        except Exception:
            logger.exception("an arda_amazon_upstream_call hook failed; ignored")

    def upstream_event(self, name: str, details: Mapping[str, Any]) -> None:
        """Log an account-level event and tell the hook, once per interval per name."""
        now = time.monotonic()
        with self._event_lock:
            last = self._event_times.get(name)
            if last is not None and now - last < self.settings.upstream_event_interval_seconds:
                return
            self._event_times[name] = now
        logger.error("amazon_upstream_event event=%s details=%s", name, dict(details))
        try:
            self.plugin_manager.hook.arda_amazon_upstream_event(name=name, details=dict(details))
        except Exception:
            logger.exception("an arda_amazon_upstream_event hook failed; ignored")

    def close(self) -> None:
        self.lookup.close()
        self.client.close()
        self.quota.close()
        self.cache.close()


class AmazonImport:
    """Adds ``POST {AMAZON_IMPORT_URL_PREFIX}/import`` to a Flask app's flask-smorest ``Api``.

    ``AmazonImport(app, api)`` or ``AmazonImport().init_app(app, api)``. The extension owns
    one plugin manager (``plugin_manager``) shared by every app it is initialised on; per-app
    state lives in ``app.extensions["arda_amazon_bp"]``.
    """

    def __init__(self, app: Flask | None = None, api: Api | None = None) -> None:
        self.plugin_manager: pluggy.PluginManager = make_plugin_manager()
        if app is not None:
            self.init_app(app, api)

    def init_app(self, app: Flask, api: Api | None = None) -> AmazonImport:
        """Apply config defaults, build the state, register the blueprint and CLI."""
        config.apply_defaults(app.config)
        try:
            settings = Settings.from_config(app.config)
            backend = backend_from_plugins(
                self.plugin_manager, settings.credentials_backend, app.config
            )
        except ConfigError as exc:
            raise ConfigError(f"arda_amazon_bp: {exc}") from None

        if api is None:
            # Only when the host has no Api of its own; its keys win when it set them.
            app.config.setdefault("API_TITLE", "Amazon import")
            app.config.setdefault("API_VERSION", "1")
            app.config.setdefault("OPENAPI_VERSION", "3.0.3")
            api = Api(app)

        credentials = CredentialProvider(backend, settings.credentials_ttl_seconds)
        quota = Quota(settings)
        # TTL 0 turns the cache off: then its storage is neither needed nor validated.
        cache: ProductCache = (
            cache_from_uri(
                settings.cache_storage_uri,
                namespace=settings.marketplace,
                max_entries=settings.cache_max_entries,
            )
            if settings.cache_ttl_seconds > 0
            else NullCache()
        )
        state: AmazonImportState
        client = CreatorsClient(
            settings,
            credentials,
            observer=lambda event: state.observe_call(event),
            on_event=lambda name, details: state.upstream_event(name, details),
        )
        lookup = ProductLookup(settings, client, quota, cache, credentials)
        state = AmazonImportState(
            settings=settings,
            plugin_manager=self.plugin_manager,
            credentials=credentials,
            client=client,
            quota=quota,
            cache=cache,
            lookup=lookup,
            front_cache=FrontCache(
                settings.front_cache_ttl_seconds, settings.front_cache_max_entries
            ),
        )
        app.extensions[EXTENSION_NAME] = state

        logs.install(_LOGGERS)
        api.register_blueprint(make_blueprint(settings.url_prefix))

        from .cli import amazon_cli

        if "amazon" not in app.cli.commands:
            app.cli.add_command(amazon_cli)

        if settings.auth_disabled:
            logger.warning(
                "AMAZON_IMPORT_AUTH_DISABLED is set: Amazon imports accept unauthenticated "
                "requests. Use this for demos only."
            )
        return self


def get_state(app: Flask) -> AmazonImportState:
    """The extension state of ``app`` (raises ``KeyError`` when not initialised)."""
    state: AmazonImportState = app.extensions[EXTENSION_NAME]
    return state
