"""Hostile input: nothing a caller sends produces a 500, a hang or a non-JSON answer.

* Hypothesis: any JSON value as the body, any string as ``url``, any bytes with any
  content type — the answer is a product or the JSON error envelope, never 500.
* Schemathesis against the app's own OpenAPI document (served by the host's ``Api``),
  positive and negative cases for both import routes, with ``not_a_server_error`` and
  ``response_schema_conformance``: whatever status comes back is documented and its
  body matches the documented schema.
* Named cases: bodies over ``MAX_CONTENT_LENGTH`` (1 MiB) → 413 ``INVALID_REQUEST``,
  also chunked over real HTTP (no Content-Length to check up front); wrong content
  types; invalid UTF-8; 100,000-deep nesting and 5,000-digit numbers (both crashed
  ``json.loads`` into a 500 before the blueprint's parser caught them); NUL bytes;
  2 MB ``url`` strings.

Amazon is requests-mock here (``amazon`` fixture): these tests are about our edge.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fixtures_app import USER_TOKEN, AmazonMock, make_item
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arda_amazon_bp.errors import ErrorCode
from arda_amazon_bp.testing import sandbox as cs

MIB = 1024 * 1024
AUTH = {"Authorization": f"Bearer {USER_TOKEN}"}
CODES = {code.value for code in ErrorCode} - {ErrorCode.INTERNAL_ERROR.value}
#: Whatever the input, the answer is one of these (never 500).
STATUSES = {200, 206, 400, 401, 413, 422, 429, 502}
#: Per example: far above a normal answer, far below a hang.
DEADLINE_MS = 2000

FUZZ = settings(
    max_examples=150,
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def hostile_app(make_app: Callable[..., Flask], amazon: AmazonMock) -> Flask:
    """The host app with a 1 MiB body limit and its OpenAPI document served.

    The plugin's own cap is raised to the same 1 MiB, so that bodies between 64 KiB and
    1 MiB still reach the JSON parser these cases attack."""
    amazon.add(make_item("B0EXAMPLE1"))
    return make_app(
        MAX_CONTENT_LENGTH=MIB,
        AMAZON_MAX_BODY_BYTES=MIB,
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        AMAZON_RATE_LIMITS="10000/second;100000/day",
    )


def send(app: Flask, data: bytes | str, content_type: str | None = "application/json") -> Any:
    kwargs: dict[str, Any] = {"data": data, "headers": AUTH}
    if content_type is not None:
        kwargs["content_type"] = content_type
    return app.test_client().post("/api/amazon/import", **kwargs)


def assert_contract(response: Any) -> dict[str, Any]:
    """A product or the error envelope, as JSON, with a documented status."""
    assert response.status_code in STATUSES, response.get_data()[:300]
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    if response.status_code in (200, 206):
        assert isinstance(body.get("asin"), str)
    else:
        assert set(body) == {"error"}
        assert body["error"]["code"] in CODES
        assert isinstance(body["error"]["message"], str)
        assert body["error"]["details"]["requestId"] == response.headers["X-Request-ID"]
    assert b"Traceback" not in response.get_data()
    return dict(body)


def assert_invalid(response: Any, status: int = 400) -> dict[str, Any]:
    body = assert_contract(response)
    assert response.status_code == status
    assert body["error"]["code"] == "INVALID_REQUEST"
    return body


# --- properties ---------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(body=json_values | st.dictionaries(st.just("url"), json_values, min_size=1))
@FUZZ
def test_any_json_body_gets_a_product_or_the_envelope(hostile_app: Flask, body: Any) -> None:
    assert_contract(send(hostile_app, json.dumps(body)))


url_texts = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.builds(
        lambda head, tail: head + tail,
        st.sampled_from(
            [
                "https://www.amazon.com/dp/",
                "www.amazon.co.uk/gp/product/",
                "https://amzn.to/",
                "https://www.amazon.com/sspa/click?url=",
                "amzn.com/",
                "\u200ehttps://www.amazon.de/-/en/x/dp/",
            ]
        ),
        st.text(max_size=40),
    ),
)


@given(url=url_texts)
@FUZZ
def test_any_url_string_gets_a_product_or_the_envelope(hostile_app: Flask, url: str) -> None:
    body = assert_contract(send(hostile_app, json.dumps({"url": url})))
    if "error" in body and len(url.strip()) > 2048:
        assert body["error"]["code"] == "INVALID_REQUEST"


@given(
    data=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/vnd.api+json",
            None,
        ]
    ),
)
@FUZZ
def test_any_bytes_with_any_content_type_get_the_envelope(
    hostile_app: Flask, data: bytes, content_type: str | None
) -> None:
    assert_contract(send(hostile_app, data, content_type))


# --- schemathesis -------------------------------------------------------------------


def test_openapi_document_fuzzed_by_schemathesis(hostile_app: Flask) -> None:
    """Positive and negative cases for every import route, checked against the document."""
    schemathesis = pytest.importorskip("schemathesis", reason="schemathesis (dev extra)")
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    schema = schemathesis.openapi.from_wsgi("/openapi.json", hostile_app)
    paths = sorted(op.ok().path for op in schema.get_all_operations())
    assert paths == ["/api/amazon/import", "/api/amazon/import/batch"]
    strategy = schema.as_strategy() | schema.as_strategy(generation_mode=GenerationMode.NEGATIVE)
    seen: set[tuple[str, int]] = set()

    @given(data=st.data())
    @settings(
        max_examples=200,
        deadline=DEADLINE_MS,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def run(data: st.DataObject) -> None:
        case = data.draw(strategy)
        response = case.call_and_validate(
            headers=AUTH, checks=[not_a_server_error, response_schema_conformance]
        )
        seen.add((case.path, response.status_code))

    run()
    # The run reached both routes, with successes and refusals.
    assert {path for path, _ in seen} == set(paths)
    assert {status for _, status in seen} >= {200, 400}


# --- named cases ----------------------------------------------------------------------


def test_a_body_over_max_content_length_is_413_in_the_envelope(hostile_app: Flask) -> None:
    body = json.dumps({"url": "https://www.amazon.com/dp/B0EXAMPLE1", "pad": "x" * MIB})
    assert_invalid(send(hostile_app, body), 413)


def test_a_2mb_url_is_413_under_the_limit_and_400_without_it(
    hostile_app: Flask, make_app: Callable[..., Flask]
) -> None:
    body = json.dumps({"url": "https://www.amazon.com/dp/B0EXAMPLE1?" + "a" * 2_000_000})
    assert_invalid(send(hostile_app, body), 413)
    assert_invalid(send(make_app(), body), 413)  # no host limit: AMAZON_MAX_BODY_BYTES
    # Neither limit (the plugin's raised): the url length check still refuses it.
    unlimited = make_app(AMAZON_MAX_BODY_BYTES=10 * MIB)
    started = time.monotonic()
    answer = assert_invalid(send(unlimited, body))
    assert "url" in answer["error"]["details"]["fields"]
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "application/json; charset=utf-16",
        None,
    ],
)
def test_wrong_content_types_are_invalid_request(
    hostile_app: Flask, content_type: str | None
) -> None:
    body = json.dumps({"url": "https://www.amazon.com/dp/B0EXAMPLE1"})
    if content_type and "utf-16" in content_type:
        body = body.encode("utf-16")  # type: ignore[assignment]
    assert_invalid(send(hostile_app, body, content_type))


@pytest.mark.parametrize(
    "data",
    [
        b'{"url": "https://www.amazon.com/dp/\xff\xfe"}',
        b'{"url": "\xc3\x28"}',
        b'\xef\xbb\xbf{"url": "https://www.amazon.com/dp/B0EXAMPLE1"}\xed\xa0\x80',
        b"\x00" * 64,
        b'{"url": "a\x00b"}',
    ],
    ids=["invalid-continuation", "overlong", "surrogate-bytes", "nul-bytes", "raw-nul-in-string"],
)
def test_invalid_utf8_and_raw_nul_bytes_are_invalid_request(
    hostile_app: Flask, data: bytes
) -> None:
    assert_invalid(send(hostile_app, data))


@pytest.mark.parametrize(
    "data",
    [
        "[" * 100_000 + "]" * 100_000,
        '{"url":' * 100_000 + '"x"' + "}" * 100_000,
        '{"url": ' + "[" * 5_000 + "]" * 5_000 + "}",
        "[" * 1_000 + "]" * 1_000,
        '{"url": ' + "9" * 5_000 + "}",
        '{"url": 1e999999}',
    ],
    ids=[
        "arrays-100k",
        "objects-100k",
        "url-arrays-5k",
        "arrays-1k",
        "int-5000-digits",
        "huge-exp",
    ],
)
def test_pathological_json_is_invalid_request_not_a_crash(hostile_app: Flask, data: str) -> None:
    started = time.monotonic()
    assert_invalid(send(hostile_app, data))
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "url",
    [
        "https://www.amazon.com/dp/B0EXAMPLE1\x00",
        "\x00https://www.amazon.com/dp/B0EXAMPLE1",
        "https://www.amazon.com\x00.evil.example/dp/B0EXAMPLE1",
        "https://www.amazon.com/dp/B0EXA\x00MPLE1",
    ],
)
def test_nul_characters_in_the_url_are_refused(hostile_app: Flask, url: str) -> None:
    body = assert_contract(send(hostile_app, json.dumps({"url": url})))
    assert body["error"]["code"] == "UNRECOGNIZED_AMAZON_URL"


def test_the_batch_route_survives_the_same_input(hostile_app: Flask) -> None:
    client = hostile_app.test_client()
    for data in (
        "[" * 100_000 + "]" * 100_000,
        '{"urls": ' + "9" * 5_000 + "}",
        b'{"urls": ["\xff"]}',
        json.dumps({"urls": ["a" * MIB]}),
    ):
        response = client.post(
            "/api/amazon/import/batch", data=data, content_type="application/json", headers=AUTH
        )
        assert response.status_code in (400, 413)
        assert response.get_json()["error"]["code"] == "INVALID_REQUEST"
    response = client.post(
        "/api/amazon/import/batch",
        json={"urls": ["\x00", "https://www.amazon.com/dp/B0EXAMPLE1", "x" * 3000]},
        headers=AUTH,
    )
    assert response.status_code in (200, 400)
    assert response.mimetype == "application/json"


# --- over real HTTP ---------------------------------------------------------------------


@pytest.fixture
def served(hostile_app: Flask) -> Iterator[tuple[str, int]]:
    """The host app behind werkzeug's threaded server on 127.0.0.1."""
    url, shutdown = cs.serve_in_thread(hostile_app)
    host, port = url.removeprefix("http://").split(":")
    try:
        yield host, int(port)
    finally:
        shutdown()


def raw_post(address: tuple[str, int], body_chunks: list[bytes], chunked: bool) -> Any:
    connection = http.client.HTTPConnection(*address, timeout=10)
    try:
        headers = {**AUTH, "Content-Type": "application/json"}
        if chunked:
            connection.putrequest("POST", "/api/amazon/import")
            for name, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                connection.putheader(name, value)
            connection.endheaders()
            try:
                for chunk in body_chunks:
                    connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                connection.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server answered early and closed: read its answer
        else:
            connection.request(
                "POST", "/api/amazon/import", body=b"".join(body_chunks), headers=headers
            )
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_a_chunked_body_over_the_limit_is_413_over_real_http(served: tuple[str, int]) -> None:
    """No Content-Length to refuse up front: the limit must hold while streaming."""
    chunks = [b'{"url": "https://www.amazon.com/dp/B0EXAMPLE1", "pad": "'] + [b"x" * 65536] * 24
    status, content_type, data = raw_post(served, chunks, chunked=True)
    assert status == 413, data
    assert content_type == "application/json"
    assert json.loads(data)["error"]["code"] == "INVALID_REQUEST"


def test_a_chunked_body_with_a_valid_start_is_still_413_over_real_http(
    served: tuple[str, int],
) -> None:
    """Its first MiB is a whole JSON object: cutting there would import it."""
    chunks = [b'{"url": "https://www.amazon.com/dp/B0EXAMPLE1"}'] + [b" " * 65536] * 24
    status, _, data = raw_post(served, chunks, chunked=True)
    assert status == 413, data
    assert json.loads(data)["error"]["code"] == "INVALID_REQUEST"


def test_a_normal_import_over_real_http(served: tuple[str, int]) -> None:
    body = json.dumps({"url": "https://www.amazon.com/dp/B0EXAMPLE1"}).encode()
    for chunked in (False, True):
        status, _, data = raw_post(served, [body], chunked=chunked)
        assert status == 200, data
        assert json.loads(data)["asin"] == "B0EXAMPLE1"
