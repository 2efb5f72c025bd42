"""Gossip packets: the pure codec of the gossip strategy (sans-I/O).

A heartbeat names its sender and where it accepts links. It travels in one UDP
datagram, either *plain* (no secret configured) or *sealed*: encrypted and
authenticated with AES-256-GCM under a key derived by HKDF-SHA256 from a shared
secret, with a random 96-bit nonce per packet and the header (magic, version,
kind, cluster label, key id, nonce) bound as associated data. A receiver keeps,
per sender, its incarnation, a 64-packet sequence window and the newest
timestamp, and rejects packets outside a freshness window: a recorded packet
cannot be replayed. The layout is in ``docs/protocol.md`` ("Gossip packets").

Nothing here does I/O: :class:`GossipCodec` turns a :class:`Heartbeat` into
bytes and bytes (plus the current time) into a :class:`Heartbeat` or a
:class:`Drop` naming a :class:`DropReason`. The ``cryptography`` package (the
``skycluster[gossip]`` extra) is needed for sealed packets only.
"""

from __future__ import annotations

import enum
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from skycluster.errors import ConfigError
from skycluster.names import InvalidNodeName, NodeName

MAGIC = b"SKYG"
VERSION = 1
MAX_PACKET_SIZE = 1024  # a heartbeat is about 100 bytes; anything longer is dropped unread
MAX_LABEL_SIZE = 64  # bytes of UTF-8
KEY_ID_SIZE = 4
NONCE_SIZE = 12
TAG_SIZE = 16
DEFAULT_MAX_AGE = 30.0  # seconds a sealed heartbeat stays acceptable (clock skew included)
REPLAY_WINDOW = 64  # sequence numbers remembered below the highest seen, per sender
MAX_SENDERS = 4096  # senders whose replay state is kept (least recently heard evicted)

_PREFIX = struct.Struct(">4sBBB")  # magic, version, kind, label length
_HKDF_SALT = b"skycluster gossip v1"
_KEY_INFO = b"skycluster gossip v1 aes-256-gcm key"
_KEY_ID_INFO = b"skycluster gossip v1 key id"
_U64 = 2**64

INSTALL_HINT = (
    "a gossip secret needs the 'cryptography' package: "
    "pip install 'skycluster[gossip]' (or pip install cryptography)"
)


class Kind(enum.IntEnum):
    PLAIN = 0
    SEALED = 1


class DropReason(enum.StrEnum):
    """Why a packet was dropped; the strategy counts each as ``gossip_dropped_<reason>``."""

    OVERSIZED = "oversized"  # longer than MAX_PACKET_SIZE
    TRUNCATED = "truncated"  # shorter than its own header says
    FOREIGN = "foreign"  # not a skycluster packet (another program on the group)
    VERSION = "version"  # a packet version this node does not speak
    KIND = "kind"  # an unknown packet kind
    OTHER_CLUSTER = "other_cluster"  # another cluster label
    UNSEALED = "unsealed"  # plain packet, but this node requires a secret
    SEALED = "sealed"  # sealed packet, but this node has no secret
    UNKNOWN_KEY = "unknown_key"  # sealed with a secret this node does not have
    AUTHENTICATION = "authentication"  # tampered with, or a wrong secret
    MALFORMED = "malformed"  # the body is not a heartbeat
    STALE = "stale"  # timestamp outside the freshness window (or clocks apart)
    REPLAY = "replay"  # seen before, or older than the sender's newest incarnation
    FLOOD = "flood"  # not read: more packets than the receiver's rate limit (set by the driver)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """``node`` is the sender's name with the port where it accepts links;
    ``incarnation`` is random per start, ``seq`` counts up from 0 within it,
    ``time_ms`` is the sender's wall clock in milliseconds since the epoch."""

    node: NodeName
    incarnation: int
    seq: int
    time_ms: int


@dataclass(frozen=True, slots=True)
class Drop:
    reason: DropReason
    detail: str = ""


# -- keys -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    key_id: bytes
    aead: Any  # cryptography's AESGCM


def _crypto() -> tuple[Any, type[Exception]]:
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return AESGCM, InvalidTag


def derive(secret: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``secret`` with the gossip salt and ``info``."""
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return HKDF(hashes.SHA256(), length, _HKDF_SALT, info).derive(secret)


class Keyring:
    """The secrets of a node: the first one seals outgoing packets, every one
    opens incoming packets (so that a secret can be rotated without downtime).
    Each secret gives an AES-256-GCM key and a 4-byte key id, both by HKDF."""

    def __init__(self, secrets: Sequence[str | bytes]) -> None:
        if not secrets:
            raise ConfigError("a keyring needs at least one secret")
        aesgcm, self._invalid_tag = _crypto()
        keys: list[_Key] = []
        for secret in secrets:
            raw = secret.encode() if isinstance(secret, str) else bytes(secret)
            if not raw:
                raise ConfigError("a gossip secret must not be empty")
            keys.append(
                _Key(derive(raw, _KEY_ID_INFO, KEY_ID_SIZE), aesgcm(derive(raw, _KEY_INFO, 32)))
            )
        self._sending = keys[0]
        self._by_id: dict[bytes, list[_Key]] = {}
        for key in keys:
            self._by_id.setdefault(key.key_id, []).append(key)

    @property
    def key_id(self) -> bytes:
        """Id of the sending key."""
        return self._sending.key_id

    def seal(self, nonce: bytes, body: bytes, aad: bytes) -> bytes:
        return bytes(self._sending.aead.encrypt(nonce, body, aad))

    def knows(self, key_id: bytes) -> bool:
        return key_id in self._by_id

    def open(self, key_id: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes | None:
        """The plaintext, or None when no key with this id authenticates it."""
        for key in self._by_id.get(key_id, ()):
            try:
                return bytes(key.aead.decrypt(nonce, sealed, aad))
            except self._invalid_tag:
                continue
        return None


# -- replay protection ------------------------------------------------------------


@dataclass(slots=True)
class _Sender:
    incarnation: int
    top: int  # highest sequence number accepted
    window: int  # bit i set: top - i was accepted
    newest_ms: int  # newest timestamp accepted
    heard: float  # receiver's clock when last accepted


class ReplayGuard:
    """Per-sender freshness: a packet is accepted once, only within ``max_age``
    seconds of the receiver's clock, and never from an older incarnation than the
    newest one heard (unless that sender has been silent for ``max_age``)."""

    def __init__(self, max_age: float = DEFAULT_MAX_AGE, max_senders: int = MAX_SENDERS) -> None:
        self.max_age = max_age
        self.max_senders = max_senders
        self._senders: OrderedDict[str, _Sender] = OrderedDict()

    def __len__(self) -> int:
        return len(self._senders)

    def check(self, beat: Heartbeat, now: float) -> Drop | None:
        """None (and remembered) when fresh; a Drop otherwise. ``now``: seconds since the epoch."""
        age = now - beat.time_ms / 1000
        if abs(age) > self.max_age:
            return Drop(
                DropReason.STALE,
                f"timestamp {age:+.1f} s from this host's clock (limit {self.max_age:g} s; "
                "are the clocks synchronised?)",
            )
        ident = beat.node.identity
        state = self._senders.get(ident)
        if state is not None and now - state.heard > self.max_age:
            state = None  # silent for long: anything it sent before is stale by now
        if state is None or (
            beat.incarnation != state.incarnation and beat.time_ms > state.newest_ms
        ):
            self._remember(ident, _Sender(beat.incarnation, beat.seq, 1, beat.time_ms, now))
            return None
        if beat.incarnation != state.incarnation:
            return Drop(DropReason.REPLAY, "an older incarnation of the sender")
        if beat.seq > state.top:
            shift = beat.seq - state.top
            state.window = ((state.window << shift) | 1) & ((1 << REPLAY_WINDOW) - 1)
            state.top = beat.seq
        else:
            offset = state.top - beat.seq
            if offset >= REPLAY_WINDOW or state.window >> offset & 1:
                return Drop(DropReason.REPLAY, f"sequence number {beat.seq} seen before")
            state.window |= 1 << offset
        state.newest_ms = max(state.newest_ms, beat.time_ms)
        state.heard = now
        self._senders.move_to_end(ident)
        return None

    def _remember(self, ident: str, state: _Sender) -> None:
        self._senders[ident] = state
        self._senders.move_to_end(ident)
        while len(self._senders) > self.max_senders:
            self._senders.popitem(last=False)


# -- the codec --------------------------------------------------------------------


class GossipCodec:
    """Encodes this node's heartbeats and decodes everyone's.

    With ``secrets``, packets are sealed with the first secret and sealed
    packets under any of them are accepted; plain packets are then dropped
    (and the other way round without secrets). ``label`` separates clusters
    that share a multicast group (and is authenticated in sealed packets)."""

    def __init__(
        self,
        secrets: Sequence[str | bytes] = (),
        label: str = "",
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        encoded = label.encode()
        if len(encoded) > MAX_LABEL_SIZE:
            raise ConfigError(
                f"gossip label {label!r} is too long: at most {MAX_LABEL_SIZE} bytes of UTF-8"
            )
        self.label = label
        self._label = encoded
        self.keyring = Keyring(secrets) if secrets else None
        self.guard = ReplayGuard(max_age)

    @property
    def sealed(self) -> bool:
        return self.keyring is not None

    def rekey(self, secrets: Sequence[str | bytes]) -> None:
        """Seal with, and accept, these secrets from now on (a rotation); the replay
        guard keeps what it has seen."""
        self.keyring = Keyring(secrets)

    def encode(self, beat: Heartbeat, nonce: bytes | None = None) -> bytes:
        """One datagram; sealed when this codec has a secret (``nonce``: tests only)."""
        body = pack_body(beat)
        if self.keyring is None:
            return _PREFIX.pack(MAGIC, VERSION, Kind.PLAIN, len(self._label)) + self._label + body
        nonce = os.urandom(NONCE_SIZE) if nonce is None else nonce
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"a nonce is {NONCE_SIZE} bytes")
        header = (
            _PREFIX.pack(MAGIC, VERSION, Kind.SEALED, len(self._label))
            + self._label
            + self.keyring.key_id
            + nonce
        )
        return header + self.keyring.seal(nonce, body, header)

    def decode(self, data: bytes, now: float) -> Heartbeat | Drop:
        """The heartbeat in ``data``, or why it was dropped. ``now``: seconds since
        the epoch (for the freshness window of sealed packets)."""
        if len(data) > MAX_PACKET_SIZE:
            return Drop(DropReason.OVERSIZED, f"{len(data)} bytes (limit {MAX_PACKET_SIZE})")
        if len(data) < _PREFIX.size:
            if MAGIC.startswith(data[:4]):
                return Drop(DropReason.TRUNCATED, f"{len(data)} bytes")
            return Drop(DropReason.FOREIGN, "not a skycluster packet")
        magic, version, kind, label_size = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            return Drop(DropReason.FOREIGN, "not a skycluster packet")
        if version != VERSION:
            return Drop(DropReason.VERSION, f"version {version} (this node speaks {VERSION})")
        if kind not in (Kind.PLAIN, Kind.SEALED):
            return Drop(DropReason.KIND, f"kind {kind}")
        label_end = _PREFIX.size + label_size
        if len(data) < label_end:
            return Drop(DropReason.TRUNCATED, f"{len(data)} bytes")
        if data[_PREFIX.size : label_end] != self._label:
            return Drop(DropReason.OTHER_CLUSTER, "another cluster label")
        if kind == Kind.PLAIN:
            if self.keyring is not None:
                return Drop(DropReason.UNSEALED, "plain packet; this node requires a secret")
            return unpack_body(data[label_end:])
        if self.keyring is None:
            return Drop(DropReason.SEALED, "sealed packet; this node has no secret")
        header_end = label_end + KEY_ID_SIZE + NONCE_SIZE
        if len(data) < header_end + TAG_SIZE:
            return Drop(DropReason.TRUNCATED, f"{len(data)} bytes")
        key_id = data[label_end : label_end + KEY_ID_SIZE]
        if not self.keyring.knows(key_id):
            return Drop(DropReason.UNKNOWN_KEY, "sealed with a secret this node does not have")
        nonce = data[label_end + KEY_ID_SIZE : header_end]
        body = self.keyring.open(key_id, nonce, data[header_end:], data[:header_end])
        if body is None:
            return Drop(DropReason.AUTHENTICATION, "authentication failed (tampered with?)")
        beat = unpack_body(body)
        if isinstance(beat, Drop):
            return beat
        return self.guard.check(beat, now) or beat


def pack_body(beat: Heartbeat) -> bytes:
    data: bytes = msgpack.packb(
        [str(beat.node), beat.incarnation, beat.seq, beat.time_ms], use_bin_type=True
    )
    return data


def unpack_body(body: bytes) -> Heartbeat | Drop:
    """``[node, incarnation, seq, time_ms, ...]``; later versions may append items."""
    try:
        items = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        return Drop(DropReason.MALFORMED, f"undecodable body ({exc.__class__.__name__})")
    if not isinstance(items, list) or len(items) < 4:
        return Drop(DropReason.MALFORMED, "the body is not [node, incarnation, seq, time]")
    text, incarnation, seq, time_ms = items[:4]
    if not isinstance(text, str):
        return Drop(DropReason.MALFORMED, "the node name is not a string")
    for value in (incarnation, seq, time_ms):
        if type(value) is not int or not 0 <= value < _U64:
            return Drop(DropReason.MALFORMED, "incarnation, seq and time are 64-bit unsigned")
    try:
        node = NodeName.parse(text)
    except InvalidNodeName:
        return Drop(DropReason.MALFORMED, f"invalid node name {text[:80]!r}")
    if node.port is None:
        return Drop(DropReason.MALFORMED, f"no port in node name {text[:80]!r}")
    return Heartbeat(node, incarnation, seq, time_ms)
