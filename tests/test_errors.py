"""Error codes, statuses and the one exception type (``arda_amazon_bp.errors``).

The contract's wire strings and statuses are pinned here value by value: the docs' error
table (tests/test_docs.py) is compared with the same registry, so a change shows in both.
"""

from __future__ import annotations

import pytest

from arda_amazon_bp.errors import (
    ERROR_STATUSES,
    AmazonImportError,
    ErrorCode,
    UpstreamReason,
    credentials_unavailable,
    rate_limited,
    upstream_unavailable,
)


def test_codes_are_their_wire_strings_with_their_statuses() -> None:
    assert {code.value: code.status for code in ErrorCode} == {
        "AUTHENTICATION_REQUIRED": 401,
        "INVALID_REQUEST": 400,
        "UNRECOGNIZED_AMAZON_URL": 422,
        "UNSUPPORTED_SHORT_LINK": 422,
        "UNSUPPORTED_AMAZON_LOCALE": 422,
        "AMAZON_RATE_LIMITED": 429,
        "AMAZON_UPSTREAM_UNAVAILABLE": 502,
        "INTERNAL_ERROR": 500,
    }
    assert set(ERROR_STATUSES) == set(ErrorCode)
    assert str(ErrorCode.AMAZON_RATE_LIMITED) == "AMAZON_RATE_LIMITED"
    assert f"{ErrorCode.INTERNAL_ERROR}" == "INTERNAL_ERROR"


def test_upstream_reasons_are_their_wire_strings() -> None:
    assert [reason.value for reason in UpstreamReason] == [
        "credentials_unavailable",
        "credentials_rejected",
        "associate_not_eligible",
        "invalid_partner_tag",
        "request_rejected",
        "timeout",
        "connection_error",
        "server_error",
        "invalid_response",
    ]
    assert str(UpstreamReason.TIMEOUT) == "timeout"
    assert f"{UpstreamReason.SERVER_ERROR}" == "server_error"


def test_an_error_takes_its_status_from_the_code_unless_given() -> None:
    error = AmazonImportError("INVALID_REQUEST", "bad body")
    assert error.code is ErrorCode.INVALID_REQUEST
    assert (error.status, error.message, str(error)) == (400, "bad body", "bad body")
    assert error.details == {} and error.headers == {}
    too_big = AmazonImportError(ErrorCode.INVALID_REQUEST, "too large", status=413)
    assert too_big.status == 413
    with pytest.raises(ValueError, match="NOT_A_CODE"):
        AmazonImportError("NOT_A_CODE", "x")


def test_details_and_headers_are_copies() -> None:
    details, headers = {"fields": ["url"]}, {"WWW-Authenticate": "Bearer"}
    error = AmazonImportError(
        ErrorCode.AUTHENTICATION_REQUIRED, "sign in", details, headers=headers
    )
    details["extra"] = 1
    headers["X"] = "y"
    assert error.details == {"fields": ["url"]}
    assert error.headers == {"WWW-Authenticate": "Bearer"}


def test_envelope_and_repr() -> None:
    error = AmazonImportError(ErrorCode.UNRECOGNIZED_AMAZON_URL, "not a product link", {"a": 1})
    assert error.to_dict() == {
        "error": {
            "code": "UNRECOGNIZED_AMAZON_URL",
            "message": "not a product link",
            "details": {"a": 1},
        }
    }
    assert repr(error) == (
        "AmazonImportError('UNRECOGNIZED_AMAZON_URL', 'not a product link', {'a': 1})"
    )


@pytest.mark.parametrize(
    ("given", "expected"), [(7, 7), (1, 1), (0, 1), (-3, 1), (2.9, 2), (1.5, 1)]
)
def test_rate_limited_retry_after_is_at_least_one_whole_second(given: float, expected: int) -> None:
    error = rate_limited(given, "local", "slow down", limit="second")  # type: ignore[arg-type]
    assert error.code is ErrorCode.AMAZON_RATE_LIMITED and error.status == 429
    assert error.message == "slow down"
    assert error.details == {"source": "local", "retryAfter": expected, "limit": "second"}
    assert error.headers == {"Retry-After": str(expected)}


def test_upstream_unavailable_names_its_reason() -> None:
    error = upstream_unavailable(UpstreamReason.SERVER_ERROR, "Amazon failed", status=503)
    assert error.code is ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE and error.status == 502
    assert error.message == "Amazon failed"
    assert error.details == {"reason": "server_error", "status": 503}
    assert error.headers == {}


def test_credentials_unavailable_speaks_to_callers_not_operators() -> None:
    error = credentials_unavailable()
    assert error.status == 502
    assert error.details == {"reason": "credentials_unavailable"}
    assert error.message == (
        "Amazon product data is unavailable: the server's Amazon credentials could not be "
        "loaded. Operators: see the log line with this request id."
    )
