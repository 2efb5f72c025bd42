"""Erlang distribution messages after the handshake, without I/O
(``erl_dist_protocol.md``, "Protocol between connected nodes").

On the wire each message is a 4-byte length and that many bytes; a zero length is
a tick. skycluster offers neither the atom cache (``DIST_HDR_ATOM_CACHE``) nor
``FRAGMENTS``, so a peer sends every message in the pass-through form: the byte
112, the control message (a tuple, as an external term), then for some kinds
the payload (another external term).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

from skycluster.erlang import terms
from skycluster.erlang.atom import Atom
from skycluster.erlang.values import Pid

PASS_THROUGH: Final = 112
DIST_HEADER: Final = 68  # with the atom cache: never negotiated by skycluster
FRAGMENT_HEADER: Final = 69  # fragments: never negotiated by skycluster
_LENGTH = struct.Struct(">I")
TICK: Final = b"\x00\x00\x00\x00"


class Control(IntEnum):
    """The first element of every control message."""

    LINK = 1
    SEND = 2
    EXIT = 3
    UNLINK = 4
    NODE_LINK = 5
    REG_SEND = 6
    GROUP_LEADER = 7
    EXIT2 = 8
    SEND_TT = 12
    EXIT_TT = 13
    REG_SEND_TT = 16
    EXIT2_TT = 18
    MONITOR_P = 19
    DEMONITOR_P = 20
    MONITOR_P_EXIT = 21
    SEND_SENDER = 22
    SEND_SENDER_TT = 23
    PAYLOAD_EXIT = 24
    PAYLOAD_EXIT_TT = 25
    PAYLOAD_EXIT2 = 26
    PAYLOAD_EXIT2_TT = 27
    PAYLOAD_MONITOR_P_EXIT = 28
    SPAWN_REQUEST = 29
    SPAWN_REQUEST_TT = 30
    SPAWN_REPLY = 31
    SPAWN_REPLY_TT = 32
    ALIAS_SEND = 33
    ALIAS_SEND_TT = 34
    UNLINK_ID = 35
    UNLINK_ID_ACK = 36


# The kinds followed by a payload term (the message, the exit reason, the arguments).
WITH_PAYLOAD: Final = frozenset(
    {
        Control.SEND,
        Control.REG_SEND,
        Control.SEND_TT,
        Control.REG_SEND_TT,
        Control.SEND_SENDER,
        Control.SEND_SENDER_TT,
        Control.PAYLOAD_EXIT,
        Control.PAYLOAD_EXIT_TT,
        Control.PAYLOAD_EXIT2,
        Control.PAYLOAD_EXIT2_TT,
        Control.PAYLOAD_MONITOR_P_EXIT,
        Control.SPAWN_REQUEST,
        Control.SPAWN_REQUEST_TT,
        Control.ALIAS_SEND,
        Control.ALIAS_SEND_TT,
    }
)

_NO_PAYLOAD: Final = object()


class MessageError(terms.TermError):
    """A distribution message that cannot be read: the link is closed (Erlang logs
    "corrupted external term" and does the same)."""


@dataclass(frozen=True, slots=True)
class DistMessage:
    """One control message and, for the kinds that have one, its payload."""

    control: tuple[Any, ...]
    payload: Any = _NO_PAYLOAD

    @property
    def kind(self) -> Control | int:
        """The control message's kind; an ``int`` for a kind this module does not name."""
        tag = self.control[0]
        try:
            return Control(tag)
        except ValueError:
            return int(tag)

    @property
    def has_payload(self) -> bool:
        return self.payload is not _NO_PAYLOAD


def decode(frame: bytes, limits: terms.Limits = terms.DEFAULT_LIMITS) -> DistMessage:
    """One message from a non-empty frame (the 4-byte length already removed)."""
    if not frame:
        raise MessageError("an empty distribution message (a tick has no body)")
    if frame[0] != PASS_THROUGH:
        if frame[0] in (DIST_HEADER, FRAGMENT_HEADER):
            raise MessageError(
                "a message with an atom cache header or in fragments: skycluster never "
                "negotiates DIST_HDR_ATOM_CACHE or FRAGMENTS, so the peer broke the protocol"
            )
        raise MessageError(f"a distribution message starts with byte {frame[0]}, not 112")
    control, end = terms.decode_prefix(frame, 1, limits)
    if not isinstance(control, tuple) or not control or type(control[0]) is not int:
        raise MessageError(
            "a control message that is not a tuple whose first element is an integer"
        )
    if control[0] in WITH_PAYLOAD:
        if end == len(frame):
            raise MessageError(f"control message {control[0]} without its payload")
        payload, end = terms.decode_prefix(frame, end, limits)
        if end != len(frame):
            raise MessageError(f"{len(frame) - end} bytes follow a distribution message")
        return DistMessage(control, payload)
    if end != len(frame):
        raise MessageError(f"control message {control[0]} carries bytes it should not")
    return DistMessage(control)


def encode(message: DistMessage) -> bytes:
    """The message as a frame, its 4-byte length included."""
    if message.has_payload != (message.control[0] in WITH_PAYLOAD):
        raise ValueError(f"control message {message.control[0]}: payload given or missing")
    body = bytes((PASS_THROUGH,)) + terms.encode(message.control)
    if message.has_payload:
        body += terms.encode(message.payload)
    return _LENGTH.pack(len(body)) + body


def reg_send(sender: Pid, name: Atom, message: Any) -> DistMessage:
    """``{name, Node} ! message`` from ``sender``."""
    return DistMessage((int(Control.REG_SEND), sender, Atom(""), name), message)


def send(to: Pid, message: Any) -> DistMessage:
    """``to ! message`` (the sender is not told: use ``send_sender`` when the peer
    offers ``SEND_SENDER``)."""
    return DistMessage((int(Control.SEND), Atom(""), to), message)


class FrameReader:
    """Splits the byte stream of a connected link into messages; counts ticks."""

    def __init__(self, max_frame: int, limits: terms.Limits = terms.DEFAULT_LIMITS) -> None:
        self.max_frame = max_frame
        self.limits = limits
        self.ticks = 0
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[DistMessage]:
        """The messages that ``data`` completes (ticks are only counted). A frame
        larger than ``max_frame`` or unreadable raises :class:`MessageError`."""
        buffer = self._buffer
        buffer += data
        messages: list[DistMessage] = []
        start = 0
        while len(buffer) - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size == 0:
                self.ticks += 1
                start += 4
                continue
            if size > self.max_frame:
                raise MessageError(f"a frame of {size} bytes; the limit is {self.max_frame}")
            if len(buffer) - start - 4 < size:
                break
            frame = bytes(buffer[start + 4 : start + 4 + size])
            start += 4 + size
            messages.append(decode(frame, self.limits))
        del buffer[:start]
        return messages

    @property
    def buffered(self) -> int:
        return len(self._buffer)
