"""Erlang's external term format (``erts/doc/guides/erl_ext_dist.md``) without I/O.

``encode(value)`` gives what ``term_to_binary(Term, [{minor_version, 2}])`` gives
on OTP 25 (byte for byte, except for the order of map keys); ``decode(data)``
reads what any OTP release from 23 on sends, and the older tags that still
appear (Latin-1 atoms, ``PID_EXT``, ``NEW_REFERENCE_EXT``, ``FLOAT_EXT``). The
Python side of each term is the table in ``docs/erlang.md``.

Decoding is for bytes from the network: every length is checked against the
bytes that are there before anything is allocated, nesting is limited, a
compressed term may not expand beyond a bound, and anything wrong raises
:class:`TermError` and nothing else.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final

from skycluster.erlang.atom import MAX_ATOM_CHARS, Atom
from skycluster.erlang.values import (
    BitBinary,
    FrozenList,
    FrozenMap,
    ImproperList,
    OpaqueFun,
    Pid,
    Port,
    Reference,
)
from skycluster.errors import SkyclusterError

VERSION: Final = 131

# Tags (erl_ext_dist.md). Only those this module reads or writes.
COMPRESSED: Final = 80
NEW_FLOAT_EXT: Final = 70
BIT_BINARY_EXT: Final = 77
ATOM_CACHE_REF: Final = 82
NEW_PID_EXT: Final = 88
NEW_PORT_EXT: Final = 89
NEWER_REFERENCE_EXT: Final = 90
SMALL_INTEGER_EXT: Final = 97
INTEGER_EXT: Final = 98
FLOAT_EXT: Final = 99
ATOM_EXT: Final = 100
REFERENCE_EXT: Final = 101
PORT_EXT: Final = 102
PID_EXT: Final = 103
SMALL_TUPLE_EXT: Final = 104
LARGE_TUPLE_EXT: Final = 105
NIL_EXT: Final = 106
STRING_EXT: Final = 107
LIST_EXT: Final = 108
BINARY_EXT: Final = 109
SMALL_BIG_EXT: Final = 110
LARGE_BIG_EXT: Final = 111
NEW_FUN_EXT: Final = 112
EXPORT_EXT: Final = 113
NEW_REFERENCE_EXT: Final = 114
SMALL_ATOM_EXT: Final = 115
MAP_EXT: Final = 116
FUN_EXT: Final = 117
ATOM_UTF8_EXT: Final = 118
SMALL_ATOM_UTF8_EXT: Final = 119
V4_PORT_EXT: Final = 120
LOCAL_EXT: Final = 121

MAX_REFERENCE_WORDS: Final = 5  # OTP 25 makes 3-word references, 4 and 5 words for others
DEFAULT_MAX_DEPTH: Final = 400
DEFAULT_MAX_DECOMPRESSED: Final = 64 * 1024 * 1024
ATOM_CACHE_SIZE: Final = 1024

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_PID_TAIL = struct.Struct(">III")
_TRUE, _FALSE = b"true", b"false"


class TermError(SkyclusterError, ValueError):
    """Bytes that are not one valid external term, or that exceed a decoding limit."""


class UnencodableTerm(SkyclusterError, TypeError):
    """A Python value that has no external term form (see docs/erlang.md's table)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one decode may cost; the defaults suit messages from peers."""

    max_depth: int = DEFAULT_MAX_DEPTH  # nested tuples, lists and maps
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED  # bytes a compressed term may expand to


DEFAULT_LIMITS: Final = Limits()


# -- decoding ------------------------------------------------------------------


def decode(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """The term that ``data`` holds: the version byte, then exactly one term."""
    term, end = decode_prefix(data, 0, limits)
    if end != len(data):
        raise TermError(f"{len(data) - end} bytes follow the term")
    return term


def decode_prefix(data: bytes, offset: int = 0, limits: Limits = DEFAULT_LIMITS) -> tuple[Any, int]:
    """The term that starts at ``offset`` (version byte included) and where it ends:
    the distribution protocol sends a control message and a message back to back."""
    if offset >= len(data):
        raise TermError("no term: the data ends before the version byte")
    if data[offset] != VERSION:
        raise TermError(f"not an external term: version byte {data[offset]}, expected {VERSION}")
    if offset + 1 < len(data) and data[offset + 1] == COMPRESSED:
        return _decode_compressed(data, offset + 2, limits)
    decoder = _Decoder(data, offset + 1, limits)
    return decoder.run(), decoder.pos


def _decode_compressed(data: bytes, pos: int, limits: Limits) -> tuple[Any, int]:
    if pos + 4 > len(data):
        raise TermError("truncated compressed term: no uncompressed size")
    (size,) = _U32.unpack_from(data, pos)
    if size > limits.max_decompressed:
        raise TermError(
            f"a compressed term claims {size} bytes uncompressed; the limit is "
            f"{limits.max_decompressed}"
        )
    inflater = zlib.decompressobj()
    try:  # one byte more than claimed: a stream that is longer than it says is refused
        body = inflater.decompress(memoryview(data)[pos + 4 :], size + 1)
    except zlib.error as exc:
        raise TermError(f"corrupt compressed term: {exc}") from None
    if len(body) != size or not inflater.eof:
        raise TermError(
            f"compressed term expands to {len(body)}{'' if inflater.eof else '+'} bytes, "
            f"not the {size} it claims"
        )
    decoder = _Decoder(body, 0, limits)
    term = decoder.run()
    if decoder.pos != len(body):
        raise TermError("bytes follow the term inside a compressed term")
    return term, len(data) - len(inflater.unused_data)


@functools.lru_cache(maxsize=ATOM_CACHE_SIZE)
def _atom_utf8(raw: bytes) -> Atom:
    """A bounded cache: the common atoms are shared, a flood of distinct ones is not kept."""
    try:
        return Atom(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise TermError("an atom is not valid UTF-8") from None
    except ValueError:
        raise TermError(f"an atom is longer than {MAX_ATOM_CHARS} characters") from None


def _atom_latin1(raw: bytes) -> Atom:
    if len(raw) > MAX_ATOM_CHARS:
        raise TermError(f"an atom is longer than {MAX_ATOM_CHARS} characters")
    return Atom(raw.decode("latin-1"))


def _freeze(value: Any) -> Any:
    """A hashable form of a decoded map key (lists and maps may be Erlang map keys)."""
    if isinstance(value, list):
        return FrozenList(_freeze(item) for item in value)
    if isinstance(value, dict):
        return FrozenMap({_freeze(k): _freeze(v) for k, v in value.items()})
    if type(value) is tuple:
        return tuple(_freeze(item) for item in value)
    if isinstance(value, ImproperList):
        return ImproperList(tuple(_freeze(item) for item in value.items), _freeze(value.tail))
    return value


class _Decoder:
    __slots__ = ("data", "end", "limits", "pos")

    def __init__(self, data: bytes, pos: int, limits: Limits) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.limits = limits

    def run(self) -> Any:
        try:
            return self.term(0)
        except IndexError:
            raise TermError("truncated term") from None
        except struct.error:
            raise TermError("truncated term") from None
        except RecursionError:
            raise TermError("term nested deeper than this thread's recursion limit") from None

    def take(self, size: int) -> bytes:
        start = self.pos
        if size > self.end - start:
            raise TermError(f"truncated term: {size} bytes announced, {self.end - start} left")
        self.pos = start + size
        return self.data[start : start + size]

    def count(self, count: int, min_size: int) -> int:
        """An element count, checked against the bytes left (each element takes
        ``min_size`` or more) before any list of that size is made."""
        if count * min_size > self.end - self.pos:
            raise TermError(
                f"truncated term: {count} elements announced, {self.end - self.pos} bytes left"
            )
        return count

    def u8(self) -> int:
        value: int = self.data[self.pos]
        self.pos += 1
        return value

    def u16(self) -> int:
        value: int = _U16.unpack_from(self.data, self.pos)[0]
        self.pos += 2
        return value

    def u32(self) -> int:
        value: int = _U32.unpack_from(self.data, self.pos)[0]
        self.pos += 4
        return value

    def term(self, depth: int) -> Any:
        """One term; containers are read here, in one frame per nesting level."""
        data = self.data
        tag = data[self.pos]
        self.pos += 1
        if tag == SMALL_INTEGER_EXT:
            return self.u8()
        if tag == INTEGER_EXT:
            (value,) = _I32.unpack_from(data, self.pos)
            self.pos += 4
            return value
        if tag in _ATOM_TAGS:
            self.pos -= 1
            atom = self.atom()
            if atom.name == "true":
                return True
            if atom.name == "false":
                return False
            return atom
        if tag == BINARY_EXT:
            return self.take(self.u32())
        if tag == NIL_EXT:
            return []
        if tag == STRING_EXT:
            return list(self.take(self.u16()))
        if tag == NEW_FLOAT_EXT:
            (number,) = _F64.unpack_from(data, self.pos)
            self.pos += 8
            return _finite(number)
        if tag in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT, LIST_EXT, MAP_EXT):
            if depth >= self.limits.max_depth:
                raise TermError(f"term nested deeper than {self.limits.max_depth} levels")
            depth += 1
            if tag in (SMALL_TUPLE_EXT, LARGE_TUPLE_EXT):
                arity = self.u8() if tag == SMALL_TUPLE_EXT else self.u32()
                items = []
                for _ in range(self.count(arity, 1)):
                    items.append(self.term(depth))
                return tuple(items)
            if tag == LIST_EXT:
                items = []
                for _ in range(self.count(self.u32(), 1)):
                    items.append(self.term(depth))
                return _join_tail(items, self.term(depth))
            pairs: dict[Any, Any] = {}
            arity = self.count(self.u32(), 2)
            for _ in range(arity):
                key = self.term(depth)
                try:
                    hash(key)
                except TypeError:
                    key = _freeze(key)
                pairs[key] = self.term(depth)
            if len(pairs) != arity:
                raise TermError(
                    "a map has keys that Python cannot tell apart (such as 1 and 1.0, "
                    "or 1 and true) or that repeat"
                )
            return pairs
        return self.other(tag)

    def other(self, tag: int) -> Any:
        """The rarer terms."""
        if tag in (SMALL_BIG_EXT, LARGE_BIG_EXT):
            size = self.u8() if tag == SMALL_BIG_EXT else self.u32()
            negative = self.u8()
            if negative > 1:
                raise TermError(f"a big integer's sign byte is {negative}, not 0 or 1")
            magnitude = int.from_bytes(self.take(size), "little")
            return -magnitude if negative else magnitude
        if tag == BIT_BINARY_EXT:
            size = self.u32()
            bits = self.u8()
            data = self.take(size)
            if not 1 <= bits <= 8 or not data:
                raise TermError(f"a bit binary of {size} bytes with {bits} bits in its last byte")
            if bits == 8:
                return data
            mask = 0xFF << (8 - bits) & 0xFF  # Erlang ignores the unused bits
            return BitBinary(data[:-1] + bytes([data[-1] & mask]), bits)
        if tag in (NEW_PID_EXT, PID_EXT):
            node = self.atom()
            if tag == NEW_PID_EXT:
                number, serial, creation = _PID_TAIL.unpack_from(self.data, self.pos)
                self.pos += 12
            else:
                number, serial = self.u32(), self.u32()
                creation = self.u8()
            return Pid(node, number, serial, creation)
        if tag in (NEWER_REFERENCE_EXT, NEW_REFERENCE_EXT):
            words = self.u16()
            if not 1 <= words <= MAX_REFERENCE_WORDS:
                raise TermError(f"a reference of {words} words (1 to {MAX_REFERENCE_WORDS})")
            node = self.atom()
            creation = self.u32() if tag == NEWER_REFERENCE_EXT else self.u8()
            ids = struct.unpack_from(f">{words}I", self.data, self.pos)
            self.pos += 4 * words
            return Reference(node, creation, ids)
        if tag == REFERENCE_EXT:
            node = self.atom()
            number = self.u32()
            return Reference(node, self.u8(), (number,))
        if tag in (NEW_PORT_EXT, PORT_EXT, V4_PORT_EXT):
            node = self.atom()
            if tag == V4_PORT_EXT:
                (number,) = _U64.unpack_from(self.data, self.pos)
                self.pos += 8
            else:
                number = self.u32()
            creation = self.u8() if tag == PORT_EXT else self.u32()
            return Port(node, number, creation)
        if tag == NEW_FUN_EXT:
            size = self.u32()  # counts itself
            if size < 4:
                raise TermError(f"a fun of {size} bytes")
            start = self.pos - 5
            self.take(size - 4)
            return OpaqueFun(self.data[start : self.pos])
        if tag == EXPORT_EXT:
            start = self.pos - 1
            self.atom()
            self.atom()
            if self.u8() != SMALL_INTEGER_EXT:
                raise TermError("an export's arity is not a small integer")
            self.u8()
            return OpaqueFun(self.data[start : self.pos])
        if tag == FLOAT_EXT:
            text = self.take(31).rstrip(b"\x00")
            try:
                return _finite(float(text.decode("ascii")))
            except (UnicodeDecodeError, ValueError):
                raise TermError("an old-style float that is not a number") from None
        if tag == ATOM_CACHE_REF:
            raise TermError("an atom cache reference outside a distribution header")
        if tag == LOCAL_EXT:
            raise TermError("a LOCAL_EXT term (only meaningful to the node that made it)")
        if tag == FUN_EXT:
            raise TermError("an old FUN_EXT fun (removed in OTP 23)")
        if tag == COMPRESSED:
            raise TermError("a compressed term nested inside a term")
        raise TermError(f"unknown term tag {tag}")

    def atom(self) -> Atom:
        tag = self.u8()
        if tag == SMALL_ATOM_UTF8_EXT:
            return _atom_utf8(self.take(self.u8()))
        if tag == ATOM_UTF8_EXT:
            return _atom_utf8(self.take(self.u16()))
        if tag == ATOM_EXT:
            return _atom_latin1(self.take(self.u16()))
        if tag == SMALL_ATOM_EXT:
            return _atom_latin1(self.take(self.u8()))
        raise TermError(f"an atom was expected, found tag {tag}")


_ATOM_TAGS: Final = frozenset((SMALL_ATOM_UTF8_EXT, ATOM_UTF8_EXT, ATOM_EXT, SMALL_ATOM_EXT))


def _finite(number: float) -> float:
    if not math.isfinite(number):
        raise TermError("a float that is not finite (Erlang has no inf or NaN)")
    return number


def _join_tail(items: list[Any], tail: Any) -> Any:
    """``[items | tail]``: a proper list when the tail is one (a peer may send a list
    whose tail is another non-empty list: it is the same list), else improper."""
    if isinstance(tail, list):
        items.extend(tail)
        return items
    if not items:
        return tail
    if isinstance(tail, ImproperList):
        return ImproperList((*items, *tail.items), tail.tail)
    return ImproperList(tuple(items), tail)


# -- encoding ------------------------------------------------------------------


def encode(
    value: Any, *, compressed: int | None = None, max_depth: int = DEFAULT_MAX_DEPTH
) -> bytes:
    """``value`` as an external term (version byte included). ``compressed``: a zlib
    level (0-9); like Erlang, the compressed form is used only when it is smaller."""
    out = bytearray()
    try:
        _encode(value, out, max_depth)
    except RecursionError:
        raise UnencodableTerm("value nested deeper than this thread's recursion limit") from None
    except (struct.error, OverflowError) as exc:  # a pid's or a reference's number out of range
        raise UnencodableTerm(f"a number out of its field's range: {exc}") from None
    except UnicodeEncodeError:
        raise UnencodableTerm("text that is not valid Unicode (a lone surrogate)") from None
    if compressed is not None:
        packed = zlib.compress(out, compressed)
        if len(packed) + 5 < len(out):
            return bytes((VERSION, COMPRESSED)) + _U32.pack(len(out)) + packed
    return bytes((VERSION,)) + out


def _encode_atom(name: str, out: bytearray) -> None:
    raw = name.encode("utf-8")
    if len(raw) < 256:
        out += bytes((SMALL_ATOM_UTF8_EXT, len(raw)))
    else:
        out.append(ATOM_UTF8_EXT)
        out += _U16.pack(len(raw))
    out += raw


def _encode_int(value: int, out: bytearray) -> None:
    if 0 <= value <= 255:
        out += bytes((SMALL_INTEGER_EXT, value))
    elif -(2**31) <= value < 2**31:
        out.append(INTEGER_EXT)
        out += _I32.pack(value)
    else:
        magnitude = -value if value < 0 else value
        digits = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "little")
        if len(digits) < 256:
            out += bytes((SMALL_BIG_EXT, len(digits), value < 0))
        else:
            out.append(LARGE_BIG_EXT)
            out += _U32.pack(len(digits))
            out.append(value < 0)
        out += digits


def _is_string(items: list[Any] | tuple[Any, ...]) -> bool:
    """Erlang sends a list of 1 to 65535 integers 0-255 as STRING_EXT; so do we."""
    if not 0 < len(items) <= 0xFFFF:
        return False
    return all(type(item) is int and 0 <= item <= 255 for item in items)


def _encode(value: Any, out: bytearray, depth: int) -> None:
    kind = type(value)
    if kind is Atom:
        _encode_atom(value.name, out)
    elif kind is bool:
        _encode_atom("true" if value else "false", out)
    elif kind is int:
        _encode_int(value, out)
    elif kind is bytes or kind is bytearray:
        out.append(BINARY_EXT)
        out += _U32.pack(len(value))
        out += value
    elif kind is str or kind is memoryview:
        raw = value.encode("utf-8") if kind is str else value.tobytes()
        out.append(BINARY_EXT)
        out += _U32.pack(len(raw))
        out += raw
    elif kind is float:
        if not math.isfinite(value):
            raise UnencodableTerm(f"Erlang has no float {value}")
        out.append(NEW_FLOAT_EXT)
        out += _F64.pack(value)
    elif kind in (tuple, list, FrozenList, dict, FrozenMap, ImproperList):
        if depth <= 0:
            raise UnencodableTerm("value nested too deep (raise max_depth to encode it)")
        depth -= 1
        if kind is tuple:
            if len(value) < 256:
                out += bytes((SMALL_TUPLE_EXT, len(value)))
            else:
                out.append(LARGE_TUPLE_EXT)
                out += _U32.pack(len(value))
            for item in value:
                _encode(item, out, depth)
        elif kind is list or kind is FrozenList:
            if not value:
                out.append(NIL_EXT)
            elif _is_string(value):
                out.append(STRING_EXT)
                out += _U16.pack(len(value))
                out += bytes(value)
            else:
                out.append(LIST_EXT)
                out += _U32.pack(len(value))
                for item in value:
                    _encode(item, out, depth)
                out.append(NIL_EXT)
        elif kind is ImproperList:
            out.append(LIST_EXT)
            out += _U32.pack(len(value.items))
            for item in value.items:
                _encode(item, out, depth)
            _encode(value.tail, out, depth)
        else:
            out.append(MAP_EXT)
            out += _U32.pack(len(value))
            for key, item in value.items():
                _encode(key, out, depth)
                _encode(item, out, depth)
    else:
        _encode_other(value, out, depth)


def _encode_other(value: Any, out: bytearray, depth: int) -> None:
    if isinstance(value, Pid):
        out.append(NEW_PID_EXT)
        _encode_atom(value.node.name, out)
        out += _PID_TAIL.pack(value.id, value.serial, value.creation)
    elif isinstance(value, Reference):
        if not 1 <= len(value.ids) <= MAX_REFERENCE_WORDS:
            raise UnencodableTerm(f"a reference has 1 to {MAX_REFERENCE_WORDS} words")
        out.append(NEWER_REFERENCE_EXT)
        out += _U16.pack(len(value.ids))
        _encode_atom(value.node.name, out)
        out += _U32.pack(value.creation)
        out += struct.pack(f">{len(value.ids)}I", *value.ids)
    elif isinstance(value, Port):
        if value.id < 2**32:
            out.append(NEW_PORT_EXT)
            _encode_atom(value.node.name, out)
            out += _U32.pack(value.id)
        else:
            out.append(V4_PORT_EXT)
            _encode_atom(value.node.name, out)
            out += _U64.pack(value.id)
        out += _U32.pack(value.creation)
    elif isinstance(value, BitBinary):
        out.append(BIT_BINARY_EXT)
        out += _U32.pack(len(value.data))
        out.append(value.bits)
        out += value.data
    elif isinstance(value, OpaqueFun):
        out += value.raw
    elif isinstance(value, int):  # subclasses (IntEnum, NamedTuple...) as their base type
        _encode(int(value), out, depth)
    elif isinstance(value, str):
        _encode(str.__str__(value), out, depth)
    elif isinstance(value, bytes):
        _encode(bytes(value), out, depth)
    elif isinstance(value, tuple):
        _encode(tuple(value), out, depth)
    elif isinstance(value, list):
        _encode(list(value), out, depth)
    elif isinstance(value, dict):
        _encode(dict(value), out, depth)
    else:
        raise UnencodableTerm(
            f"{type(value).__name__} has no Erlang term form (see docs/erlang.md for the "
            "types that have one)"
        )
