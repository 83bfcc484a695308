"""logs.py: the request id is a LogRecord attribute, never part of the message template."""

from __future__ import annotations

import io
import logging

import pytest

from arda_amazon_bp.logs import RequestIdFilter, bind_request_ids

#: The formatter docs/configuration.md ("Logging") shows.
DOCS_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


@pytest.fixture
def stream_logger() -> tuple[logging.Logger, io.StringIO]:
    """A logger with the docs' formatter, the filter on the handler, and its output."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(DOCS_FORMAT, defaults={"request_id": "-"}))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("test_logs.host")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, out
    logger.removeHandler(handler)


def test_the_id_is_an_attribute_and_the_template_is_untouched() -> None:
    record = logging.LogRecord(
        "arda_amazon_bp.lookup", logging.INFO, __file__, 1, "hit %s", ("B0X",), None
    )
    with bind_request_ids(["req-1"]):
        assert RequestIdFilter().filter(record)
    assert record.request_id == "req-1"
    assert record.msg == "hit %s"
    assert record.getMessage() == "hit B0X"


def test_a_batch_line_names_every_request_and_no_id_sets_nothing() -> None:
    batch = logging.LogRecord("x", logging.INFO, __file__, 1, "call", (), None)
    with bind_request_ids(["a", "b"]):
        RequestIdFilter().filter(batch)
    assert batch.request_id == "a,b"
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "idle", (), None)
    RequestIdFilter().filter(outside)
    assert not hasattr(outside, "request_id")  # the formatter's default applies


def test_the_docs_formatter_prints_the_id_once(stream_logger) -> None:
    logger, out = stream_logger
    with bind_request_ids(["req-42"]):
        logger.info("amazon import refused code=%s", "INVALID_REQUEST")
    logger.info("host line outside any import")
    first, second = out.getvalue().splitlines()
    assert first.count("req-42") == 1 and "[req-42] amazon import refused" in first
    assert "[-] host line outside any import" in second
