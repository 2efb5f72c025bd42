"""The external term codec: bytes from a real OTP 25, property round trips, every
term kind, and hostile input (every failure is one TermError). The round trips
against a running ``erl`` are in tests/integration/test_erlang_term_round_trips.py."""

from __future__ import annotations

import contextlib
import gc
import inspect
import struct
import sys
import tracemalloc
import zlib
from enum import IntEnum
from typing import Any

import pytest
from erlang_strategies import canon, terms
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.erlang import (
    Atom,
    BitBinary,
    FrozenList,
    FrozenMap,
    ImproperList,
    Limits,
    OpaqueFun,
    Pid,
    Port,
    Reference,
    TermError,
    UnencodableTerm,
    decode,
    encode,
)
from skycluster.erlang.terms import decode_prefix

NODE = Atom("nonode@nohost")
# term_to_binary([a, b, [1,2], "x", <<1:3>>, 1.5, 300, -1, 1 bsl 70, #{a => 1}, self(),
# make_ref(), hd(erlang:ports()), fun lists:map/2]) on Debian's OTP 25 (Latin-1 atoms).
FROM_OTP25 = bytes(
    [131, 108, 0, 0, 0, 14, 100, 0, 1, 97, 100, 0, 1, 98, 107, 0, 2, 1, 2, 107, 0, 1, 120, 77]  # noqa: RUF005
    + [0, 0, 0, 1, 3, 32, 70, 63, 248, 0, 0, 0, 0, 0, 0, 98, 0, 0, 1, 44, 98, 255, 255, 255]
    + [255, 110, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 116, 0, 0, 0, 1, 100, 0, 1, 97, 97, 1, 88]
    + [100, 0, 13, *b"nonode@nohost", 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 90, 0, 3, 100, 0, 13]
    + [*b"nonode@nohost", 0, 0, 0, 0, 0, 3, 203, 163, 44, 248, 0, 1, 251, 29, 19, 138, 89, 100]
    + [0, 13, *b"nonode@nohost", 0, 0, 0, 0, 0, 0, 0, 0, 113, 100, 0, 5, *b"lists", 100, 0, 3]
    + [*b"map", 97, 2, 106]
)


def same(a: Any, b: Any) -> bool:
    return bool(canon(a) == canon(b))


def test_bytes_from_a_real_otp_25_node() -> None:
    export = OpaqueFun(bytes([113, 100, 0, 5, *b"lists", 100, 0, 3, *b"map", 97, 2]))
    expected = [
        Atom("a"),
        Atom("b"),
        [1, 2],
        [120],
        BitBinary(b"\x20", 3),
        1.5,
        300,
        -1,
        1 << 70,
        {Atom("a"): 1},
        Pid(NODE, 9, 0, 0),
        Reference(NODE, 0, (248739, 754450433, 4212986762)),
        Port(NODE, 0, 0),
        export,
    ]
    assert same(decode(FROM_OTP25), expected)
    assert export.is_export
    # Back in the same bytes, but for the atoms: UTF-8 ones, as {minor_version, 2} gives.
    assert decode(encode(expected)) == expected


@given(terms)
@settings(max_examples=400)
def test_round_trip(value: Any) -> None:
    assert same(decode(encode(value)), value)


@given(terms, st.integers(0, 9))
@settings(max_examples=100)
def test_compressed_round_trip(value: Any, level: int) -> None:
    assert same(decode(encode(value, compressed=level)), value)


def test_compression_is_used_only_when_smaller() -> None:
    assert encode(b"x", compressed=9) == encode(b"x")
    packed = encode(b"a" * 10_000, compressed=6)
    assert packed[:2] == bytes([131, 80]) and len(packed) < 200
    assert decode(packed) == b"a" * 10_000


def test_encodings_match_erlangs_choices() -> None:
    assert encode(0) == bytes([131, 97, 0])
    assert encode(255) == bytes([131, 97, 255])
    assert encode(256) == bytes([131, 98, 0, 0, 1, 0])
    assert encode(-1) == bytes([131, 98, 255, 255, 255, 255])
    assert encode(2**31) == bytes([131, 110, 4, 0, 0, 0, 0, 128])
    assert encode(-(2**31) - 1) == bytes([131, 110, 4, 1, 1, 0, 0, 128])
    assert encode(1 << 2048)[:7] == bytes([131, 111, 0, 0, 1, 1, 0])  # LARGE_BIG_EXT
    assert encode(Atom("ok")) == bytes([131, 119, 2, *b"ok"])
    assert encode(Atom("é" * 200))[:4] == bytes([131, 118, 1, 144])  # 400 bytes: ATOM_UTF8_EXT
    assert encode(True) == bytes([131, 119, 4, *b"true"])
    assert encode([]) == bytes([131, 106])
    assert encode([1, 2]) == bytes([131, 107, 0, 2, 1, 2])  # STRING_EXT, as Erlang does
    assert encode([1, 256])[:6] == bytes([131, 108, 0, 0, 0, 2])
    assert encode([True]) == bytes([131, 108, 0, 0, 0, 1, 119, 4, *b"true", 106])
    assert encode(tuple(range(256)))[:6] == bytes([131, 105, 0, 0, 1, 0])
    assert encode(Port(NODE, 2**40, 1))[1] == 120  # V4_PORT_EXT
    assert encode(Port(NODE, 7, 1))[1] == 89  # NEW_PORT_EXT


def test_python_conveniences() -> None:
    assert decode(encode("héllo")) == "héllo".encode()  # str travels as a UTF-8 binary
    assert decode(encode(bytearray(b"ab"))) == b"ab"
    assert decode(encode(memoryview(b"ab"))) == b"ab"

    class Color(IntEnum):
        RED = 300

    assert decode(encode([Color.RED])) == [300]
    assert decode(encode(FrozenList([1, 2]))) == [1, 2]
    assert decode(encode(FrozenMap({1: 2}))) == {1: 2}


def test_strings_decode_to_lists_that_encode_back_as_strings() -> None:
    raw = bytes([131, 107, 0, 2, 2, 40])  # [2, 40], as erl sends it
    assert decode(raw) == [2, 40]
    assert encode(decode(raw)) == raw


def test_improper_lists() -> None:
    tag = ImproperList((Atom("alias"),), Reference(NODE, 1, (1, 2, 3)))
    assert decode(encode(tag)) == tag
    # A tail that is itself a list (erl never sends one, a peer may) is the same list.
    nested = bytes([131, 108, 0, 0, 0, 1, 97, 1, 108, 0, 0, 0, 1, 97, 2, 97, 3])
    assert decode(nested) == ImproperList((1, 2), 3)
    assert decode(bytes([131, 108, 0, 0, 0, 1, 97, 1, 107, 0, 1, 2])) == [1, 2]
    with pytest.raises(ValueError, match="at least one element"):
        ImproperList((), 1)
    with pytest.raises(ValueError, match="not a list"):
        ImproperList((1,), [2])
    with pytest.raises(ValueError, match="join their items"):
        ImproperList((1,), ImproperList((2,), 3))


def test_map_keys_that_python_cannot_hash_or_tell_apart() -> None:
    # #{[1] => a, #{b => c} => d}
    raw = encode({FrozenList([1]): Atom("a"), FrozenMap({Atom("b"): Atom("c")}): Atom("d")})
    assert decode(raw) == {FrozenList([1]): Atom("a"), FrozenMap({Atom("b"): Atom("c")}): Atom("d")}
    assert FrozenList([1, 2]) != (1, 2) and hash(FrozenList([1, 2])) != hash((1, 2))
    # #{1 => a, 1.0 => b}: distinct in Erlang, one key in Python.
    clash = bytes([131, 116, 0, 0, 0, 2, 97, 1, 97, 1]) + encode(1.0)[1:] + bytes([97, 2])
    with pytest.raises(TermError, match="cannot tell apart"):
        decode(clash)


def test_old_tags_still_decode() -> None:
    assert decode(bytes([131, 100, 0, 1, 0xE9])) == Atom("é")  # Latin-1 ATOM_EXT
    assert decode(bytes([131, 115, 2, *b"ok"])) == Atom("ok")  # SMALL_ATOM_EXT
    assert decode(bytes([131, 115, 4, *b"true"])) is True
    node = bytes([115, 13, *b"nonode@nohost"])
    assert decode(bytes([131, 103, *node, 0, 0, 0, 5, 0, 0, 0, 1, 2])) == Pid(NODE, 5, 1, 2)
    assert decode(bytes([131, 114, 0, 1, *node, 3, 0, 0, 0, 7])) == Reference(NODE, 3, (7,))
    assert decode(bytes([131, 101, *node, 0, 0, 0, 7, 3])) == Reference(NODE, 3, (7,))
    assert decode(bytes([131, 102, *node, 0, 0, 0, 7, 3])) == Port(NODE, 7, 3)
    v4 = bytes([131, 120, *node, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 3])
    assert decode(v4) == Port(NODE, 2**40, 3)
    old_float = bytes([131, 99]) + b"1.50000000000000000000e+00".ljust(31, b"\x00")
    assert decode(old_float) == 1.5
    assert decode(bytes([131, 77, 0, 0, 0, 1, 8, 0xFF])) == b"\xff"  # 8 bits: a binary
    assert decode(bytes([131, 77, 0, 0, 0, 1, 3, 0xFF])) == BitBinary(b"\xe0", 3)


def test_decode_prefix_reads_terms_back_to_back() -> None:
    stream = (
        encode((Atom("ctrl"), 1))
        + encode("message", compressed=None)
        + encode(b"z" * 500, compressed=9)
    )
    first, end = decode_prefix(stream)
    second, end2 = decode_prefix(stream, end)
    third, end3 = decode_prefix(stream, end2)
    assert (first, second, third, end3) == ((Atom("ctrl"), 1), b"message", b"z" * 500, len(stream))


def test_atoms_are_small_immutable_and_never_equal_text() -> None:
    ok = Atom("ok")
    assert ok == Atom("ok") and ok != "ok" and {ok: 1, "ok": 2}[ok] == 1
    with pytest.raises(AttributeError):
        ok._name = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="at most 255"):
        Atom("x" * 256)
    with pytest.raises(TypeError):
        Atom(b"ok")  # type: ignore[arg-type]
    assert not hasattr(ok, "__dict__")


# -- what has no term form -------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        float("nan"),
        float("inf"),
        object(),
        {1, 2},
        Pid(NODE, 2**32, 0, 0),
        "\ud800",
        Atom("\ud800"),
    ],
)
def test_unencodable_values_are_refused_clearly(value: Any) -> None:
    with pytest.raises(UnencodableTerm):
        encode(value)


def test_deep_python_values_are_refused() -> None:
    deep: Any = []
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(UnencodableTerm, match="nested"):
        encode(deep)


# -- hostile input ----------------------------------------------------------------


@given(terms, st.data())
@settings(max_examples=200)
def test_every_truncation_is_a_term_error(value: Any, data: st.DataObject) -> None:
    raw = encode(value)
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(TermError):
        decode(raw[:cut])


@given(st.binary(max_size=64))
@settings(max_examples=500)
def test_random_bytes_raise_only_term_errors(raw: bytes) -> None:
    for candidate in (raw, bytes([131]) + raw):
        with contextlib.suppress(TermError):
            decode(candidate)


@given(terms, st.data())
@settings(max_examples=200)
def test_corrupted_terms_raise_only_term_errors(value: Any, data: st.DataObject) -> None:
    raw = bytearray(encode(value))
    index = data.draw(st.integers(1, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(TermError):
        decode(bytes(raw))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "no term"),
        (b"\x82a\x01", "version byte 130"),
        (bytes([131, 109, 0x7F, 0xFF, 0xFF, 0xFF]) + b"x" * 100, "2147483647 bytes announced"),
        (bytes([131, 108, 0x7F, 0xFF, 0xFF, 0xFF, 106]), "2147483647 elements announced"),
        (bytes([131, 105, 0x7F, 0xFF, 0xFF, 0xFF, 106]), "2147483647 elements announced"),
        (bytes([131, 116, 0x7F, 0xFF, 0xFF, 0xFF, 106]), "2147483647 elements announced"),
        (bytes([131, 111, 0x7F, 0xFF, 0xFF, 0xFF, 0, 1]), "2147483647 bytes announced"),
        (bytes([131, 77, 0x7F, 0xFF, 0xFF, 0xFF, 3, 1]), "2147483647 bytes announced"),
        (bytes([131, 112, 0x7F, 0xFF, 0xFF, 0xFF, 1]), "bytes announced"),
        (bytes([131, 97, 1, 97]), "follow the term"),
        (bytes([131, 118, 4, 0]) + b"a" * 1024, "longer than 255"),
        (bytes([131, 100, 1, 0]) + b"a" * 256, "longer than 255"),
        (bytes([131, 119, 2, 0xC3, 0x28]), "not valid UTF-8"),
        (bytes([131, 82, 1]), "atom cache reference"),
        (bytes([131, 121, 0]), "LOCAL_EXT"),
        (bytes([131, 117, 0]), "FUN_EXT"),
        (bytes([131, 104, 1, 131, 80, 0]), "unknown term tag 131"),
        (bytes([131, 104, 1, 80, 0]), "compressed term nested"),
        (bytes([131, 200]), "unknown term tag 200"),
        (bytes([131, 70]) + struct.pack(">d", float("nan")), "not finite"),
        (bytes([131, 110, 1, 2, 1]), "sign byte"),
        (bytes([131, 77, 0, 0, 0, 1, 0, 1]), "bit binary"),
        (bytes([131, 90, 0, 9, 119, 1, 97]), "reference of 9 words"),
        (bytes([131, 88, 97, 1]), "atom was expected"),
        (bytes([131, 113, 119, 1, 97, 119, 1, 98, 98, 0, 0, 0, 1]), "arity"),
        (bytes([131, 99]) + b"x" * 31, "not a number"),
    ],
)
def test_hostile_terms(raw: bytes, message: str) -> None:
    with pytest.raises(TermError, match=message):
        decode(raw)


def test_a_term_nested_a_million_deep_is_refused_without_recursing() -> None:
    for opener in (bytes([104, 1]), bytes([108, 0, 0, 0, 1]), bytes([116, 0, 0, 0, 1, 97, 0])):
        raw = bytes([131]) + opener * 1_000_000 + bytes([106])
        with pytest.raises(TermError, match="nested deeper than 400 levels"):
            decode(raw)


def test_the_depth_limit_is_a_setting() -> None:
    raw = encode(((((1,),),),))
    assert decode(raw, Limits(max_depth=4)) == ((((1,),),),)
    with pytest.raises(TermError, match="deeper than 3"):
        decode(raw, Limits(max_depth=3))


def test_a_low_recursion_limit_gives_a_term_error_not_a_crash() -> None:
    raw = bytes([131]) + bytes([104, 1]) * 100 + bytes([106])
    old = sys.getrecursionlimit()
    with pytest.raises(TermError, match="recursion limit"):
        sys.setrecursionlimit(len(inspect.stack()) + 30)
        try:
            decode(raw)
        finally:
            sys.setrecursionlimit(old)


def test_compressed_terms_are_bounded() -> None:
    body = encode(b"\x00" * 1_000_000)[1:]
    bomb = bytes([131, 80]) + struct.pack(">I", len(body)) + zlib.compress(body, 9)
    assert decode(bomb) == b"\x00" * 1_000_000
    with pytest.raises(TermError, match="limit is 1000"):
        decode(bomb, Limits(max_decompressed=1000))
    # A stream that expands beyond what it claims stops one byte past the claim.
    liar = bytes([131, 80]) + struct.pack(">I", 10) + zlib.compress(body, 9)
    with pytest.raises(TermError, match=r"11\+ bytes, not the 10"):
        decode(liar)
    short = bytes([131, 80]) + struct.pack(">I", len(body) + 5) + zlib.compress(body, 9)
    with pytest.raises(TermError, match="not the"):
        decode(short)
    with pytest.raises(TermError, match="corrupt"):
        decode(bytes([131, 80, 0, 0, 0, 5]) + b"not zlib")
    with pytest.raises(TermError, match="uncompressed size"):
        decode(bytes([131, 80, 0, 0]))


def test_an_atom_flood_does_not_grow_memory() -> None:
    def flood(start: int) -> bytes:
        names = [f"atom_{n}".encode() for n in range(start, start + 20_000)]
        body = b"".join(bytes([119, len(n)]) + n for n in names)
        return bytes([131, 108]) + struct.pack(">I", len(names)) + body + bytes([106])

    decode(flood(0))  # warm the bounded cache up
    gc.collect()
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        for round_ in range(1, 11):  # 200,000 distinct atoms
            atoms = decode(flood(round_ * 20_000))
            assert len(atoms) == 20_000
            del atoms
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - base < 2_000_000, f"{after - base} bytes kept after 200,000 distinct atoms"
