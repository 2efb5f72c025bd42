"""Messaging frames on a link (sans-I/O): building them, and putting fragments together.

Types 5-9 of the link frame table (:mod:`skycluster.distribution.frame_types`,
``docs/protocol.md``)::

    [5, mailbox, [message, ...]]   SEND      messages for one mailbox, in order
    [6, mailbox, ref, request]     CALL      a request; the answer is a REPLY with ``ref``
    [7, ref, status, value]        REPLY     status 0 ok, 1 no such mailbox, 2 bad request,
                                             3 the handler raised, 4 the reply could not be
                                             encoded, 5 the request or the reply was larger
                                             than a max_message_size
    [8, topic, [message, ...]]     PUBLISH   a broadcast, fanned out on the receiving node
    [9, more, chunk]               FRAGMENT  a piece of a frame too large to send at once

Messages are encoded once, by the sender's thread; a SEND or PUBLISH frame is
put together from those bytes without encoding them again, so a frame of many
messages is decoded by the receiver in one call.
"""

from __future__ import annotations

import struct

import msgpack

# The types are numbered in the distribution layer's one table.
from skycluster.distribution.frame_types import CALL as CALL
from skycluster.distribution.frame_types import FRAGMENT as FRAGMENT
from skycluster.distribution.frame_types import PUBLISH as PUBLISH
from skycluster.distribution.frame_types import REPLY as REPLY
from skycluster.distribution.frame_types import SEND as SEND

OK = 0
NO_MAILBOX = 1
BAD_REQUEST = 2
FAILED = 3  # the handler given to serve() raised; value: its description
UNENCODABLE = 4  # the reply holds a value the callee cannot encode; value: what it was
TOO_LARGE = 5  # the request (callee's limit) or the reply (callee's own) is too large

FRAGMENT_SIZE = 64 * 1024  # a larger frame goes out in pieces of this size
GROUP_BYTES = 120 * 1024  # messages batched into one SEND/PUBLISH frame, at most

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def array_header(count: int) -> bytes:
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + _U16.pack(count)
    return b"\xdd" + _U32.pack(count)


def bin_header(size: int) -> bytes:
    if size < 0x100:
        return bytes((0xC4, size))
    if size < 0x10000:
        return b"\xc5" + _U16.pack(size)
    return b"\xc6" + _U32.pack(size)


# The bytes a frame of each type starts with: a msgpack array of 3 or 4, then its type.
_BATCH_START = {SEND: bytes((0x93, SEND)), PUBLISH: bytes((0x93, PUBLISH))}
_CALL_START = bytes((0x94, CALL))
_REPLY_START = bytes((0x94, REPLY))
_FRAGMENT_START = bytes((0x93, FRAGMENT))


def batch_parts(kind: int, key: bytes, messages: list[bytes]) -> list[bytes]:
    """SEND / PUBLISH as the pieces to write, in order: ``key`` and every message
    are msgpack-encoded already (the first three pieces are the frame's head)."""
    return [_BATCH_START[kind], key, array_header(len(messages)), *messages]


def batch_payload(kind: int, key: bytes, messages: list[bytes]) -> bytes:
    """SEND / PUBLISH: ``key`` and every message are msgpack-encoded already."""
    return b"".join(batch_parts(kind, key, messages))


def call_head(name: bytes, ref: bytes) -> bytes:
    """A CALL up to its request (``name`` and ``ref`` msgpack-encoded)."""
    return _CALL_START + name + ref


def call_payload(name: bytes, ref: bytes, request: bytes) -> bytes:
    return call_head(name, ref) + request


def reply_head(ref_status: bytes) -> bytes:
    """A REPLY up to its value (``ref`` and ``status`` msgpack-encoded, one after the other)."""
    return _REPLY_START + ref_status


def reply_payload(ref_status: bytes, value: bytes) -> bytes:
    return reply_head(ref_status) + value


def fragment_payload(chunk: memoryview, more: bool) -> bytes:
    return b"".join((_FRAGMENT_START, b"\xc3" if more else b"\xc2", bin_header(len(chunk)), chunk))


def message_sizes(payload: bytes) -> list[int]:
    """The encoded size of each message a SEND, PUBLISH, CALL (its request) or REPLY
    (its value) payload carries, read without decoding them: a receiver checks its
    ``max_message_size`` this way. ValueError when the payload is not such a frame."""
    reader = msgpack.Unpacker(max_buffer_size=len(payload) + 1)
    reader.feed(payload)
    try:
        length = reader.read_array_header()
        kind = reader.unpack()
        if kind in (SEND, PUBLISH) and length == 3:
            reader.skip()  # mailbox or topic
            count = reader.read_array_header()
            sizes = []
            for _ in range(count):
                start = reader.tell()
                reader.skip()
                sizes.append(reader.tell() - start)
            return sizes
        if kind in (CALL, REPLY) and length == 4:
            reader.skip()  # mailbox or ref
            reader.skip()  # ref or status
            start = reader.tell()
            reader.skip()
            return [reader.tell() - start]
    except (msgpack.OutOfData, msgpack.UnpackException, ValueError) as exc:
        raise ValueError(f"not a messaging frame: {exc.__class__.__name__}") from None
    raise ValueError(f"not a messaging frame of a known shape (type {kind!r}, {length} items)")


class TooLarge(Exception):
    pass


class Reassembler:
    """Puts FRAGMENT pieces back together, up to ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._dropping = False

    def feed(self, more: bool, chunk: bytes) -> bytes | None:
        """The whole frame once the last piece came; None before. Raises TooLarge
        (once) when the pieces pass the limit; the rest of that frame is skipped."""
        if self._dropping:
            if not more:
                self._dropping = False
            return None
        self._size += len(chunk)
        if self._size > self.limit + 1024:  # a little room for the frame's own fields
            size = self._size
            self._parts = []
            self._size = 0
            self._dropping = more
            raise TooLarge(f"a message of more than {size} bytes exceeds the limit of {self.limit}")
        self._parts.append(chunk)
        if more:
            return None
        whole = b"".join(self._parts)
        self._parts = []
        self._size = 0
        return whole
