"""A cap on requests that wait for Amazon (``AMAZON_MAX_WAITING``), per process.

An import that misses the cache holds its server thread while it waits for a quota slot
(up to ``AMAZON_MAX_WAIT_SECONDS``) and then for Amazon's answer. Under gunicorn with
1 worker x 4 threads, twelve such imports held every thread, and the host's unrelated
routes (``/healthz``) waited seconds behind them. The :class:`WaitingGate` lets at most
``limit`` requests of a process wait at once; one more answers
``429 AMAZON_RATE_LIMITED`` (``details.source = "local"``, ``details.limit =
"waiting"``) at once, so the other threads stay free for the host. Cache hits never wait
and never count.

The default limit is **half the server's threads per process** (at least 1) when the
server is known, else :data:`FALLBACK_LIMIT`. The thread count is read from the running
server itself, once per process, at the first import that needs to wait:

* gunicorn: the worker object running this process (``self`` of the frame running
  ``Worker.run`` on the main thread) and its merged settings ``worker.cfg.threads``, so
  the command line, ``GUNICORN_CMD_ARGS`` and config files all count; the ``sync``
  worker has one thread; other worker classes (gevent, eventlet) are not counted;
* uWSGI: ``uwsgi.opt["threads"]``.

Anything else (the Flask dev server, waitress, tests) uses :data:`FALLBACK_LIMIT`.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from .errors import AmazonImportError, rate_limited
from .forks import reset_in_child

__all__ = ["FALLBACK_LIMIT", "WaitingGate", "default_limit", "server_threads"]

#: The limit when the server's thread count is unknown.
FALLBACK_LIMIT = 8


def server_threads() -> int | None:
    """Request threads per process of the server running this process, when known."""
    threads = _gunicorn_threads()
    if threads is None:
        threads = _uwsgi_threads()
    return threads


def default_limit(threads: int | None) -> int:
    """Half of ``threads`` (at least 1), or :data:`FALLBACK_LIMIT` when unknown."""
    return FALLBACK_LIMIT if threads is None else max(1, threads // 2)


def _gunicorn_threads() -> int | None:
    base = sys.modules.get("gunicorn.workers.base")
    if base is None:
        return None
    worker = _find_on_stacks(base.Worker)
    if worker is None:
        return None
    kind = type(worker).__module__
    if kind.endswith(".sync"):
        return 1
    if kind.endswith(".gthread"):
        threads = getattr(getattr(worker, "cfg", None), "threads", None)
        return threads if isinstance(threads, int) and threads > 0 else None
    return None


#: Methods a gunicorn worker's main thread runs for the life of the process.
_WORKER_METHODS = frozenset({"run", "init_process"})


def _find_on_stacks(cls: type) -> Any:
    """An instance of ``cls`` that is ``self`` in a worker method on the main thread's
    stack (where gunicorn runs ``Worker.init_process()`` and ``Worker.run()``)."""
    frame: Any = sys._current_frames().get(threading.main_thread().ident or -1)
    while frame is not None:
        code = frame.f_code
        # Only frames of a method named like the worker's: their locals are read.
        if code.co_name in _WORKER_METHODS and code.co_varnames[:1] == ("self",):
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, cls):
                return candidate
        frame = frame.f_back
    return None


def _uwsgi_threads() -> int | None:
    uwsgi = sys.modules.get("uwsgi")
    options = getattr(uwsgi, "opt", None)
    if not isinstance(options, dict):
        return None
    raw: Any = options.get("threads", options.get(b"threads"))
    if isinstance(raw, bytes):
        raw = raw.decode(errors="replace")
    try:
        threads = int(raw)
    except (TypeError, ValueError):
        return None
    return threads if threads > 0 else None


class WaitingGate:
    """At most ``limit`` requests of this process waiting at once.

    ``configured`` is ``AMAZON_MAX_WAITING`` (``None``: :func:`default_limit` of
    :func:`server_threads`, resolved at the first :meth:`enter`).
    """

    def __init__(self, configured: int | None) -> None:
        self._configured = configured
        self._reset()
        reset_in_child(self._reset)

    def _reset(self) -> None:
        # A forked worker starts with nobody waiting, and finds its own server settings.
        self._lock = threading.Lock()
        self._waiting = 0
        self._limit: int | None = self._configured

    @property
    def limit(self) -> int:
        limit = self._limit
        if limit is None:
            limit = self._limit = default_limit(server_threads())
        return limit

    @property
    def waiting(self) -> int:
        """Requests of this process waiting right now."""
        return self._waiting

    def enter(self) -> None:
        """Take a place, or raise the ``limit="waiting"`` refusal at once."""
        limit = self.limit
        with self._lock:
            if self._waiting >= limit:
                raise self.refusal(limit)
            self._waiting += 1

    def leave(self) -> None:
        with self._lock:
            self._waiting = max(0, self._waiting - 1)

    @staticmethod
    def refusal(limit: int) -> AmazonImportError:
        return rate_limited(
            1,
            "local",
            f"{limit} imports are already waiting for Amazon on this server; retry in a second.",
            limit="waiting",
        )
