"""Shared upstream helpers (arda_amazon_bp.upstream): Retry-After, log-text hygiene.

Everything else in the module is exercised through the client in tests/test_creators.py.
"""

from __future__ import annotations

from arda_amazon_bp import upstream

SECRET = "s3cr3t-VALUE-do-not-log-9f8e7d6c"


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    header = "Tue, 14 Nov 2023 22:13:40 GMT"  # now + 20 s
    assert upstream._retry_after(header, now=lambda: now) == 20
    assert upstream._retry_after("0", now=lambda: now) == 1
    assert upstream._retry_after("-5", now=lambda: now) == 1
    assert upstream._retry_after("inf", now=lambda: now) == 1
    assert upstream._retry_after("999999999", now=lambda: now) == 86_400


def test_log_text_drops_any_bearer_token_and_is_cut_short() -> None:
    text = "failed: Authorization: Bearer eyJhbGciOi.unknown-token, Version 2.1 " + "x" * 300
    cleaned = upstream._truncate(upstream._redact(text, [SECRET]))
    assert cleaned is not None
    assert "eyJhbGciOi" not in cleaned
    assert "Bearer [redacted]" in cleaned
    assert len(cleaned) == upstream.LOG_TEXT_LIMIT
