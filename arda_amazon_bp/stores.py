"""The served stores (``AMAZON_MARKETPLACES``) and the state each one owns.

One :class:`StoreRuntime` per store, built by ``extension.init_app``: the store's
credentials (its own backend, checked against the store's region on every load), its
Creators API client (tokens per credential) and its product cache. The quota is *not*
per store: it is keyed by credential (``Credentials.quota_key``), so two stores that
share a credential share one bucket, and two credentials never share one. The lookup
keeps one dispatcher per store (``lookup.py``). See docs/architecture.md, "Where state
lives".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .cache import ProductCache
from .creators import CreatorsClient
from .credentials import CredentialProvider
from .errors import AmazonImportError, ErrorCode
from .marketplaces import MARKETPLACES, Marketplace


@dataclass
class StoreRuntime:
    """Everything one served store needs to answer an import."""

    marketplace: str
    credentials: CredentialProvider
    client: CreatorsClient
    cache: ProductCache

    @property
    def info(self) -> Marketplace | None:
        """The store's row of the marketplace table (country, region, currency)."""
        return MARKETPLACES.get(self.marketplace)

    def close(self) -> None:
        self.client.close()
        self.cache.close()


def unsupported_locale(marketplace: str, served: Mapping[str, object]) -> AmazonImportError:
    """``422 UNSUPPORTED_AMAZON_LOCALE`` for a link to a store this app does not serve,
    listing every served store in ``details.supportedMarketplaces``."""
    hosts = list(served)
    listed = ", ".join(hosts)
    return AmazonImportError(
        ErrorCode.UNSUPPORTED_AMAZON_LOCALE,
        f"This link is for {marketplace}; imports are configured for {listed} only.",
        {"marketplace": marketplace, "supportedMarketplaces": hosts},
    )
