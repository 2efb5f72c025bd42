"""The link handshake as a pure state machine (no sockets): see ``docs/protocol.md``.

    initiator                         acceptor
    PREAMBLE + HELLO  ───────────▶   (admit or refuse)
                      ◀───────────   CHALLENGE  | REJECT
    REPLY (proof_i)   ───────────▶   check proof_i
                      ◀───────────   ACK (proof_a) | REJECT

Both proofs are HMAC-SHA256 keyed by the cookie over a hash of HELLO and
CHALLENGE, which carry a fresh random nonce from each side, the names,
incarnations, flags and metadata. Different labels per direction stop a proof
from being reflected. The cookie never crosses the wire.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from skycluster.distribution import frames
from skycluster.names import InvalidNodeName, NodeName

PREAMBLE = b"SKYC"
VERSIONS = (1,)
NONCE_SIZE = 32
MAX_HANDSHAKE_FRAME = 64 * 1024
MAX_METADATA = 4 * 1024

_LABEL_INITIATOR = b"skycluster/1 initiator proof"
_LABEL_ACCEPTOR = b"skycluster/1 acceptor proof"
_HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"PRI ")


class RejectReason(StrEnum):
    """Why an acceptor refused a HELLO; sent in REJECT and logged."""

    VERSION = "version"  # no protocol version in common
    SIMULTANEOUS = "simultaneous"  # both dialled at once; the other connection wins
    ALIVE = "alive"  # already linked to this incarnation of the node
    NAME = "name"  # the peer claims our own name
    AUTH = "auth"  # the peer could not prove the cookie
    BUSY = "busy"  # the acceptor is stopping or over its limits
    REMOVED = "removed"  # a discovery strategy of the acceptor removed the peer


class HandshakeError(Exception):
    """The peer broke the protocol or failed authentication; close the connection."""


@dataclass(frozen=True, slots=True)
class Introduction:
    """What a node tells its peer about itself in the handshake: a node's
    introduction. (The port mapper's view of a node is ``RegisteredNode``.)"""

    name: NodeName
    creation: int
    hidden: bool = False
    address: str | None = None  # "host:port" where the node accepts links
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeerHello:
    """Acceptor side: the initiator introduced itself; call ``admit()`` or ``refuse()``."""

    peer: Introduction


@dataclass(frozen=True, slots=True)
class Established:
    """Both sides proved the cookie. ``rest`` holds bytes that followed the handshake."""

    peer: Introduction
    rest: bytes


@dataclass(frozen=True, slots=True)
class Refused:
    """Initiator side: the acceptor sent REJECT."""

    reason: str


Event = PeerHello | Established | Refused


class _State(Enum):
    START = "start"
    PREAMBLE = "preamble"
    HELLO = "hello"
    ADMIT = "admit"
    CHALLENGE = "challenge"
    REPLY = "reply"
    ACK = "ack"
    DONE = "done"


class Handshake:
    """One side of one handshake. Feed received bytes to :meth:`receive`; send what
    :meth:`initiate`, :meth:`admit`, :meth:`refuse` and :meth:`outgoing` return."""

    def __init__(
        self,
        *,
        initiator: bool,
        me: Introduction,
        cookie: bytes,
        expect: NodeName | None = None,
        versions: tuple[int, ...] = VERSIONS,
        random: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.initiator = initiator
        self.me = me
        self._cookie = cookie
        self._expect = expect
        self._versions = versions
        self._random = random
        self._decoder = frames.FrameDecoder(MAX_HANDSHAKE_FRAME)
        self._transcript = hashlib.sha256()
        self._peer: Introduction | None = None
        self._out: list[bytes] = []
        self._pending_preamble = b""
        self._version = 0
        self.state = _State.START if initiator else _State.PREAMBLE

    @property
    def peer(self) -> Introduction | None:
        return self._peer

    @property
    def done(self) -> bool:
        return self.state is _State.DONE

    # -- what to send ---------------------------------------------------------

    def initiate(self) -> bytes:
        if self.state is not _State.START:
            raise RuntimeError("initiate() is for a fresh initiator")
        hello = {"t": "hello", "versions": list(self._versions), **self._describe(self.me)}
        self.state = _State.CHALLENGE
        return PREAMBLE + self._record(hello)

    def admit(self) -> bytes:
        """Acceptor: answer the HELLO with our CHALLENGE."""
        if self.state is not _State.ADMIT:
            raise RuntimeError("admit() answers a PeerHello")
        challenge = {"t": "challenge", "version": self._version, **self._describe(self.me)}
        self.state = _State.REPLY
        return self._record(challenge)

    def refuse(self, reason: RejectReason) -> bytes:
        self.state = _State.DONE
        return frames.encode({"t": "reject", "reason": reason.value})

    def outgoing(self) -> bytes:
        """Bytes produced while receiving (REPLY, ACK or REJECT)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- what arrives ---------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        if self.state in (_State.START, _State.DONE):
            raise HandshakeError(f"no bytes are expected in state {self.state.value}")
        if self.state is _State.PREAMBLE:
            data = self._pending_preamble + data
            if len(data) < len(PREAMBLE):
                self._pending_preamble = data
                return events
            head, data = data[: len(PREAMBLE)], data[len(PREAMBLE) :]
            if head != PREAMBLE:
                if head in _HTTP_METHODS:
                    raise HandshakeError("an HTTP request arrived on the distribution port")
                raise HandshakeError("not a skycluster peer (bad preamble)")
            self.state = _State.HELLO
        try:
            payloads = self._decoder.feed(data)
        except frames.FrameTooLarge as exc:
            raise HandshakeError(f"handshake {exc}") from None
        for index, payload in enumerate(payloads):
            if self.state is _State.ADMIT:
                raise HandshakeError("the peer sent more before it was admitted")
            events.extend(self._handle(payload))
            if self.state is _State.DONE:
                if events and isinstance(events[-1], Established):
                    later = b"".join(frames.encode_payload(p) for p in payloads[index + 1 :])
                    events[-1] = Established(events[-1].peer, later + self._decoder.take_rest())
                break
        return events

    def _handle(self, payload: bytes) -> list[Event]:
        message = frames.unpack(payload) if payload else None
        if not isinstance(message, dict):
            raise HandshakeError("handshake message is not a map")
        kind = message.get("t")
        if kind == "reject" and self.initiator and self.state in (_State.CHALLENGE, _State.ACK):
            self.state = _State.DONE
            return [Refused(str(message.get("reason", "unknown"))[:64])]
        if self.initiator:
            return self._handle_as_initiator(kind, message, payload)
        return self._handle_as_acceptor(kind, message, payload)

    def _handle_as_initiator(
        self, kind: Any, message: dict[Any, Any], payload: bytes
    ) -> list[Event]:
        if self.state is _State.CHALLENGE and kind == "challenge":
            if message.get("version") not in self._versions:
                raise HandshakeError(f"peer chose unsupported version {message.get('version')!r}")
            peer = self._parse_introduction(message)
            if self._expect is not None and peer.name.identity != self._expect.identity:
                raise HandshakeError(
                    f"reached {peer.name.identity} but expected {self._expect.identity}"
                )
            self._peer = peer
            self._transcript.update(payload)
            self._out.append(frames.encode({"t": "reply", "proof": self._proof(_LABEL_INITIATOR)}))
            self.state = _State.ACK
            return []
        if self.state is _State.ACK and kind == "ack":
            if not self._check(message.get("proof"), _LABEL_ACCEPTOR):
                raise HandshakeError("the peer could not prove the cookie (cookies differ)")
            self.state = _State.DONE
            assert self._peer is not None
            return [Established(self._peer, b"")]
        raise HandshakeError(f"unexpected {kind!r} message while waiting for {self.state.value}")

    def _handle_as_acceptor(
        self, kind: Any, message: dict[Any, Any], payload: bytes
    ) -> list[Event]:
        if self.state is _State.HELLO and kind == "hello":
            offered = message.get("versions")
            if not isinstance(offered, list):
                raise HandshakeError("HELLO without a version list")
            common = [v for v in self._versions if v in offered]
            if not common:  # before the other fields: another version may lay them out otherwise
                self._out.append(self.refuse(RejectReason.VERSION))
                raise HandshakeError(
                    f"no protocol version in common (peer offers {offered[:8]!r}, "
                    f"we speak {list(self._versions)})"
                )
            peer = self._parse_introduction(message)
            self._transcript.update(payload)
            self._peer = peer
            self._version = max(common)
            self.state = _State.ADMIT
            return [PeerHello(peer)]
        if self.state is _State.REPLY and kind == "reply":
            if not self._check(message.get("proof"), _LABEL_INITIATOR):
                self._out.append(self.refuse(RejectReason.AUTH))
                raise HandshakeError("the peer could not prove the cookie (cookies differ)")
            self._out.append(frames.encode({"t": "ack", "proof": self._proof(_LABEL_ACCEPTOR)}))
            self.state = _State.DONE
            assert self._peer is not None
            return [Established(self._peer, b"")]
        raise HandshakeError(f"unexpected {kind!r} message while waiting for {self.state.value}")

    # -- helpers --------------------------------------------------------------

    def _record(self, message: dict[str, Any]) -> bytes:
        frame = frames.encode(message)
        self._transcript.update(frame[frames.HEADER_SIZE :])
        return frame

    def _describe(self, info: Introduction) -> dict[str, Any]:
        return {
            "name": str(info.name.identity),
            "creation": info.creation,
            "nonce": self._random(NONCE_SIZE),
            "hidden": info.hidden,
            "address": info.address,
            "metadata": info.metadata,
        }

    def _proof(self, label: bytes) -> bytes:
        return hmac.new(self._cookie, label + self._transcript.digest(), hashlib.sha256).digest()

    def _check(self, proof: Any, label: bytes) -> bool:
        return isinstance(proof, bytes) and hmac.compare_digest(proof, self._proof(label))

    @staticmethod
    def _parse_introduction(message: dict[Any, Any]) -> Introduction:
        name, creation, nonce = message.get("name"), message.get("creation"), message.get("nonce")
        hidden, address = message.get("hidden", False), message.get("address")
        metadata = message.get("metadata")
        metadata = {} if metadata is None else metadata  # nil is no metadata; [] is an error
        if not isinstance(name, str):
            raise HandshakeError("handshake without a node name")
        try:
            parsed = NodeName.parse(name)
        except InvalidNodeName:
            raise HandshakeError(
                f"the peer's name {name[:300]!r} is not a valid node name"
            ) from None
        if not isinstance(creation, int) or isinstance(creation, bool):
            raise HandshakeError("handshake without an incarnation number")
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
            raise HandshakeError("handshake without a fresh 32-byte nonce")
        if not isinstance(hidden, bool):
            raise HandshakeError("handshake 'hidden' flag is not a boolean")
        if address is not None and (not isinstance(address, str) or len(address) > 300):
            raise HandshakeError("handshake address is not a host:port string")
        if not isinstance(metadata, dict) or len(frames.encode(metadata)) > MAX_METADATA:
            raise HandshakeError(f"handshake metadata is not a map of at most {MAX_METADATA} bytes")
        return Introduction(parsed, creation, hidden, address, metadata)
