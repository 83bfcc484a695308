"""The error codes of the import API, their HTTP statuses, and the one exception type.

Every failure the package reports to a caller is an :class:`AmazonImportError` whose
``code`` is a member of :class:`ErrorCode`; the blueprint turns it into the JSON envelope
``{"error": {"code", "message", "details"}}`` with the status below.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any


class ErrorCode(str, enum.Enum):
    """Error codes of the HTTP contract (docs/api.md, Errors). The value is the wire string."""

    AUTHENTICATION_REQUIRED = "AUTHENTICATION_REQUIRED"
    INVALID_REQUEST = "INVALID_REQUEST"
    UNRECOGNIZED_AMAZON_URL = "UNRECOGNIZED_AMAZON_URL"
    UNSUPPORTED_SHORT_LINK = "UNSUPPORTED_SHORT_LINK"
    UNSUPPORTED_AMAZON_LOCALE = "UNSUPPORTED_AMAZON_LOCALE"
    AMAZON_RATE_LIMITED = "AMAZON_RATE_LIMITED"
    AMAZON_UPSTREAM_UNAVAILABLE = "AMAZON_UPSTREAM_UNAVAILABLE"
    INTERNAL_ERROR = "INTERNAL_ERROR"

    def __str__(self) -> str:
        return self.value

    @property
    def status(self) -> int:
        return ERROR_STATUSES[self]


#: HTTP status of each code. ``INVALID_REQUEST`` answers 413 instead of 400 only for
#: bodies over ``MAX_CONTENT_LENGTH`` (the status is passed explicitly there).
ERROR_STATUSES: dict[ErrorCode, int] = {
    ErrorCode.AUTHENTICATION_REQUIRED: 401,
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNRECOGNIZED_AMAZON_URL: 422,
    ErrorCode.UNSUPPORTED_SHORT_LINK: 422,
    ErrorCode.UNSUPPORTED_AMAZON_LOCALE: 422,
    ErrorCode.AMAZON_RATE_LIMITED: 429,
    ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE: 502,
    ErrorCode.INTERNAL_ERROR: 500,
}


class UpstreamReason(str, enum.Enum):
    """``details.reason`` values of ``AMAZON_UPSTREAM_UNAVAILABLE``."""

    CREDENTIALS_UNAVAILABLE = "credentials_unavailable"  # backend could not load a valid set
    CREDENTIALS_REJECTED = "credentials_rejected"  # token endpoint or API refused the client
    ASSOCIATE_NOT_ELIGIBLE = "associate_not_eligible"  # 403 AssociateNotEligible
    INVALID_PARTNER_TAG = "invalid_partner_tag"  # 400 InvalidPartnerTag / InvalidAssociate
    REQUEST_REJECTED = "request_rejected"  # any other 4xx from Amazon
    TIMEOUT = "timeout"  # connect or read timeout
    CONNECTION_ERROR = "connection_error"  # refused, reset, DNS, TLS
    SERVER_ERROR = "server_error"  # Amazon answered 5xx
    INVALID_RESPONSE = "invalid_response"  # not JSON, or not the documented shape

    def __str__(self) -> str:
        return self.value


class AmazonImportError(Exception):
    """A typed, caller-facing failure: ``code`` decides the HTTP status.

    ``message`` is shown to the caller and written to logs, so it must never contain a
    secret or a token. ``headers`` are added to the HTTP response (``Retry-After``,
    ``WWW-Authenticate``).
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.status = status if status is not None else self.code.status
        self.headers: dict[str, str] = dict(headers or {})

    def __repr__(self) -> str:
        return f"AmazonImportError({self.code.value!r}, {self.message!r}, {self.details!r})"

    def to_dict(self) -> dict[str, Any]:
        """The error envelope body."""
        return {
            "error": {"code": self.code.value, "message": self.message, "details": self.details}
        }


def rate_limited(retry_after: int, source: str, message: str, **details: Any) -> AmazonImportError:
    """``AMAZON_RATE_LIMITED`` with a ``Retry-After`` of at least one whole second."""
    retry_after = max(1, int(retry_after))
    return AmazonImportError(
        ErrorCode.AMAZON_RATE_LIMITED,
        message,
        {"source": source, "retryAfter": retry_after, **details},
        headers={"Retry-After": str(retry_after)},
    )


def upstream_unavailable(reason: UpstreamReason, message: str, **details: Any) -> AmazonImportError:
    """``AMAZON_UPSTREAM_UNAVAILABLE`` with ``details.reason``."""
    return AmazonImportError(
        ErrorCode.AMAZON_UPSTREAM_UNAVAILABLE, message, {"reason": reason.value, **details}
    )


def credentials_unavailable() -> AmazonImportError:
    """``AMAZON_UPSTREAM_UNAVAILABLE``/``credentials_unavailable``, in words for callers.

    The backend's message (a variable, a file path, a vault name) is for operators: it
    goes to the log line carrying the request id, not to the caller's browser.
    """
    return upstream_unavailable(
        UpstreamReason.CREDENTIALS_UNAVAILABLE,
        "Amazon product data is unavailable: the server's Amazon credentials could not be "
        "loaded. Operators: see the log line with this request id.",
    )
