"""Per-user budgets on Amazon's shared quota (``AMAZON_PRINCIPAL_LIMITS``).

The quota (1 call/second, 8,640/day per credential) is shared by every user of a
deployment, so one signed-in user importing batch after batch of new ASINs could spend a
whole day's quota in a few hours. A budget caps what one principal may send upstream:

* it counts **ASINs sent upstream**, i.e. cache misses; cache hits are free;
* a batch counts each of its missed ASINs; when only part of a batch fits, the first
  misses (in request order) go upstream and the rest answer 429;
* a miss is counted when it is queued for Amazon, whatever Amazon then answers;
* the principal's key comes from the ``arda_amazon_principal_key`` hook (default: the
  principal's ``id``, else ``str(principal)``), hashed so that no user id is stored;
* counts live in the quota's own ``limits`` storage (``AMAZON_RATE_LIMIT_STORAGE_URI``)
  through :meth:`Quota.take`, so every worker and host sharing the quota shares the
  budgets, with the same atomic multi-window step on Redis and the same per-process
  fallback while the storage is down (budgets then count per process).

Over budget, a miss answers ``429 AMAZON_RATE_LIMITED`` with ``details.source = "user"``,
``details.limit`` (the granularity that refused: ``"minute"``, ``"day"`` …),
``details.quota`` and ``Retry-After``. See docs/security.md and docs/runbook.md 3.3.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from .errors import AmazonImportError, rate_limited
from .hookspecs import hookimpl
from .quota import Quota, _parse_windows, _Window

if TYPE_CHECKING:
    from .plugins import AppPlugins

__all__ = ["ANONYMOUS", "PrincipalBudgets", "default_principal_key", "principal_key"]

#: The key every request without a principal shares (only with auth disabled, a demo).
ANONYMOUS = "anonymous"

_KEY_PREFIX = "user:"


def default_principal_key(principal: Any) -> str:
    """``principal["id"]`` or ``principal.id`` when present, else ``str(principal)``."""
    if principal is None:
        return ANONYMOUS
    if isinstance(principal, dict) and principal.get("id") is not None:
        return str(principal["id"])
    identifier = getattr(principal, "id", None)
    if identifier is not None and not callable(identifier):
        return str(identifier)
    return str(principal)


@hookimpl(trylast=True)
def arda_amazon_principal_key(principal: Any) -> str:
    """The built-in key: :func:`default_principal_key` (a host's implementation wins)."""
    return default_principal_key(principal)


def principal_key(plugin_manager: pluggy.PluginManager | AppPlugins, principal: Any) -> str:
    """The budget key of ``principal``: the ``arda_amazon_principal_key`` hook's answer."""
    if principal is None:
        return ANONYMOUS  # authentication disabled: every anonymous request shares one
    key = plugin_manager.hook.arda_amazon_principal_key(principal=principal)
    return str(key) if key is not None else default_principal_key(principal)


class PrincipalBudgets:
    """``AMAZON_PRINCIPAL_LIMITS`` counted in the storage of ``quota``.

    ``clock`` must be epoch seconds on the storages' base (as for :class:`Quota`).
    """

    def __init__(
        self, notation: str, quota: Quota, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._windows: tuple[_Window, ...] = _parse_windows(
            notation, 0.0, "AMAZON_PRINCIPAL_LIMITS"
        )
        self._quota = quota
        self._clock = clock

    def charge(self, principal_key: str, misses: int) -> tuple[int, AmazonImportError | None]:
        """Count up to ``misses`` ASINs for ``principal_key``.

        Returns how many were counted (the first ones may go upstream) and, when not all
        fit, the refusal for the rest.
        """
        if misses <= 0:
            return 0, None
        key = _storage_key(principal_key)
        refused = self._quota.take(self._windows, key, misses)
        if refused is None:
            return misses, None
        # Part of a batch may still fit: as much as the fullest window has left.
        room = min(w.amount - self._quota.usage(w, key)[1] for w in self._windows)
        admitted = 0
        if 0 < room < misses:
            again = self._quota.take(self._windows, key, room)
            if again is None:
                admitted = room
            else:
                refused = again
        return admitted, self._refusal(refused, key)

    def _refusal(self, window: _Window, key: str) -> AmazonImportError:
        start, used = self._quota.usage(window, key)
        now = self._clock()
        seconds = math.ceil(start + window.expiry - now) if used else 1
        return rate_limited(
            seconds,
            "user",
            f"Your allowance of new products from Amazon ({window.item}) is used up; "
            f"try again in {max(1, seconds)} s. Products imported before still answer.",
            limit=window.label,
            quota=str(window.item),
        )


def _storage_key(principal_key: str) -> str:
    # Hashed: no user id in the storage, and no brace or colon from it in a Redis key.
    return _KEY_PREFIX + hashlib.sha256(principal_key.encode()).hexdigest()[:32]
