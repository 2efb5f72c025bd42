"""The Erlang distribution handshake, version 6 (OTP 23 and later), as a state
machine without I/O: ``erts/doc/guides/erl_dist_protocol.md``.

    initiator (A)                                   acceptor (B)
    send_name  'N' flags creation name   ─────────▶  (accept or refuse)
                                         ◀─────────  status 's' ok | ok_simultaneous | nok |
                                                                not_allowed | alive
    (after 'alive': 's' true | false)    ─────────▶
                                         ◀─────────  challenge 'N' flags chB creationB nameB
    challenge_reply 'r' chA md5(cookie, chB) ──────▶  check the digest
                                         ◀─────────  challenge_ack 'a' md5(cookie, chA)

Every message carries a 2-byte length; after the handshake the link uses 4-byte
lengths (a zero length is a tick). The digest is MD5 over the cookie followed by
the decimal text of the 32-bit challenge. OTP 25 speaks only version 6 and drops a
peer that sends the old ``n`` name message; so does this module, with a reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Final

from skycluster.erlang import flags as dflags
from skycluster.erlang.atom import MAX_ATOM_CHARS
from skycluster.errors import SkyclusterError

VERSION: Final = 6
MAX_MESSAGE: Final = 2048  # a name is at most 255 characters (1020 bytes of UTF-8)

_LENGTH = struct.Struct(">H")
_SEND_NAME = struct.Struct(">cQIH")  # 'N', flags, creation, name length
_CHALLENGE = struct.Struct(">cQIIH")  # 'N', flags, challenge, creation, name length
_REPLY = struct.Struct(">cI16s")  # 'r', challenge, digest
_ACK = struct.Struct(">c16s")  # 'a', digest
_OLD_NAME = struct.Struct(">cHI")  # 'n', version, flags (32 bits), then the name


class Status(StrEnum):
    """The acceptor's answer to a name (``s`` message)."""

    OK = "ok"
    OK_SIMULTANEOUS = "ok_simultaneous"  # both dialled; this connection goes on
    NOK = "nok"  # both dialled; the acceptor's own attempt wins, this one ends
    NOT_ALLOWED = "not_allowed"  # refused (flags, name, policy)
    ALIVE = "alive"  # a link with this node exists; the initiator says whether to replace it


class HandshakeError(SkyclusterError):
    """The peer broke the protocol, lacks a required capability, or could not prove
    the cookie: close the connection. The message is the log line."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The other node, as its handshake introduced it."""

    name: str
    flags: int  # as the peer sent them
    creation: int


@dataclass(frozen=True, slots=True)
class NameReceived:
    """Acceptor: the initiator said who it is. Call :meth:`ErlangHandshake.accept`
    (with the status the node's link table decides) or :meth:`ErlangHandshake.refuse`."""

    peer: Peer


@dataclass(frozen=True, slots=True)
class Established:
    """Both sides proved the cookie. ``flags`` are the ones both sides share;
    ``rest`` holds bytes that followed the handshake (4-byte framed link data)."""

    peer: Peer
    flags: int
    rest: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """Initiator: the acceptor answered ``nok`` or ``not_allowed`` (or ``alive`` was
    declined). The connection ends; nothing is wrong with either side."""

    status: str


Event = NameReceived | Established | Refused


class _State(Enum):
    START = "start"
    NAME = "send_name"
    DECIDE = "a decision on the name"
    STATUS = "status"
    ALIVE_ANSWER = "the answer to 'alive'"
    CHALLENGE = "challenge"
    REPLY = "challenge_reply"
    ACK = "challenge_ack"
    DONE = "done"


def digest(cookie: bytes, challenge: int) -> bytes:
    """MD5 over the cookie and the challenge as decimal text (Erlang's gen_digest)."""
    return hashlib.md5(cookie + str(challenge).encode("ascii")).digest()


def check_node_name(name: str) -> str:
    """``name`` if it is an Erlang node name (``alive@host``), else ValueError."""
    alive, at, host = name.partition("@")
    if not at or not alive or not host or "@" in host:
        raise ValueError(f"{name[:300]!r} is not a node name of the form name@host")
    if len(name) > MAX_ATOM_CHARS:
        raise ValueError(f"a node name has at most {MAX_ATOM_CHARS} characters")
    return name


class ErlangHandshake:
    """One side of one handshake. The initiator calls :meth:`initiate`; both feed
    received bytes to :meth:`receive` and send what :meth:`outgoing` returns (and,
    on the acceptor, what :meth:`accept` or :meth:`refuse` returns)."""

    def __init__(
        self,
        *,
        initiator: bool,
        name: str,
        creation: int,
        cookie: bytes,
        flags: int = dflags.BASE | dflags.Flag.PUBLISHED,
        required: int = dflags.REQUIRED,
        expect: str | None = None,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.initiator = initiator
        self.name = check_node_name(name)
        if not 0 <= creation < 2**32:
            raise ValueError(f"creation={creation}: a 32-bit unsigned number")
        self.creation = creation
        self.flags = flags
        self._cookie = cookie
        self._required = required
        self._expect = expect
        self._random = random
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._challenge = 0  # ours, that the peer's digest must answer
        self._peer: Peer | None = None
        self.state = _State.START if initiator else _State.NAME

    @property
    def peer(self) -> Peer | None:
        return self._peer

    @property
    def done(self) -> bool:
        return self.state is _State.DONE

    # -- what to send ---------------------------------------------------------

    def initiate(self) -> bytes:
        if self.state is not _State.START:
            raise RuntimeError("initiate() is for a fresh initiator")
        raw = self.name.encode()
        self.state = _State.STATUS
        return _message(_SEND_NAME.pack(b"N", self.flags, self.creation, len(raw)) + raw)

    def accept(self, status: Status = Status.OK) -> bytes:
        """Acceptor: answer the name with ``status`` (``ok``, ``ok_simultaneous`` or
        ``alive``) and, but for ``alive``, the challenge."""
        if self.state is not _State.DECIDE:
            raise RuntimeError("accept() answers a NameReceived")
        if status not in (Status.OK, Status.OK_SIMULTANEOUS, Status.ALIVE):
            raise ValueError(f"accept() with status {status!r}: use refuse()")
        out = _message(b"s" + status.value.encode())
        if status is Status.ALIVE:
            self.state = _State.ALIVE_ANSWER
            return out
        return out + self._send_challenge()

    def refuse(self, status: Status = Status.NOT_ALLOWED) -> bytes:
        """Acceptor: answer the name with ``nok`` or ``not_allowed``; then close."""
        if status not in (Status.NOK, Status.NOT_ALLOWED):
            raise ValueError(f"refuse() with status {status!r}: use accept()")
        self.state = _State.DONE
        return _message(b"s" + status.value.encode())

    def outgoing(self) -> bytes:
        """Bytes produced while receiving."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- what arrives ---------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        if not data:
            return []
        if self.state in (_State.START, _State.DONE, _State.DECIDE):
            raise HandshakeError(f"the peer sent data while {self._waiting()}")
        self._buffer += data
        events: list[Event] = []
        while not self.done and len(self._buffer) >= 2:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if size == 0 or size > MAX_MESSAGE:
                raise HandshakeError(
                    f"handshake message of {size} bytes (1 to {MAX_MESSAGE}): not an Erlang "
                    "node, or not a version 6 handshake"
                )
            if len(self._buffer) < 2 + size:
                break
            message = bytes(self._buffer[2 : 2 + size])
            del self._buffer[: 2 + size]
            if self._deciding():
                raise HandshakeError("the peer sent more before its name was accepted")
            event = self._handle(message)
            if event is not None:
                events.append(event)
        if self.done and events and isinstance(events[-1], Established):
            events[-1] = Established(events[-1].peer, events[-1].flags, bytes(self._buffer))
            self._buffer.clear()
        return events

    def _handle(self, message: bytes) -> Event | None:
        tag = message[:1]
        if self.state is _State.NAME:
            return self._on_name(tag, message)
        if self.state is _State.STATUS and tag == b"s":
            return self._on_status(message[1:].decode("ascii", "replace"))
        if self.state is _State.ALIVE_ANSWER and tag == b"s":
            if message[1:] == b"true":
                self._out.append(self._send_challenge())
                return None
            self.state = _State.DONE
            raise HandshakeError(f"{self._who()} chose to keep its existing connection")
        if self.state is _State.CHALLENGE and tag == b"N":
            return self._on_challenge(message)
        if self.state is _State.CHALLENGE and tag == b"n":
            raise HandshakeError(
                f"{self._who()} answered with an old challenge ('n', distribution version 5): "
                f"skycluster speaks version {VERSION} (OTP 23 and later)"
            )
        if self.state is _State.REPLY and tag == b"r":
            return self._on_reply(message)
        if self.state is _State.ACK and tag == b"a":
            return self._on_ack(message)
        raise HandshakeError(
            f"unexpected handshake message {tag!r} from {self._who()} while {self._waiting()}"
        )

    def _on_name(self, tag: bytes, message: bytes) -> Event:
        if tag == b"n" and len(message) >= _OLD_NAME.size:
            _, version, _ = _OLD_NAME.unpack_from(message)
            name = message[_OLD_NAME.size :].decode("utf-8", "replace")[:300]
            raise HandshakeError(
                f"{name!r} sent an old name message ('n', version {version}): skycluster "
                f"speaks distribution version {VERSION} only (OTP 23 and later), as OTP 25 does"
            )
        if tag != b"N" or len(message) < _SEND_NAME.size:
            raise HandshakeError(f"not an Erlang send_name message (tag {tag!r})")
        _, peer_flags, creation, size = _SEND_NAME.unpack_from(message)
        peer = self._peer_from(message[_SEND_NAME.size :], size, peer_flags, creation)
        if peer_flags & dflags.Flag.NAME_ME:
            self._out.append(self.refuse(Status.NOT_ALLOWED))
            raise HandshakeError(f"{peer.name!r} asked to be named (NAME_ME): not supported")
        self._check_flags(peer)
        self._peer = peer
        self.state = _State.DECIDE
        return NameReceived(peer)

    def _on_status(self, status: str) -> Event | None:
        if status in (Status.OK, Status.OK_SIMULTANEOUS):
            self.state = _State.CHALLENGE
            return None
        if status == Status.ALIVE:  # we are a new connection: replace the old one
            self._out.append(_message(b"strue"))
            self.state = _State.CHALLENGE
            return None
        self.state = _State.DONE
        if status in (Status.NOK, Status.NOT_ALLOWED):
            return Refused(status)
        raise HandshakeError(f"{self._who()} answered with status {status[:64]!r}")

    def _on_challenge(self, message: bytes) -> Event | None:
        if len(message) < _CHALLENGE.size:
            raise HandshakeError("truncated challenge message")
        _, peer_flags, challenge, creation, size = _CHALLENGE.unpack_from(message)
        peer = self._peer_from(message[_CHALLENGE.size :], size, peer_flags, creation)
        if self._expect is not None and peer.name != self._expect:
            raise HandshakeError(f"dialled {self._expect!r} but {peer.name!r} answered")
        self._check_flags(peer)
        self._peer = peer
        self._challenge = self._new_challenge()
        reply = _REPLY.pack(b"r", self._challenge, digest(self._cookie, challenge))
        self._out.append(_message(reply))
        self.state = _State.ACK
        return None

    def _on_reply(self, message: bytes) -> Event:
        if len(message) != _REPLY.size:
            raise HandshakeError(f"challenge_reply of {len(message)} bytes, not {_REPLY.size}")
        _, challenge, answer = _REPLY.unpack(message)
        if not hmac.compare_digest(answer, digest(self._cookie, self._challenge)):
            self.state = _State.DONE
            raise HandshakeError(
                f"{self._who()} could not prove the cookie (its digest is wrong): "
                "the two nodes have different cookies"
            )
        self._out.append(_message(_ACK.pack(b"a", digest(self._cookie, challenge))))
        return self._established()

    def _on_ack(self, message: bytes) -> Event:
        if len(message) != _ACK.size:
            raise HandshakeError(f"challenge_ack of {len(message)} bytes, not {_ACK.size}")
        _, answer = _ACK.unpack(message)
        if not hmac.compare_digest(answer, digest(self._cookie, self._challenge)):
            self.state = _State.DONE
            raise HandshakeError(
                f"{self._who()} could not prove the cookie (its acknowledgement digest is "
                "wrong): the two nodes have different cookies"
            )
        return self._established()

    # -- helpers --------------------------------------------------------------

    def _send_challenge(self) -> bytes:
        self._challenge = self._new_challenge()
        raw = self.name.encode()
        head = _CHALLENGE.pack(b"N", self.flags, self._challenge, self.creation, len(raw))
        self.state = _State.REPLY
        return _message(head + raw)

    def _new_challenge(self) -> int:
        return int.from_bytes(self._random(4), "big")

    def _established(self) -> Established:
        self.state = _State.DONE
        assert self._peer is not None
        shared = dflags.effective(self.flags) & dflags.effective(self._peer.flags)
        return Established(self._peer, shared, b"")

    def _peer_from(self, rest: bytes, size: int, peer_flags: int, creation: int) -> Peer:
        if size != len(rest):
            raise HandshakeError(f"a name of {size} bytes announced, {len(rest)} sent")
        try:
            name = check_node_name(rest.decode("utf-8"))
        except UnicodeDecodeError:
            raise HandshakeError("the peer's node name is not UTF-8") from None
        except ValueError as exc:
            raise HandshakeError(f"the peer's {exc}") from None
        return Peer(name, peer_flags, creation)

    def _check_flags(self, peer: Peer) -> None:
        absent = dflags.missing(peer.flags, self._required)
        if not absent:
            return
        if not self.initiator:
            self._out.append(self.refuse(Status.NOT_ALLOWED))
        self.state = _State.DONE
        if "HANDSHAKE_23" in absent:
            why = "an Erlang/OTP release older than 23"
        else:
            why = "a node without capabilities that OTP 25 and 26 require"
        raise HandshakeError(
            f"{peer.name!r} is {why}: it lacks {', '.join(absent)} "
            f"(its flags: {dflags.describe(peer.flags)})"
        )

    def _who(self) -> str:
        if self._peer is not None:
            return repr(self._peer.name)
        return repr(self._expect) if self._expect else "the peer"

    def _deciding(self) -> bool:
        return self.state is _State.DECIDE

    def _waiting(self) -> str:
        return f"waiting for {self.state.value}"


def _message(body: bytes) -> bytes:
    return _LENGTH.pack(len(body)) + body
