"""Request ids on every log line of an import.

The blueprint binds the id (the host's ``X-Request-ID``, else a generated one) for the
request; lookups that run on the dispatcher's threads bind the ids of every request
their batch serves. A filter on the package's loggers sets the LogRecord attribute
``request_id`` (comma-joined when a line serves several requests). The message template
(``record.msg``) is left alone, so an aggregator that groups lines by template (Sentry,
Datadog) sees one template per kind of line, not one per request. Print the id with a
formatter field, ``%(request_id)s``, as docs/configuration.md ("Logging") shows.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import uuid
from collections.abc import Iterator, Sequence

_request_ids: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "arda_amazon_bp_request_ids", default=()
)

# Ids come from a header: keep them short and printable so they cannot forge log lines.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")


def new_request_id(header_value: str | None) -> str:
    """The caller's id when it is safe to log, else a fresh one."""
    if header_value and _SAFE_ID.match(header_value):
        return header_value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    ids = _request_ids.get()
    return ids[0] if len(ids) == 1 else None


@contextlib.contextmanager
def bind_request_ids(ids: Sequence[str]) -> Iterator[None]:
    token = _request_ids.set(tuple(ids))
    try:
        yield
    finally:
        _request_ids.reset(token)


def bind_request_id(request_id: str) -> contextvars.Token[tuple[str, ...]]:
    return _request_ids.set((request_id,))


def unbind_request_id(token: contextvars.Token[tuple[str, ...]]) -> None:
    _request_ids.reset(token)


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` to the bound request id(s); never drops a record and
    never touches the message.

    Attached to the package's loggers by ``init_app``; a host may also attach it to a
    handler, so the host's own lines logged during an import carry the id too. Outside
    an import no attribute is set: give the formatter a default
    (``logging.Formatter(fmt, defaults={"request_id": "-"})``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _request_ids.get()
        if ids and not hasattr(record, "request_id"):
            record.request_id = ",".join(ids)
        return True


_FILTER = RequestIdFilter()


def install(logger_names: Sequence[str]) -> None:
    """Attach the filter once to each named logger (filters do not inherit)."""
    for name in logger_names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
