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

from . import config, logs, metrics
from .blueprint import make_blueprint, rename_tag
from .cache import NullCache, ProductCache, cache_from_uri
from .config import ConfigError, Settings
from .creators import CreatorsClient
from .credentials import (
    CredentialBackend,
    CredentialProvider,
    CredentialsError,
    RegionMismatchError,
    StoreBackend,
    backend_from_plugins,
)
from .front_cache import FrontCache
from .lookup import ProductLookup
from .plugins import AppPlugins, PluginScopes, app_context, make_plugin_manager, register_for_app
from .quota import Quota
from .short_links import ShortLinks
from .stores import StoreRuntime

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
    "arda_amazon_bp.metrics",
    "arda_amazon_bp.short_links",
)


@dataclass
class AmazonImportState:
    """Per-app state, kept in ``app.extensions["arda_amazon_bp"]``."""

    settings: Settings
    plugin_manager: AppPlugins
    quota: Quota
    lookup: ProductLookup
    links: ShortLinks
    #: Repeat imports answered from memory for a few seconds (fast_hits.py).
    front_cache: FrontCache[Any] = field(default_factory=lambda: FrontCache(0, 1))
    metrics: metrics.Recorder = metrics.NULL_RECORDER
    _event_times: dict[str, float] = field(default_factory=dict)
    _event_lock: threading.Lock = field(default_factory=threading.Lock)

    def observe_call(self, event: Mapping[str, Any]) -> None:
        """Forward one upstream call to ``arda_amazon_upstream_call`` implementations."""
        self.metrics.upstream_call(event)
        try:
            self.plugin_manager.hook.arda_amazon_upstream_call(event=dict(event))
        except Exception:
            logger.exception("an arda_amazon_upstream_call hook failed; ignored")

    def upstream_event(self, name: str, details: Mapping[str, Any]) -> None:
        """Log an account-level event and tell the hook, once per interval per name."""
        self.metrics.upstream_event(name)  # every time; the log line and hook are throttled
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

    # Every served store's parts live in one place, the lookup's ``stores``.
    @property
    def stores(self) -> dict[str, StoreRuntime]:
        """Every served store's state (credentials, client, cache) by host."""
        return self.lookup.stores

    @property
    def credentials(self) -> CredentialProvider:
        """The primary store's credentials (``AMAZON_MARKETPLACE``)."""
        return self.lookup.credentials

    @property
    def client(self) -> CreatorsClient:
        """The primary store's Creators API client."""
        return self.lookup.client

    @property
    def cache(self) -> ProductCache:
        """The primary store's product cache."""
        return self.lookup.cache

    def store(self, marketplace: str | None = None) -> StoreRuntime:
        """The state of ``marketplace`` (default: the primary store); ``KeyError`` when
        it is not served."""
        return self.stores[marketplace or self.settings.marketplace]

    def close(self) -> None:
        """Stop the lookup threads and close connections (idempotent; see
        :meth:`AmazonImport.close`)."""
        self.lookup.close()
        self.quota.close()
        for store in self.stores.values():
            store.close()
        self.links.close()


class AmazonImport:
    """Adds ``POST {AMAZON_IMPORT_URL_PREFIX}/import`` to a Flask app's flask-smorest ``Api``.

    ``AmazonImport(app, api)`` or ``AmazonImport().init_app(app, api)``. The extension owns
    one plugin manager (``plugin_manager``) shared by every app it is initialised on;
    :meth:`register` with ``app=`` adds a plugin for one app only. Per-app state lives in
    ``app.extensions["arda_amazon_bp"]``; :meth:`close` releases it. With
    prometheus_client installed, metrics go to ``metrics_registry`` (default:
    prometheus_client's ``REGISTRY``; see docs/metrics.md).
    """

    def __init__(
        self, app: Flask | None = None, api: Api | None = None, *, metrics_registry: Any = None
    ) -> None:
        self.plugin_manager: pluggy.PluginManager = make_plugin_manager()
        self.metrics_registry = metrics_registry
        self._scopes = PluginScopes()
        if app is not None:
            self.init_app(app, api)

    def register(
        self, plugin: object, *, app: Flask | None = None, name: str | None = None
    ) -> str | None:
        """Register a plugin for every app of this extension, or with ``app`` for that app
        only (an app factory registers its auth hook this way; see docs/plugins.md).

        A credential backend registered for one app must be registered before that app's
        ``init_app``. Returns the name pluggy registered the plugin under.
        """
        if app is None:
            return self.plugin_manager.register(plugin, name=name)
        return register_for_app(self.plugin_manager, self._scopes, plugin, app, name)

    def close(self, app: Flask) -> None:
        """Stop ``app``'s threads (lookup dispatcher, upstream calls, quota timers), close
        its connections (Creators API, Redis) and unregister its per-app plugins.

        Idempotent; a no-op for an app this extension was never initialised on. Call it
        when an app is thrown away while the process goes on (tests, app factories run
        per tenant). A request served after ``close`` starts the threads again.
        """
        state = app.extensions.get(EXTENSION_NAME)
        if isinstance(state, AmazonImportState):
            state.close()
        self._scopes.forget(self.plugin_manager, app)

    def init_app(
        self, app: Flask, api: Api | None = None, *, metrics_registry: Any = None
    ) -> AmazonImport:
        """Apply config defaults, build the state, register the blueprint and CLI."""
        plugins = AppPlugins(self.plugin_manager, self._scopes, app)
        try:
            config.apply_defaults(app.config)
            settings = Settings.from_config(app.config)
            with app_context(app):
                backends: dict[str, CredentialBackend] = {
                    marketplace: StoreBackend(
                        backend_from_plugins(
                            plugins, settings.credentials_backend, app.config, marketplace
                        ),
                        marketplace,
                    )
                    for marketplace in settings.marketplaces
                }
                _check_regions_now(backends)
        except ConfigError as exc:
            raise ConfigError(f"arda_amazon_bp: {exc}") from None

        if api is None:
            api = _existing_api(app)
        if api is None:
            # An app with no flask-smorest Api at all (a demo): we make one. Its keys win
            # when it set them. A host that wants its own Api must create it first.
            app.config.setdefault("API_TITLE", "Amazon import")
            app.config.setdefault("API_VERSION", "1")
            app.config.setdefault("OPENAPI_VERSION", "3.0.3")
            api = Api(app)

        recorder = metrics.recorder_for(
            metrics_registry if metrics_registry is not None else self.metrics_registry
        )
        # One bucket per credential, whatever store it serves: the quota is shared.
        quota = Quota(settings, metrics=recorder)
        state: AmazonImportState
        stores: dict[str, StoreRuntime] = {}
        for marketplace, backend in backends.items():
            credentials = CredentialProvider(
                backend,
                settings.credentials_ttl_seconds,
                on_load=lambda ok: recorder.credential_load(settings.credentials_backend, ok),
            )
            # TTL 0 turns the cache off: then its storage is neither needed nor validated.
            # The namespace is the store: the same ASIN in two stores is two entries.
            cache: ProductCache = (
                cache_from_uri(
                    settings.cache_storage_uri,
                    namespace=marketplace,
                    max_entries=settings.cache_max_entries,
                )
                if settings.cache_ttl_seconds > 0
                else NullCache()
            )
            client = CreatorsClient(
                settings,
                credentials,
                observer=lambda event: state.observe_call(event),
                on_event=lambda name, details: state.upstream_event(name, details),
            )
            stores[marketplace] = StoreRuntime(marketplace, credentials, client, cache)
        lookup = ProductLookup(
            settings, quota, stores, metrics=recorder, thread_name=f"arda-amazon-{app.name}"
        )
        state = AmazonImportState(
            settings=settings,
            plugin_manager=plugins,
            quota=quota,
            lookup=lookup,
            metrics=recorder,
            links=ShortLinks(settings),
            front_cache=FrontCache(
                settings.front_cache_ttl_seconds, settings.front_cache_max_entries
            ),
        )
        app.extensions[EXTENSION_NAME] = state

        logs.install(_LOGGERS)
        api.register_blueprint(make_blueprint(settings.url_prefix))
        rename_tag(api)

        from .cli import amazon_cli

        if "amazon" not in app.cli.commands:
            app.cli.add_command(amazon_cli)

        if settings.auth_disabled:
            logger.warning(
                "AMAZON_IMPORT_AUTH_DISABLED is set: Amazon imports accept unauthenticated "
                "requests. Use this for demos only."
            )
        return self


def _check_regions_now(backends: Mapping[str, CredentialBackend]) -> None:
    """Refuse at ``init_app`` a set that cannot serve its store, where loading costs no
    I/O (a backend whose ``loads_without_io`` is true: ``config``, and ``env`` without
    ``op://`` references). Every backend is also checked on every load, before any
    upstream call (``credentials.StoreBackend``). Nothing loaded here is cached."""
    for backend in backends.values():
        if getattr(backend, "loads_without_io", False) is not True:
            continue
        try:
            backend.load()
        except RegionMismatchError as exc:
            raise ConfigError(exc.message) from None
        except CredentialsError:
            continue  # reported where the credentials are used, as before


def _existing_api(app: Flask) -> Api | None:
    """The Api the app already has (flask-smorest keeps them by config prefix), or None.

    With several, the unprefixed one; a host with several should pass the one it means.
    """
    apis = app.extensions.get("flask-smorest", {}).get("apis", {})
    entry = apis.get("") or (next(iter(apis.values())) if len(apis) == 1 else None)
    return entry["ext_obj"] if entry else None
