"""The frame codec: round trips, every split point, the size limit, and fuzzing."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skycluster.distribution import frames
from skycluster.distribution.frames import FrameDecoder, FrameError, FrameTooLarge

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5)
    ),
    max_leaves=20,
)


def test_encode_layout() -> None:
    frame = frames.encode({"t": "hello"})
    payload = msgpack.packb({"t": "hello"}, use_bin_type=True)
    assert frame == struct.pack(">I", len(payload)) + payload
    assert frames.encode_payload(b"abc") == b"\x00\x00\x00\x03abc"
    assert frames.encode_payload(b"") == b"\x00\x00\x00\x00"
    assert frames.HEADER_SIZE == 4


def test_bytes_and_text_stay_distinct() -> None:
    (payload,) = FrameDecoder(100).feed(frames.encode([b"bin", "text"]))
    assert frames.unpack(payload) == [b"bin", "text"]


@given(st.lists(msgpack_values, max_size=8))
def test_round_trip(values: list[Any]) -> None:
    stream = b"".join(frames.encode(v) for v in values)
    decoder = FrameDecoder(1 << 20)
    payloads = decoder.feed(stream)
    assert [frames.unpack(p) for p in payloads] == values
    assert decoder.buffered == 0


def test_split_at_every_byte_boundary() -> None:
    values: list[Any] = [[1, b"x" * 10], {"k": "v"}, "", None, [2, 3, 4]]
    stream = b"".join(frames.encode(v) for v in values) + frames.encode_payload(b"")
    expected = [msgpack.packb(v, use_bin_type=True) for v in values] + [b""]
    for cut in range(len(stream) + 1):
        decoder = FrameDecoder(64)
        got = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert got == expected, f"split at {cut}"
        assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    values = [[1, "a"], {"b": b"\x00" * 40}, 7]
    stream = b"".join(frames.encode(v) for v in values)
    decoder = FrameDecoder(64)
    got: list[bytes] = []
    for i in range(len(stream)):
        got += decoder.feed(stream[i : i + 1])
    assert [frames.unpack(p) for p in got] == values


@given(st.lists(st.binary(max_size=40), max_size=10), st.data())
def test_random_chunking_yields_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(frames.encode_payload(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(40)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got += decoder.feed(stream[start:end])
    assert got == payloads
    assert decoder.buffered == 0


@given(st.lists(st.binary(max_size=40), max_size=10), st.data())
def test_reads_into_one_reused_buffer_yield_the_same_frames(
    payloads: list[bytes], data: st.DataObject
) -> None:
    # A link reads every chunk into the same buffer and feeds a view of it: what the
    # decoder returns or keeps must not change when the next read overwrites it.
    stream = b"".join(frames.encode_payload(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    buffer = bytearray(len(stream) + 1)
    decoder = FrameDecoder(40)
    got: list[bytes] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        buffer[:] = b"\xff" * len(buffer)
        buffer[: end - start] = stream[start:end]
        got += decoder.feed(memoryview(buffer)[: end - start])
    buffer[:] = b"\xff" * len(buffer)
    assert got == payloads
    assert decoder.buffered == 0


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(10)
    assert decoder.feed(frames.encode_payload(b"x" * 10)) == [b"x" * 10]


def test_frame_over_the_limit_raises_on_its_header_alone() -> None:
    decoder = FrameDecoder(10)
    with pytest.raises(FrameTooLarge, match="11 bytes exceeds the limit of 10"):
        decoder.feed(struct.pack(">I", 11))  # no body sent: nothing to buffer
    assert issubclass(FrameTooLarge, FrameError)


def test_huge_declared_size_raises_before_any_body() -> None:
    decoder = FrameDecoder(8 * 1024 * 1024)
    decoder.feed(b"\xff\xff")
    assert decoder.buffered == 2
    with pytest.raises(FrameTooLarge):
        decoder.feed(b"\xff\xff")


def test_oversized_frame_after_a_good_one_raises() -> None:
    decoder = FrameDecoder(10)
    with pytest.raises(FrameTooLarge):
        decoder.feed(frames.encode_payload(b"ok") + struct.pack(">I", 1000))


def test_decoder_holds_at_most_one_partial_frame() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(frames.encode_payload(b"a" * 100)[:50]) == []
    assert decoder.buffered == 50
    assert decoder.feed(frames.encode_payload(b"a" * 100)[50:]) == [b"a" * 100]
    assert decoder.buffered == 0


def test_take_rest_hands_over_the_buffer() -> None:
    decoder = FrameDecoder(100)
    assert decoder.feed(frames.encode_payload(b"one") + b"\x00\x00") == [b"one"]
    assert decoder.take_rest() == b"\x00\x00"
    assert decoder.buffered == 0
    assert decoder.take_rest() == b""


@given(st.binary(max_size=300), st.data())
def test_random_streams_yield_frames_or_raise_frame_error(
    stream: bytes, data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = FrameDecoder(data.draw(st.integers(0, 64)))
    got: list[bytes] = []
    try:
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += decoder.feed(stream[start:end])
    except FrameError:
        return
    assert all(len(p) <= decoder.max_size for p in got)
    # what was returned plus what is buffered is exactly the stream, re-framed
    assert b"".join(frames.encode_payload(p) for p in got) + decoder.take_rest() == stream


GARBAGE = [
    b"",  # no object
    b"\xc1",  # the never-used type byte
    b"\x92\x01",  # array of 2 with 1 element
    b"\x01\x02",  # extra data after one object
    b"\xdd\xff\xff\xff\xff",  # array32 declaring 4 billion elements
    b"\xc7\x03\xff\x00\x00\x00",  # timestamp extension of a bad length
    b"\x81\x80\x00",  # map keyed by a map
    b"\x81\x91\x80\x00",  # map keyed by an array holding a map
    b"\x91" * 100_000,  # nesting deeper than any stack
    b"\xa5abc",  # string shorter than declared
    b"\xa2\xff\xfe",  # invalid UTF-8 in a str
]


@pytest.mark.parametrize("payload", GARBAGE, ids=[g[:8].hex() for g in GARBAGE])
def test_unpack_of_garbage_raises_frame_error(payload: bytes) -> None:
    with pytest.raises(FrameError, match="undecodable frame"):
        frames.unpack(payload)


@given(st.binary(max_size=64))
def test_unpack_of_random_bytes_raises_only_frame_error(payload: bytes) -> None:
    with contextlib.suppress(FrameError):
        frames.unpack(payload)


CONTAINER_BYTES = [b"\x81", b"\x91", b"\x80", b"\x90", b"\x00", b"\xc0"]


@given(st.lists(st.sampled_from(CONTAINER_BYTES), max_size=12))
def test_unpack_of_nested_containers_raises_only_frame_error(parts: list[bytes]) -> None:
    with contextlib.suppress(FrameError):
        frames.unpack(b"".join(parts))
