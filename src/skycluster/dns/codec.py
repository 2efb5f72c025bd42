"""DNS messages (RFC 1035, AAAA: RFC 3596, SRV: RFC 2782) as bytes in, values out.

Pure functions: :func:`build_query` makes a query; :func:`parse_message` reads
an answer, following name compression with bounds and loop checks. Anything
malformed raises :class:`FormatError`, never anything else.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

A, NS, CNAME, SOA, AAAA, SRV = 1, 2, 5, 6, 28, 33
CLASS_IN = 1
TYPE_NAMES = {A: "A", AAAA: "AAAA", SRV: "SRV", CNAME: "CNAME"}

# response codes
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
RCODE_NAMES = {
    NOERROR: "NOERROR",
    FORMERR: "FORMERR",
    SERVFAIL: "SERVFAIL",
    NXDOMAIN: "NXDOMAIN",
    NOTIMP: "NOTIMP",
    REFUSED: "REFUSED",
}

_HEADER = struct.Struct("!HHHHHH")
_FIXED = struct.Struct("!HHIH")  # type, class, ttl, rdlength
MAX_POINTERS = 64


class FormatError(ValueError):
    """Bytes that are not a well-formed DNS message."""


@dataclass(frozen=True, slots=True)
class Srv:
    priority: int
    weight: int
    port: int
    target: str  # without the trailing dot; "" for the root ("no service")


@dataclass(frozen=True, slots=True)
class Record:
    name: str
    type: int
    ttl: int
    value: str | Srv | bytes  # A/AAAA: the address; CNAME: the name; SRV: Srv; else raw


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    is_response: bool
    truncated: bool
    rcode: int
    questions: tuple[tuple[str, int], ...]
    answers: tuple[Record, ...]
    additional: tuple[Record, ...]


def encode_name(name: str) -> bytes:
    name = name.rstrip(".")
    out = bytearray()
    if name:
        for label in name.split("."):
            raw = label.encode("idna") if not label.isascii() else label.encode()
            if not 0 < len(raw) < 64:
                raise ValueError(f"invalid DNS name {name!r}: labels are 1 to 63 bytes")
            out.append(len(raw))
            out += raw
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"invalid DNS name {name[:60]!r}...: longer than 255 bytes")
    return bytes(out)


def build_query(query_id: int, name: str, qtype: int, *, recursion: bool = True) -> bytes:
    flags = 0x0100 if recursion else 0
    return (
        _HEADER.pack(query_id & 0xFFFF, flags, 1, 0, 0, 0)
        + encode_name(name)
        + struct.pack("!HH", qtype, CLASS_IN)
    )


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """The name at ``offset`` and the offset after it (after the first pointer)."""
    labels: list[str] = []
    end: int | None = None
    jumps = 0
    total = 0
    while True:
        if offset >= len(data):
            raise FormatError("name runs past the end of the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise FormatError("truncated compression pointer")
            pointer = ((length & 0x3F) << 8) | data[offset + 1]
            if end is None:
                end = offset + 2
            jumps += 1
            if jumps > MAX_POINTERS or pointer >= len(data):
                raise FormatError("bad or looping compression pointer")
            offset = pointer
            continue
        if length & 0xC0:
            raise FormatError("unsupported label type")
        offset += 1
        if length == 0:
            break
        if offset + length > len(data):
            raise FormatError("label runs past the end of the message")
        total += length + 1
        if total > 255:
            raise FormatError("name longer than 255 bytes")
        labels.append(data[offset : offset + length].decode("ascii", errors="replace"))
        offset += length
    return ".".join(labels), (end if end is not None else offset)


def _read_record(data: bytes, offset: int) -> tuple[Record, int]:
    name, offset = _read_name(data, offset)
    if offset + _FIXED.size > len(data):
        raise FormatError("truncated resource record")
    rtype, _rclass, ttl, length = _FIXED.unpack_from(data, offset)
    offset += _FIXED.size
    if offset + length > len(data):
        raise FormatError("record data runs past the end of the message")
    rdata = data[offset : offset + length]
    value: str | Srv | bytes
    if rtype == A:
        if length != 4:
            raise FormatError("A record of the wrong length")
        value = str(ipaddress.IPv4Address(rdata))
    elif rtype == AAAA:
        if length != 16:
            raise FormatError("AAAA record of the wrong length")
        value = str(ipaddress.IPv6Address(rdata))
    elif rtype == SRV:
        if length < 7:
            raise FormatError("SRV record too short")
        priority, weight, port = struct.unpack_from("!HHH", data, offset)
        target, after = _read_name(data, offset + 6)
        if after > offset + length:
            raise FormatError("SRV target runs past its record")
        value = Srv(priority, weight, port, target)
    elif rtype == CNAME:
        value, _ = _read_name(data, offset)
    else:
        value = bytes(rdata)
    return Record(name, rtype, ttl, value), offset + length


def parse_message(data: bytes) -> Message:
    if len(data) < _HEADER.size:
        raise FormatError("shorter than a DNS header")
    query_id, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    offset = _HEADER.size
    questions = []
    for _ in range(qdcount):
        name, offset = _read_name(data, offset)
        if offset + 4 > len(data):
            raise FormatError("truncated question")
        qtype, _qclass = struct.unpack_from("!HH", data, offset)
        offset += 4
        questions.append((name, qtype))
    truncated = bool(flags & 0x0200)
    sections: list[list[Record]] = [[], [], []]
    try:
        for index, count in enumerate((ancount, nscount, arcount)):
            for _ in range(count):
                record, offset = _read_record(data, offset)
                sections[index].append(record)
    except FormatError:
        if not truncated:
            raise  # a truncated UDP answer may end mid-record: keep what is whole
    return Message(
        id=query_id,
        is_response=bool(flags & 0x8000),
        truncated=truncated,
        rcode=flags & 0x000F,
        questions=tuple(questions),
        answers=tuple(sections[0]),
        additional=tuple(sections[2]),
    )


def build_response(
    query: bytes, answers: list[Record], *, rcode: int = NOERROR, truncated: bool = False
) -> bytes:
    """An answer to ``query`` (for tests and tools): no compression."""
    request = parse_message(query)
    flags = 0x8000 | 0x0100 | 0x0080 | (0x0200 if truncated else 0) | rcode
    out = bytearray(_HEADER.pack(request.id, flags, len(request.questions), len(answers), 0, 0))
    for name, qtype in request.questions:
        out += encode_name(name) + struct.pack("!HH", qtype, CLASS_IN)
    for record in answers:
        if isinstance(record.value, Srv):
            srv = record.value
            rdata = struct.pack("!HHH", srv.priority, srv.weight, srv.port) + encode_name(
                srv.target
            )
        elif record.type in (A, AAAA) and isinstance(record.value, str):
            rdata = ipaddress.ip_address(record.value).packed
        elif isinstance(record.value, bytes):
            rdata = record.value
        else:
            rdata = encode_name(str(record.value))
        out += encode_name(record.name)
        out += _FIXED.pack(record.type, CLASS_IN, record.ttl, len(rdata)) + rdata
    return bytes(out)
