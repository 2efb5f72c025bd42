"""Frame codec: a 4-byte big-endian length, then that many bytes of msgpack.

Sans-I/O: :class:`FrameDecoder` is fed bytes and returns whole payloads; it never
holds more than one frame limit of buffered data. See ``docs/protocol.md``.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
HEADER_SIZE = HEADER.size

_pack = msgpack.Packer(use_bin_type=True, autoreset=True).pack


class FrameError(Exception):
    """Bytes that are not a valid frame; the connection that sent them is closed."""


class FrameTooLarge(FrameError):
    pass


def encode(value: Any) -> bytes:
    """One frame holding ``value`` as msgpack."""
    payload: bytes = _pack(value)
    return HEADER.pack(len(payload)) + payload


def encode_payload(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def frame_kind(payload: bytes) -> int:
    """The type of a link frame, without decoding it (0: not an array with a small type)."""
    if len(payload) > 1 and payload[0] & 0xF0 == 0x90 and payload[1] < 0x80:
        return payload[1]
    return 0


def unpack(payload: bytes) -> Any:
    """Decode one msgpack payload (its size is already bounded by the frame limit);
    anything but exactly one valid object is a FrameError."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:  # TypeError: unhashable key
        raise FrameError(f"undecodable frame: {exc.__class__.__name__}") from None


class FrameDecoder:
    """Splits a byte stream into payloads of at most ``max_size`` bytes."""

    __slots__ = ("_buffer", "max_size")

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        buf = self._buffer
        held = bool(buf)
        if held:
            buf += data
            view = memoryview(buf)
        else:
            # Nothing held back (the usual case): split the read itself, so that each
            # payload is copied once, not into the buffer first.
            view = memoryview(data)
        frames: list[bytes] = []
        start = 0
        end = len(view)
        with view:
            while end - start >= HEADER_SIZE:
                (size,) = HEADER.unpack_from(view, start)
                if size > self.max_size:
                    raise FrameTooLarge(
                        f"frame of {size} bytes exceeds the limit of {self.max_size}"
                    )
                if end - start - HEADER_SIZE < size:
                    break
                start += HEADER_SIZE
                frames.append(bytes(view[start : start + size]))
                start += size
            if not held and start < end:
                buf += view[start:]  # the start of a frame: kept for the next read
        if held and start:
            del buf[:start]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def take_rest(self) -> bytes:
        """Hand over whatever is buffered (bytes that follow the handshake)."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest
