"""Marshmallow schemas of the import API; they validate requests and feed the OpenAPI doc.

Every name carries the ``AmazonImport`` prefix so the components never collide with the
host's own schemas in the shared OpenAPI document.
"""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from .errors import ErrorCode

#: Longest accepted link, after trimming surrounding whitespace (docs/api.md, "Request").
MAX_URL_LENGTH = 2048


class TrimmedString(fields.String):
    """A string with surrounding whitespace removed before validation."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return str(super()._deserialize(value, attr, data, **kwargs)).strip()


_URL_DESCRIPTION = (
    "What was pasted: an Amazon product link, or text holding one link (share text). "
    "Surrounding whitespace and invisible format characters are ignored; a product link "
    "is parsed, never fetched; a short link is refused or, when AMAZON_SHORT_LINKS is "
    "resolve, resolved through its redirect."
)


class AmazonImportRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    url = TrimmedString(
        required=True,
        validate=validate.Length(min=1, max=MAX_URL_LENGTH),
        metadata={
            "description": _URL_DESCRIPTION,
            "example": "https://www.amazon.com/dp/B0EXAMPLE1",
        },
    )


class AmazonImportBatchRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    urls = fields.List(
        TrimmedString(validate=validate.Length(min=1, max=MAX_URL_LENGTH)),
        required=True,
        validate=validate.Length(min=1),  # the upper bound is AMAZON_BATCH_MAX_URLS
        metadata={"description": "1..AMAZON_BATCH_MAX_URLS (default 50) pasted links."},
    )


class AmazonImportMoneySchema(Schema):
    amount = fields.Float(required=True)
    currency = fields.String(required=True, metadata={"description": "ISO 4217 code"})
    display = fields.String(allow_none=True, metadata={"description": "Amazon's formatted amount"})


class AmazonImportUnitPriceSchema(Schema):
    amount = fields.Float(required=True)
    currency = fields.String(required=True)


class AmazonImportNoticeSchema(Schema):
    code = fields.String(required=True)
    message = fields.String(required=True)


def _nullable(field: fields.Field[Any], description: str) -> fields.Field[Any]:
    field.allow_none = True
    field.required = True
    field.metadata = {**field.metadata, "description": description}
    return field


class AmazonImportProductSchema(Schema):
    """The normalized product; every field is present and nullable."""

    asin = fields.String(required=True, metadata={"description": "Uppercase ASIN"})
    marketplace = fields.String(required=True, metadata={"example": "www.amazon.com"})
    detailPageUrl = fields.String(
        required=True,
        metadata={
            "description": "Product page link carrying our partner tag (never the pasted one)"
        },
    )
    title = _nullable(fields.String(), "Core field: null makes the answer 206")
    brand = _nullable(fields.String(), "Brand")
    manufacturer = _nullable(fields.String(), "Manufacturer")
    imageUrl = _nullable(fields.String(), "Core field: large primary image")
    images = _nullable(fields.List(fields.String()), "Large images, primary first")
    price = _nullable(fields.Nested(AmazonImportMoneySchema), "Core field: first listing's price")
    unitCount = _nullable(fields.Integer(), "Units in the package")
    unitPrice = _nullable(fields.Nested(AmazonImportUnitPriceSchema), "Price per unit")
    upc = _nullable(fields.String(), "First UPC")
    ean = _nullable(fields.String(), "First EAN")
    features = _nullable(fields.List(fields.String()), "Bullet points")
    availability = _nullable(fields.String(), "Availability message")
    minOrderQuantity = _nullable(fields.Integer(), "Minimum order quantity")
    missingFields = fields.List(
        fields.String(validate=validate.OneOf(["title", "imageUrl", "price"])),
        required=True,
        metadata={"description": "Core fields that are null; empty exactly when the status is 200"},
    )
    notices = fields.List(
        fields.Nested(AmazonImportNoticeSchema),
        required=True,
        metadata={
            "description": "Why data is missing, e.g. Amazon reported the item not accessible"
        },
    )
    retrievedAt = fields.String(
        required=True, metadata={"description": "When Amazon answered (ISO 8601, UTC)"}
    )


class AmazonImportErrorBodySchema(Schema):
    code = fields.String(required=True, validate=validate.OneOf([code.value for code in ErrorCode]))
    message = fields.String(required=True)
    details = fields.Dict(
        required=True,
        metadata={
            "description": "Machine-readable context: source/retryAfter/limit for "
            "AMAZON_RATE_LIMITED, reason for AMAZON_UPSTREAM_UNAVAILABLE, fields for "
            "INVALID_REQUEST; requestId always"
        },
    )


class AmazonImportErrorSchema(Schema):
    error = fields.Nested(AmazonImportErrorBodySchema, required=True)


class AmazonImportBatchItemSchema(Schema):
    """One link's outcome inside a batch: a product or an error, never both."""

    url = fields.String(required=True, metadata={"description": "The link as sent (trimmed)"})
    status = fields.Integer(
        required=True,
        metadata={"description": "What a single import of this link would have answered"},
    )
    product = fields.Nested(AmazonImportProductSchema, allow_none=True, required=True)
    error = fields.Nested(AmazonImportErrorBodySchema, allow_none=True, required=True)


class AmazonImportBatchResponseSchema(Schema):
    results = fields.List(fields.Nested(AmazonImportBatchItemSchema), required=True)
