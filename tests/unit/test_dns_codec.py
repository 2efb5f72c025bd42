"""The sans-I/O DNS codec: queries, answers (A, AAAA, SRV, CNAME, compression),
and that no byte string makes it raise anything but FormatError."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.dns import codec
from skycluster.dns.codec import Record, Srv


def test_query_layout() -> None:
    query = codec.build_query(0x1234, "app.testns.svc.cluster.local.", codec.SRV)
    assert query[:4] == b"\x12\x34\x01\x00"  # id, RD
    assert struct.unpack("!HHHH", query[4:12]) == (1, 0, 0, 0)
    assert query[12:] == (
        b"\x03app\x06testns\x03svc\x07cluster\x05local\x00" + struct.pack("!HH", 33, 1)
    )


def test_answer_round_trip() -> None:
    query = codec.build_query(7, "peers.test", codec.A)
    answers = [
        Record("peers.test", codec.A, 30, "10.0.0.1"),
        Record("peers.test", codec.AAAA, 30, "fd00::1"),
        Record("peers.test", codec.SRV, 30, Srv(0, 10, 4370, "app-0.app.ns.svc.cluster.local")),
        Record("peers.test", codec.CNAME, 30, "other.test"),
        Record("peers.test", 16, 30, b"\x03txt"),
    ]
    message = codec.parse_message(codec.build_response(query, answers))
    assert message.id == 7 and message.is_response and not message.truncated
    assert message.questions == (("peers.test", codec.A),)
    assert list(message.answers) == answers


def test_compression_pointers_are_followed() -> None:
    query = codec.build_query(1, "a.test", codec.SRV)
    header = struct.pack("!HHHHHH", 1, 0x8180, 1, 1, 0, 0)
    question = codec.encode_name("a.test") + struct.pack("!HH", codec.SRV, 1)
    # owner: pointer to the question name (offset 12); target: "x" + pointer to "test"
    rdata = struct.pack("!HHH", 1, 2, 3) + b"\x01x\xc0\x0e"
    record = b"\xc0\x0c" + struct.pack("!HHIH", codec.SRV, 1, 5, len(rdata)) + rdata
    message = codec.parse_message(header + question + record)
    assert query[12:] == question
    assert message.answers[0].name == "a.test"
    assert message.answers[0].value == Srv(1, 2, 3, "x.test")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00" * 11,
        struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\xc0\x0c",  # pointer to itself
        struct.pack("!HHHHHH", 1, 0x8180, 1, 0, 0, 0) + b"\x05ab",  # label past the end
        struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\x00" + struct.pack("!HHIH", 1, 1, 0, 9),
        struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0)
        + b"\x00"
        + struct.pack("!HHIH", 1, 1, 0, 3)
        + b"abc",  # A of 3 bytes
        struct.pack("!HHHHHH", 1, 0x8180, 0, 1, 0, 0) + b"\x80",  # reserved label type
    ],
)
def test_malformed_messages(data: bytes) -> None:
    with pytest.raises(codec.FormatError):
        codec.parse_message(data)


def test_truncated_answer_keeps_whole_records() -> None:
    query = codec.build_query(3, "m.test", codec.A)
    full = codec.build_response(
        query, [Record("m.test", codec.A, 1, f"10.0.0.{i}") for i in range(3)], truncated=True
    )
    message = codec.parse_message(full[:-2])
    assert message.truncated and len(message.answers) == 2


def test_names_are_checked_when_encoding() -> None:
    with pytest.raises(ValueError, match="labels"):
        codec.encode_name("a..b")
    with pytest.raises(ValueError, match="255"):
        codec.encode_name(".".join(["x" * 60] * 5))


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_parse_or_raise_format_error(data: bytes) -> None:
    with contextlib.suppress(codec.FormatError):
        codec.parse_message(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=12, max_size=300), st.integers(0, 299), st.integers(0, 255))
def test_mutated_answers_parse_or_raise_format_error(data: bytes, at: int, value: int) -> None:
    query = codec.build_query(9, "app.test", codec.SRV)
    good = codec.build_response(query, [Record("app.test", codec.SRV, 1, Srv(0, 0, 1, "t.test"))])
    mutated = bytearray(good + data)
    mutated[at % len(mutated)] = value
    with contextlib.suppress(codec.FormatError):
        codec.parse_message(bytes(mutated))
