"""The operations endpoint's request parser (sans-I/O): limits and strictness."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.ops.http11 import HttpError, RequestParser, response


def parse(data: bytes, **limits: int) -> object:
    return RequestParser(**limits).feed(data)


def status_of(data: bytes, **limits: int) -> int:
    with pytest.raises(HttpError) as caught:
        parse(data, **limits)
    return caught.value.status


def test_a_get_request_is_parsed_with_lower_case_headers_and_query() -> None:
    request = parse(b"GET /status?x=1&y=2 HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n")
    assert request is not None
    assert request.method == "GET"  # type: ignore[attr-defined]
    assert request.path == "/status"  # type: ignore[attr-defined]
    assert request.query == {"x": ["1"], "y": ["2"]}  # type: ignore[attr-defined]
    assert request.headers == {"host": "a", "accept": "*/*"}  # type: ignore[attr-defined]


def test_a_request_arriving_byte_by_byte_is_complete_only_at_the_blank_line() -> None:
    data = b"HEAD /health HTTP/1.0\r\nHost: x\r\n\r\n"
    parser = RequestParser()
    results = [parser.feed(data[i : i + 1]) for i in range(len(data))]
    assert all(r is None for r in results[:-1])
    assert results[-1] is not None and results[-1].method == "HEAD"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n", 431),  # head too large
        (b"GET /" + b"a" * 3000 + b" HTTP/1.1\r\n\r\n", 414),  # target too long
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / FTP/1.0\r\n\r\n", 400),
        (b"GET /\r\n\r\n", 400),  # HTTP/0.9 style
        (b"GET  / HTTP/1.1\r\n\r\n", 400),  # two spaces
        (b"G(T / HTTP/1.1\r\n\r\n", 400),
        (b"GET status HTTP/1.1\r\n\r\n", 400),  # not origin-form
        (b"GET /\xff HTTP/1.1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: 1\r\n folded\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nNo colon\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 413),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 413),
        (b"GET /?" + b"&".join(b"a=%d" % i for i in range(40)) + b" HTTP/1.1\r\n\r\n", 400),
    ],
)
def test_malformed_or_oversized_requests_are_refused_with_a_status(
    data: bytes, status: int
) -> None:
    assert status_of(data) == status


def test_too_many_header_fields_are_refused() -> None:
    fields = b"".join(b"X-%d: 1\r\n" % i for i in range(70))
    assert status_of(b"GET / HTTP/1.1\r\n" + fields + b"\r\n") == 431


def test_an_endless_head_is_refused_once_past_the_limit_without_buffering_more() -> None:
    parser = RequestParser(max_head=1024)
    assert parser.feed(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(HttpError) as caught:
        for _ in range(100):
            parser.feed(b"X-Filler: " + b"a" * 100 + b"\r\n")
    assert caught.value.status == 431
    assert len(parser._buffer) < 1024 + 200


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=30))
def test_arbitrary_bytes_only_ever_give_a_request_none_or_an_http_error(
    chunks: list[bytes],
) -> None:
    parser = RequestParser(max_head=2048)
    try:
        for chunk in chunks:
            parser.feed(chunk)
            assert len(parser._buffer) <= 2048 + 600
    except HttpError as exc:
        assert 400 <= exc.status < 600


def test_responses_close_the_connection_and_forbid_sniffing() -> None:
    data = response(200, b"ok\n")
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in head and b"X-Content-Type-Options: nosniff" in head
    assert b"Content-Length: 3" in head and body == b"ok\n"
    assert response(200, b"ok", head_only=True).endswith(b"\r\n\r\n")
    assert b"Content-Length" not in response(200, length=False, head_only=True)
