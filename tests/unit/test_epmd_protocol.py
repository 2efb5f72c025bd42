"""The EPMD codec: byte-exact vectors, round trips, and fuzzing of every decoder."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from skycluster.distribution.epmd_protocol import (
    MAX_EXTRA_BYTES,
    MAX_NAME_CHARS,
    MAX_REQUEST_LENGTH,
    NODE_TYPE_HIDDEN,
    Alive2Request,
    Alive2Response,
    NamesRequest,
    NamesResponse,
    PortPlease2Request,
    ProtocolError,
    RegisteredNode,
    Request,
    RequestParser,
    alive2_response_size,
    decode_alive2_response,
    decode_names_response,
    decode_port2_response,
    decode_request,
    encode_alive2_response,
    encode_names_response,
    encode_port2_response,
    encode_request,
    validate_name,
)


def frame(body: bytes) -> bytes:
    return struct.pack(">H", len(body)) + body


def alive2_body(name: bytes, *, extra: bytes = b"", name_len: int | None = None) -> bytes:
    nlen = len(name) if name_len is None else name_len
    return (
        bytes.fromhex("78 1388 4d 00 0006 0005")
        + struct.pack(">H", nlen)
        + name
        + struct.pack(">H", len(extra))
        + extra
    )


def parse_all(data: bytes) -> list[Request]:
    parser = RequestParser()
    requests = parser.feed(data)
    parser.eof()
    return requests


# --- byte-exact vectors (erts "Distribution Protocol", EPMD section) -------------------------

X_5000 = RegisteredNode("x", 5000)  # type 77 'M', protocol 0, versions 6..5: what OTP 23-25 send

h = bytes.fromhex
VECTORS: list[tuple[str, bytes, bytes]] = [
    # ALIVE2_REQ: len, 120, port, type, protocol, highest, lowest, nlen, name, elen, extra
    (
        "alive2 x",
        encode_request(Alive2Request(X_5000)),
        h("000e 78 1388 4d 00 0006 0005 0001 78 0000"),
    ),
    (
        "alive2 hidden+extra",
        encode_request(Alive2Request(RegisteredNode("node", 0xFFFF, 72, extra=b"\x01\x02"))),
        h("0013 78 ffff 48 00 0006 0005 0004 6e6f6465 0002 0102"),
    ),
    ("port_please2 x", encode_request(PortPlease2Request("x")), h("0002 7a 78")),
    ("port_please2 utf8", encode_request(PortPlease2Request("\u00e9")), h("0003 7a c3a9")),
    ("names", encode_request(NamesRequest()), h("0001 6e")),
    # ALIVE2_X_RESP: 118, result, creation (32 bit); ALIVE2_RESP: 121, result, creation (16 bit)
    (
        "alive2_x_resp ok",
        encode_alive2_response(Alive2Response(0, 0x01020304)),
        h("76 00 01020304"),
    ),
    ("alive2_x_resp error", encode_alive2_response(Alive2Response(1, 99)), h("76 01 00000063")),
    ("alive2_resp ok", encode_alive2_response(Alive2Response(0, 3, False)), h("79 00 0003")),
    # PORT2_RESP: 119, 0, port, type, protocol, highest, lowest, nlen, name, elen, extra
    ("port2_resp ok", encode_port2_response(X_5000), h("77 00 1388 4d 00 0006 0005 0001 78 0000")),
    ("port2_resp missing", encode_port2_response(None), h("77 01")),
    # NAMES reply: the port mapper's port as 4 bytes, then one text line per node
    (
        "names reply",
        encode_names_response(4369, [("x", 5000), ("y", 41)]),
        h("00001111") + b"name x at port 5000\nname y at port 41\n",
    ),
    ("names reply empty", encode_names_response(4369, []), h("00001111")),
]


@pytest.mark.parametrize(("label", "encoded", "expected"), VECTORS, ids=[v[0] for v in VECTORS])
def test_byte_exact_vectors(label: str, encoded: bytes, expected: bytes) -> None:
    assert encoded.hex(" ") == expected.hex(" ")


def test_vectors_decode_back() -> None:
    assert parse_all(bytes.fromhex("000e 78 1388 4d 00 0006 0005 0001 78 0000")) == [
        Alive2Request(X_5000)
    ]
    assert parse_all(bytes.fromhex("0002 7a 78")) == [PortPlease2Request("x")]
    assert parse_all(bytes.fromhex("0001 6e")) == [NamesRequest()]
    assert decode_alive2_response(bytes.fromhex("76 00 01020304")) == Alive2Response(0, 0x01020304)
    assert decode_alive2_response(bytes.fromhex("79 01 0063")) == Alive2Response(1, 99, False)
    assert decode_port2_response(bytes.fromhex("77 00 1388 4d 00 0006 0005 0001 78 0000")) == X_5000
    assert decode_port2_response(bytes.fromhex("77 01")) is None
    assert decode_names_response(bytes.fromhex("00001111") + b"name x at port 5000\n") == (
        NamesResponse(4369, (("x", 5000),))
    )


def test_alive2_response_sizes() -> None:
    assert alive2_response_size(118) == 6
    assert alive2_response_size(121) == 4
    with pytest.raises(ProtocolError, match="unexpected reply code 0 to ALIVE2_REQ"):
        alive2_response_size(0)


def test_node_info_flags() -> None:
    assert not X_5000.hidden
    assert RegisteredNode("h", 1, NODE_TYPE_HIDDEN).hidden
    assert Alive2Response(0, 5).ok and not Alive2Response(1, 99).ok


# --- the server parser ------------------------------------------------------------------------


def test_parser_byte_by_byte_and_pipelined() -> None:
    data = (
        encode_request(Alive2Request(X_5000))
        + encode_request(NamesRequest())
        + encode_request(PortPlease2Request("x"))
    )
    parser = RequestParser()
    got: list[Request] = []
    for i in range(len(data)):
        got += parser.feed(data[i : i + 1])
    parser.eof()
    assert got == [Alive2Request(X_5000), NamesRequest(), PortPlease2Request("x")]
    assert parser.buffered == 0


def test_port_please2_trailing_nul_is_dropped_like_epmd() -> None:
    assert parse_all(frame(b"zabc\0")) == [PortPlease2Request("abc")]


def test_longest_valid_request_is_accepted() -> None:
    node = RegisteredNode("\u00e9" * MAX_NAME_CHARS, 1, extra=b"e" * MAX_EXTRA_BYTES)
    data = encode_request(Alive2Request(node))
    assert len(data) - 2 < MAX_REQUEST_LENGTH  # 255 two-byte characters, extra at its maximum
    assert parse_all(data) == [Alive2Request(node)]
    four_byte = RegisteredNode("\U0001f600" * MAX_NAME_CHARS, 1)  # 1020 bytes, still 255 characters
    assert parse_all(encode_request(Alive2Request(four_byte))) == [Alive2Request(four_byte)]


MALFORMED: list[tuple[str, bytes, str]] = [
    ("empty frame", b"\x00\x00", "empty request"),
    ("oversized frame", b"\xff\xff", "oversized request: length 65535"),
    ("unknown code", frame(b"d"), "unknown request code 100"),
    ("oversized name", frame(alive2_body(b"a" * 256)), "256 characters, more than the 255"),
    ("oversized name bytes", frame(alive2_body(b"a" * 1021)), "1021 bytes long, more than"),
    ("oversized port_please2 name", frame(b"z" + b"a" * 256), "256 characters"),
    ("non-UTF-8 name", frame(alive2_body(b"\xff\xfe")), "not valid UTF-8"),
    ("non-UTF-8 lookup", frame(b"z\xc3"), "not valid UTF-8"),
    ("surrogate name", frame(b"z\xed\xa0\x80"), "not valid UTF-8"),
    ("overlong UTF-8", frame(b"z\xc0\xaf"), "not valid UTF-8"),
    ("empty name", frame(alive2_body(b"")), "node name is empty"),
    ("empty lookup", frame(b"z"), "node name is empty"),
    ("NUL in name", frame(alive2_body(b"a\0b")), "NUL or a line break"),
    ("newline in name", frame(b"za\nname evil at port 1"), "NUL or a line break"),
    ("name length past end", frame(alive2_body(b"x", name_len=5)), "runs past the end"),
    ("trailing bytes", frame(alive2_body(b"x") + b"junk"), "length mismatch"),
    ("extra past end", frame(alive2_body(b"x")[:-2] + b"\x00\x09ab"), "length mismatch"),
    ("short alive2", frame(b"x\x13\x88"), "ALIVE2_REQ: truncated"),
    ("alive2 without tail", frame(alive2_body(b"x")[:9]), "ALIVE2_REQ: truncated"),
    ("names with payload", frame(b"n!"), "NAMES_REQ: length mismatch"),
]


@pytest.mark.parametrize(("label", "data", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_parser_rejects(label: str, data: bytes, message: str) -> None:
    parser = RequestParser()
    with pytest.raises(ProtocolError, match=message):
        parser.feed(data)
    # The stream cannot be resynchronised: the parser keeps failing.
    with pytest.raises(ProtocolError, match=message):
        parser.feed(encode_request(NamesRequest()))


def test_parser_truncated_at_eof() -> None:
    parser = RequestParser()
    assert parser.feed(encode_request(Alive2Request(X_5000))[:-1]) == []
    assert parser.buffered == 15
    with pytest.raises(ProtocolError, match="truncated request: connection closed with 15 bytes"):
        parser.eof()
    RequestParser().eof()  # nothing buffered: a clean close


def test_parser_rejects_oversized_length_before_the_body_arrives() -> None:
    parser = RequestParser(max_length=10)
    with pytest.raises(ProtocolError, match="oversized request: length 11, at most 10"):
        parser.feed(b"\x00\x0b")


def test_decode_request_rejects_empty_body() -> None:
    with pytest.raises(ProtocolError, match="empty request"):
        decode_request(b"")


# --- client reply decoders --------------------------------------------------------------------

BAD_REPLIES = [
    (decode_alive2_response, b"", "no bytes"),
    (decode_alive2_response, bytes.fromhex("76 00 0102"), "length mismatch: 4 bytes, expected 6"),
    (decode_alive2_response, bytes.fromhex("79 00 000102"), "length mismatch: 5 bytes, expected 4"),
    (decode_alive2_response, bytes.fromhex("77 00 0001"), "unexpected reply code 119"),
    (decode_port2_response, b"w", "truncated PORT2_RESP"),
    (decode_port2_response, bytes.fromhex("79 00"), "unexpected reply code 121"),
    (decode_port2_response, bytes.fromhex("77 01 00"), "error result 1 followed by 1"),
    (decode_port2_response, bytes.fromhex("77 00 1388 4d 00 0006"), "PORT2_RESP: truncated"),
    (decode_port2_response, bytes.fromhex("77 00 1388 4d 00 0006 0005 0003 78 0000"), "runs past"),
    (decode_port2_response, bytes.fromhex("77 00 1388 4d 00 0006 0005 0001 ff 0000"), "UTF-8"),
    (decode_names_response, b"\x00\x00", "truncated NAMES reply"),
    (decode_names_response, b"\x00\x00\x11\x11name x at port 1", "last line has no newline"),
    (decode_names_response, b"\x00\x00\x11\x11nom x at port 1\n", "not of the form"),
    (decode_names_response, b"\x00\x00\x11\x11name x at port 99999\n", "above 65535"),
    (decode_names_response, b"\x00\x00\x11\x11name \xff at port 1\n", "not valid UTF-8"),
    (decode_names_response, b"\x00\x00\x11\x11name x at port \xd9\xa3\n", "not of the form"),
]


@pytest.mark.parametrize(("decode", "data", "message"), BAD_REPLIES)
def test_reply_decoders_reject(decode: object, data: bytes, message: str) -> None:
    assert callable(decode)
    with pytest.raises(ProtocolError, match=message):
        decode(data)


def test_names_reply_name_may_contain_the_separator_words() -> None:
    reply = encode_names_response(1, [("a at port 1", 7), (" ", 8)])
    assert decode_names_response(reply).names == (("a at port 1", 7), (" ", 8))


# --- encoder argument checks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: RegisteredNode("", 1), "node name is empty; use 1 to 255 characters"),
        (lambda: RegisteredNode("a" * 256, 1), "256 characters"),
        (lambda: RegisteredNode("a\0", 1), "NUL or a line break"),
        (lambda: RegisteredNode("\ud800", 1), "lone surrogate"),
        (lambda: RegisteredNode("a", 65536), "port must be an integer from 0 to 65535, got 65536"),
        (lambda: RegisteredNode("a", 1, node_type=256), "node_type must be"),
        (lambda: RegisteredNode("a", 1, highest_version=-1), "highest_version must be"),
        (lambda: RegisteredNode("a", 1, extra=b"e" * 1021), "extra has 1021 bytes"),
        (lambda: PortPlease2Request("a\n"), "NUL or a line break"),
        (lambda: Alive2Response(0, 1 << 16, extended=False), "creation must be"),
        (lambda: Alive2Response(256, 0), "result must be"),
        (lambda: encode_names_response(-1, []), "epmd_port must be"),
        (lambda: encode_names_response(1, [("a", 70000)]), "port must be"),
        (lambda: validate_name("x\r"), "NUL or a line break"),
    ],
)
def test_encoders_reject_bad_arguments(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises(ValueError, match=message):
        make()


# --- property tests ---------------------------------------------------------------------------

node_names = st.text(
    st.characters(codec="utf-8", exclude_characters="\0\r\n"), min_size=1, max_size=MAX_NAME_CHARS
)
u16 = st.integers(0, 0xFFFF)
nodes = st.builds(
    RegisteredNode,
    name=node_names,
    port=u16,
    node_type=st.integers(0, 255),
    protocol=st.integers(0, 255),
    highest_version=u16,
    lowest_version=u16,
    extra=st.binary(max_size=MAX_EXTRA_BYTES),
)
requests: st.SearchStrategy[Request] = st.one_of(
    st.builds(Alive2Request, nodes),
    st.builds(PortPlease2Request, node_names),
    st.just(NamesRequest()),
)


def chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    chunks.append(data[pos:])
    return chunks


@given(st.lists(requests, max_size=5), st.lists(st.integers(0, 64), max_size=40))
def test_requests_round_trip_in_any_chunking(reqs: list[Request], sizes: list[int]) -> None:
    parser = RequestParser()
    got: list[Request] = []
    for chunk in chunked(b"".join(encode_request(r) for r in reqs), sizes):
        got += parser.feed(chunk)
    parser.eof()
    assert got == reqs


@given(st.one_of(nodes, st.none()))
def test_port2_response_round_trip(node: RegisteredNode | None) -> None:
    assert decode_port2_response(encode_port2_response(node)) == node


@given(st.integers(0, 255), st.integers(0, 0xFFFFFFFF), st.booleans())
def test_alive2_response_round_trip(result: int, creation: int, extended: bool) -> None:
    if not extended:
        creation &= 0xFFFF
    response = Alive2Response(result, creation, extended)
    data = encode_alive2_response(response)
    assert len(data) == alive2_response_size(data[0])
    assert decode_alive2_response(data) == response


@given(st.integers(0, 0xFFFFFFFF), st.lists(st.tuples(node_names, u16), max_size=20))
def test_names_response_round_trip(epmd_port: int, entries: list[tuple[str, int]]) -> None:
    assert decode_names_response(encode_names_response(epmd_port, entries)) == NamesResponse(
        epmd_port, tuple(entries)
    )


# Random bytes, plus bytes that start like a real request so the fuzzing reaches the decoders.
plausible_frames = st.builds(
    lambda code, body: frame(bytes([code]) + body),
    st.sampled_from([110, 120, 122]),
    st.binary(max_size=300),
)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A valid request with a few bytes overwritten, possibly cut short."""
    data = bytearray(encode_request(draw(requests)))
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


streams = st.one_of(
    st.binary(max_size=3000),
    plausible_frames,
    st.lists(plausible_frames).map(b"".join),
    mutated_requests(),
)


@given(streams, st.lists(st.integers(0, 300), max_size=20))
def test_parser_returns_requests_or_raises_protocol_error(data: bytes, sizes: list[int]) -> None:
    parser = RequestParser()
    try:
        for chunk in chunked(data, sizes):
            assert all(
                isinstance(r, Alive2Request | PortPlease2Request | NamesRequest)
                for r in parser.feed(chunk)
            )
        parser.eof()
    except ProtocolError:
        pass


reply_bytes = st.one_of(
    st.binary(max_size=400),
    st.builds(
        lambda c, b: bytes([c]) + b, st.sampled_from([118, 119, 121]), st.binary(max_size=300)
    ),
    st.builds(lambda body: b"\x00\x00\x11\x11" + body, st.binary(max_size=300)),
    st.builds(
        lambda t: b"\x00\x00\x11\x11" + t.encode("utf-8", "surrogatepass"), st.text(max_size=200)
    ),
)


@given(reply_bytes)
def test_reply_decoders_return_values_or_raise_protocol_error(data: bytes) -> None:
    for decode in (decode_alive2_response, decode_port2_response, decode_names_response):
        with contextlib.suppress(ProtocolError):
            decode(data)
    if data:
        with contextlib.suppress(ProtocolError):
            assert alive2_response_size(data[0]) in (4, 6)
