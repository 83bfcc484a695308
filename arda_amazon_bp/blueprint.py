"""The flask-smorest Blueprint: authentication, the import routes, the error envelope.

Views stay thin: parse the link, ask :mod:`lookup`, shape the answer.

A guest in the host's app answers only for its own errors: :class:`AmazonImportError`,
our own body validation (raised as ``AmazonImportError`` by :class:`_BodyParser`, never
as an ``HTTPException``), and unexpected exceptions raised inside our own views and
authentication (:func:`_ours`). Everything else — a host's ``abort(503)`` in
``before_request``, Flask-Limiter's 429, a JWT extension's 401, an exception the host
has its own app-wide handler for — reaches the host's handlers unchanged, which is why
this blueprint registers no ``HTTPException`` or ``Exception`` handler (a blueprint's
handlers run before the app's). See docs/api.md, "Errors the host answers".
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from flask_smorest import Blueprint
from webargs.flaskparser import FlaskParser, is_json_request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from . import products
from .budgets import principal_key
from .errors import AmazonImportError, ErrorCode
from .fast_hits import remember_record, serve_from_front_cache
from .logs import bind_request_id, new_request_id, unbind_request_id
from .schemas import (
    AmazonImportBatchRequestSchema,
    AmazonImportBatchResponseSchema,
    AmazonImportErrorSchema,
    AmazonImportProductSchema,
    AmazonImportRequestSchema,
)

logger = logging.getLogger(__name__)

BLUEPRINT_NAME = "amazon_import"
#: The OpenAPI tag of our routes (the blueprint's name is an identifier, not a heading).
TAG = "Amazon import"

#: How stale the daily-quota headers may be: a storage read per cache hit would cost
#: more than the hit itself, and other workers' calls show up within this many seconds.
RATE_LIMIT_HEADER_MAX_AGE = 1.0

_ERROR_DOCS: dict[int, str] = {
    400: "INVALID_REQUEST: body not JSON, not an object, bad or unknown fields",
    401: "AUTHENTICATION_REQUIRED (WWW-Authenticate is set)",
    413: "INVALID_REQUEST: body larger than AMAZON_MAX_BODY_BYTES or MAX_CONTENT_LENGTH",
    422: "UNRECOGNIZED_AMAZON_URL, UNSUPPORTED_SHORT_LINK or UNSUPPORTED_AMAZON_LOCALE",
    429: "AMAZON_RATE_LIMITED: quota, user budget or waiting cap (Retry-After is set)",
    500: "INTERNAL_ERROR (details.requestId names the log lines)",
    502: "AMAZON_UPSTREAM_UNAVAILABLE (details.reason says why)",
}
_BATCH_ERROR_STATUSES = (400, 401, 413, 500)


class _BodyParser(FlaskParser):
    """webargs' parser, with every unparsable JSON body refused as invalid JSON, and a
    chunked body over ``MAX_CONTENT_LENGTH`` refused with 413 (:func:`_refuse_cut_body`).

    ``json.loads`` raises ``RecursionError`` on deeply nested arrays (about 1,000 levels
    suffice) and a plain ``ValueError`` on integers longer than Python's 4,300-digit
    limit; webargs only catches ``JSONDecodeError``, so both became a 500.
    """

    def _raw_load_json(self, req: Any) -> Any:
        try:
            _refuse_cut_body(req)
            return super()._raw_load_json(req)
        except json.JSONDecodeError:
            raise
        except RequestEntityTooLarge:
            _invalid_request(413, None)
        except (RecursionError, ValueError) as exc:
            # A non-empty doc: webargs reads an empty one as "no body at all".
            raise json.JSONDecodeError(f"unparsable JSON ({type(exc).__name__})", "-", 0) from None

    # webargs aborts with an HTTPException here; ours must not look like the host's.
    def handle_error(self, error: Any, req: Any, schema: Any, **kwargs: Any) -> NoReturn:
        _invalid_request(400, error.messages)

    def _handle_invalid_json_error(self, error: Any, req: Any, *a: Any, **kw: Any) -> NoReturn:
        _invalid_request(400, {"json": ["Invalid JSON body."]})


def _invalid_request(status: int, messages: Any) -> NoReturn:
    """``INVALID_REQUEST``: 400 for a bad body, 413 for one over ``MAX_CONTENT_LENGTH``."""
    message = (
        "The request body is too large."
        if status == 413
        else 'Send a JSON object like {"url": "<Amazon product link>"}.'
    )
    details: dict[str, Any] = {}
    fields = _plain(messages)
    if fields:
        details["fields"] = fields
    raise AmazonImportError(ErrorCode.INVALID_REQUEST, message, details, status=status)


def _host_handles(exc: Exception) -> bool:
    """Whether the app has an error handler of its own for ``exc``'s class.

    A catch-all handler (``Exception``) does not count: a bug of ours is still ours to
    answer with our envelope and request id. Flask keeps app-wide handlers by class in
    ``error_handler_spec[None][None]``.
    """
    by_class = current_app.error_handler_spec.get(None, {}).get(None, {})
    return any(
        cls in by_class for cls in type(exc).__mro__ if cls not in (Exception, BaseException)
    )


def _internal_error(exc: Exception) -> AmazonImportError:
    logger.error("amazon import failed unexpectedly", exc_info=exc)
    error = AmazonImportError(
        ErrorCode.INTERNAL_ERROR,
        "Something went wrong on our side; quote the request id when reporting it.",
    )
    error.__cause__ = exc
    return error


def _ours(function: Callable[..., Any]) -> Callable[..., Any]:
    """Answer an unexpected exception raised inside ``function`` with ``INTERNAL_ERROR``.

    ``AmazonImportError`` goes to our handler as it is; an ``HTTPException`` (a hook that
    aborts) and an exception the host handles app-wide (a JWT error raised by the host's
    auth hook) go on to the host's handlers.
    """

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (AmazonImportError, HTTPException):
            raise
        except Exception as exc:
            if _host_handles(exc):
                raise
            raise _internal_error(exc) from exc

    return guarded


def _refuse_cut_body(req: Any) -> None:
    """413 for a body without Content-Length (chunked) that goes on past the limit.

    werkzeug stops reading such a body at ``MAX_CONTENT_LENGTH`` without complaint, so a
    longer one would be parsed from its first MAX_CONTENT_LENGTH bytes.
    """
    limit = req.max_content_length
    if limit is None or req.content_length is not None or not is_json_request(req):
        return
    if len(req.get_data(cache=True)) >= limit and req.input_stream.read(1):
        raise RequestEntityTooLarge()


def _state() -> Any:
    return current_app.extensions["arda_amazon_bp"]


def _rate_limit_headers(marketplaces: Iterable[str] = ()) -> dict[str, str]:
    """IETF draft ``RateLimit-*`` headers for the daily quota of the credential that
    serves the request's store (of a batch: the bucket with the fewest calls left among
    its stores); the primary store's when no link parsed; empty if unknown."""
    state = _state()
    windows = []
    wanted = list(dict.fromkeys(marketplaces)) or [state.settings.marketplace]
    try:
        for marketplace in wanted:
            store = state.stores.get(marketplace) or state.store()
            credentials = store.credentials.get()
            window = state.quota.daily(credentials.quota_key, max_age=RATE_LIMIT_HEADER_MAX_AGE)
            state.metrics.quota_window(
                credentials.credential_id, window.limit, window.amount, window.remaining
            )
            windows.append(window)
    except Exception:  # headers are advisory; never fail an import over them
        return {}
    if not windows:
        return {}
    window = min(windows, key=lambda w: w.remaining)
    return {
        "RateLimit-Limit": str(window.amount),
        "RateLimit-Remaining": str(max(0, window.remaining)),
        "RateLimit-Reset": str(max(0, int(window.reset_at - time.time() + 0.999))),
    }


def _error_response(error: AmazonImportError) -> ResponseReturnValue:
    # Every error answer is one import: a single import, or a batch refused as a whole.
    _state().metrics.import_failed(error.code.value)
    # A copy: one error object answers every waiter of a coalesced call, and a request's
    # id must never end up in another request's answer.
    body = copy.deepcopy(error.to_dict())
    body["error"]["details"]["requestId"] = _request_id()
    headers = dict(error.headers)
    if error.code is ErrorCode.AUTHENTICATION_REQUIRED:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return body, error.status, headers


def _request_id() -> str:
    """This request's id, made now if our ``before_request`` has not run yet."""
    request_id: str | None = g.get("amazon_request_id")
    if request_id is None:
        request_id = g.amazon_request_id = new_request_id(request.headers.get("X-Request-ID"))
    return request_id


@_ours
def _authenticate() -> None:
    state = _state()
    principal = state.plugin_manager.hook.arda_amazon_authenticate(request=request)
    # Fail closed: False, "", 0 or {} from a hook is a refusal, never a principal.
    if not principal:
        if not state.settings.auth_disabled:
            raise AmazonImportError(
                ErrorCode.AUTHENTICATION_REQUIRED, "Sign in to import products from Amazon."
            )
        principal = None
    g.amazon_principal = principal
    # Asked only when budgets are on: a host's key hook cannot fail imports otherwise.
    g.amazon_principal_key = (
        principal_key(state.plugin_manager, principal) if state.lookup.budgets is not None else None
    )


def _refuse_large_body() -> None:
    """413 before parsing for a body over ``AMAZON_MAX_BODY_BYTES`` (or the host's
    ``MAX_CONTENT_LENGTH`` when lower), even when the host sets no limit at all."""
    limit = _state().settings.max_body_bytes
    host = request.max_content_length
    if host is not None:
        limit = min(limit, host)
    with contextlib.suppress(AttributeError):  # Flask < 3.1: no per-request limit
        request.max_content_length = limit  # werkzeug then caps chunked bodies too
    if request.content_length is not None and request.content_length > limit:
        _invalid_request(413, None)  # ours: a werkzeug 413 would go to the host's handler


def _import_one(url: str) -> tuple[dict[str, Any], int, str]:
    state = _state()
    ref = state.links.parse(url)
    product = state.lookup.lookup(ref, principal_key=g.get("amazon_principal_key"))
    status = products.product_status(product)
    state.metrics.import_succeeded(status)
    return product, status, ref.marketplace


class _Blueprint(Blueprint):  # type: ignore[misc]  # flask-smorest is untyped
    """flask-smorest's Blueprint without the ``default`` error response in the doc.

    flask-smorest documents a ``default`` response with its own ``Error`` schema on every
    route; ours never send it (every error is listed with our envelope), and the
    setting that turns it off (``Api.DEFAULT_ERROR_RESPONSE_NAME``) is the host's.
    """

    @staticmethod
    def _prepare_response_doc(doc: Any, doc_info: Any, **kwargs: Any) -> Any:
        doc = Blueprint._prepare_response_doc(doc, doc_info, **kwargs)
        doc.get("responses", {}).pop("default", None)
        return doc


def make_blueprint(url_prefix: str) -> Blueprint:
    """A fresh blueprint per app, so each app may choose its own prefix.

    Schemas are passed as instances: given a class, webargs and flask-smorest build a new
    schema object on every request, which cost more than a cached import itself.
    """
    blp = _Blueprint(
        BLUEPRINT_NAME,
        __name__,
        url_prefix=url_prefix,
        description="Import products from a pasted Amazon link (Creators API).",
    )
    blp.ARGUMENTS_PARSER = _BodyParser()

    @blp.before_request
    def _begin() -> None:
        # A CORS preflight carries no credentials (browsers never send them): leave it to
        # flask-cors or the host, which answer it; Flask's automatic OPTIONS response never
        # reaches the view, so no lookup happens either.
        if request.method == "OPTIONS":
            return
        g.amazon_request_id = new_request_id(request.headers.get("X-Request-ID"))
        g.amazon_log_token = bind_request_id(g.amazon_request_id)
        _refuse_large_body()  # first: an auth hook that reads the body is capped too
        _authenticate()

    @blp.after_request
    def _end(response: Any) -> Any:
        request_id = g.get("amazon_request_id")
        if request_id is not None:
            response.headers.setdefault("X-Request-ID", request_id)
        return response

    @blp.teardown_request
    def _unbind(_: BaseException | None) -> None:
        token = g.pop("amazon_log_token", None)
        if token is not None:
            unbind_request_id(token)

    @blp.errorhandler(AmazonImportError)
    def _typed(error: AmazonImportError) -> ResponseReturnValue:
        log = logger.warning if error.status >= 500 else logger.info
        log(
            "amazon import refused code=%s status=%s details=%s",
            error.code.value,
            error.status,
            dict(error.details),  # a snapshot: the body adds requestId (a record attribute)
        )
        return _error_response(error)

    def documents_errors(statuses: tuple[int, ...]) -> Any:
        """Stack one ``alt_response`` per error status (they feed the OpenAPI doc)."""

        def decorate(view: Any) -> Any:
            for status in statuses:
                view = blp.alt_response(
                    status, schema=AmazonImportErrorSchema, description=_ERROR_DOCS[status]
                )(view)
            return view

        return decorate

    @blp.route("/import", methods=["POST"], tags=[TAG])
    @_ours
    @serve_from_front_cache(_rate_limit_headers)  # repeat links skip everything below
    @documents_errors(tuple(_ERROR_DOCS))
    @blp.arguments(AmazonImportRequestSchema(), error_status_code=400)
    @blp.response(200, AmazonImportProductSchema(), description="Every core field present")
    @blp.alt_response(
        206,
        schema=AmazonImportProductSchema,
        description="A core field (title, imageUrl, price) is null; see missingFields/notices",
    )
    @remember_record
    def import_product(args: dict[str, Any]) -> ResponseReturnValue:
        """Import one product from a pasted Amazon link."""
        product, status, marketplace = _import_one(args["url"])
        return product, status, _rate_limit_headers([marketplace])

    @blp.route("/import/batch", methods=["POST"], tags=[TAG])
    @_ours
    @documents_errors(_BATCH_ERROR_STATUSES)
    @blp.arguments(AmazonImportBatchRequestSchema(), error_status_code=400)
    @blp.response(
        200, AmazonImportBatchResponseSchema(), description="One result per link, in order"
    )
    def import_batch(args: dict[str, Any]) -> ResponseReturnValue:
        """Import up to AMAZON_BATCH_MAX_URLS links; each result has its own status."""
        state = _state()
        urls: list[str] = args["urls"]
        if len(urls) > state.settings.batch_max_urls:
            raise AmazonImportError(
                ErrorCode.INVALID_REQUEST,
                f"Send at most {state.settings.batch_max_urls} links per batch.",
                {"fields": {"urls": [f"Longer than {state.settings.batch_max_urls}."]}},
            )
        parsed: list[Any] = []
        for url in urls:
            try:
                parsed.append(state.links.parse(url))
            except AmazonImportError as exc:
                parsed.append(exc)
        refs = [p for p in parsed if not isinstance(p, AmazonImportError)]
        looked_up = iter(
            state.lookup.lookup_many(refs, principal_key=g.get("amazon_principal_key"))
        )
        results = []
        for url, item in zip(urls, parsed, strict=True):
            outcome = item if isinstance(item, AmazonImportError) else next(looked_up)
            if isinstance(outcome, AmazonImportError):
                state.metrics.import_failed(outcome.code.value)
                results.append(
                    {
                        "url": url,
                        "status": outcome.status,
                        "product": None,
                        "error": outcome.to_dict()["error"],
                    }
                )
            else:
                state.metrics.import_succeeded(products.product_status(outcome))
                results.append(
                    {
                        "url": url,
                        "status": products.product_status(outcome),
                        "product": outcome,
                        "error": None,
                    }
                )
        served = [ref.marketplace for ref in refs if ref.marketplace in state.stores]
        return {"results": results}, 200, _rate_limit_headers(served)

    return blp


def _plain(messages: Any) -> Any:
    """webargs nests messages under the location ("json"); callers care about fields."""
    if isinstance(messages, dict) and set(messages) == {"json"}:
        messages = messages["json"]
    return messages


def rename_tag(api: Any) -> None:
    """flask-smorest adds each blueprint's *name* to the document's tag list; ours is
    listed under :data:`TAG`, the tag its operations carry."""
    for tag in getattr(api.spec, "_tags", ()):
        if tag.get("name") == BLUEPRINT_NAME:
            tag["name"] = TAG
