"""The gossip packet codec: layout, round trips, sealing, key rotation, replay
protection, and property tests that no input (truncated, oversized, random,
tampered) is ever accepted wrongly or raises."""

from __future__ import annotations

import struct
import sys

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from skycluster.errors import ConfigError
from skycluster.names import NodeName
from skycluster.strategy.gossip_packet import (
    KEY_ID_SIZE,
    MAGIC,
    MAX_PACKET_SIZE,
    NONCE_SIZE,
    REPLAY_WINDOW,
    TAG_SIZE,
    VERSION,
    Drop,
    DropReason,
    GossipCodec,
    Heartbeat,
    Kind,
    ReplayGuard,
    derive,
    pack_body,
    unpack_body,
)

NOW = 1_800_000_000.0  # seconds since the epoch, the receivers' clock in these tests
NOW_MS = int(NOW * 1000)
NODE = NodeName("api", "10.0.0.7", 4401)


def beat(
    seq: int = 0, incarnation: int = 7, time_ms: int = NOW_MS, node: NodeName = NODE
) -> Heartbeat:
    return Heartbeat(node, incarnation, seq, time_ms)


def dropped(result: Heartbeat | Drop) -> DropReason:
    assert isinstance(result, Drop), f"expected a drop, got {result}"
    return result.reason


names = st.builds(
    NodeName,
    st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
    st.one_of(
        st.ip_addresses(v=4).map(str),
        st.ip_addresses(v=6).map(str),
        st.from_regex(r"[a-z][a-z0-9]{0,10}(\.[a-z][a-z0-9]{0,10}){0,3}", fullmatch=True),
    ),
    st.integers(1, 65535),
)
heartbeats = st.builds(
    Heartbeat,
    names,
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(NOW_MS - 20_000, NOW_MS + 20_000),
)
labels = st.text(max_size=10).filter(lambda t: len(t.encode()) <= 64)


# -- layout -------------------------------------------------------------------------


def test_plain_layout() -> None:
    packet = GossipCodec(label="prod").encode(beat(seq=3))
    assert packet[:4] == MAGIC == b"SKYG"
    assert packet[4] == VERSION == 1
    assert packet[5] == 0 and Kind.PLAIN.value == 0
    assert packet[6] == 4 and packet[7:11] == b"prod"
    assert msgpack.unpackb(packet[11:]) == ["api@10.0.0.7:4401", 7, 3, NOW_MS]
    assert len(packet) < 64  # a heartbeat is small


def test_sealed_layout_is_aes_gcm_under_hkdf_keys() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = bytes(range(NONCE_SIZE))
    packet = GossipCodec(["s3cret"], label="prod").encode(beat(), nonce=nonce)
    prefix = b"SKYG" + bytes([1, Kind.SEALED, 4]) + b"prod"
    key_id = derive(b"s3cret", b"skycluster gossip v1 key id", KEY_ID_SIZE)
    key = derive(b"s3cret", b"skycluster gossip v1 aes-256-gcm key", 32)
    header = prefix + key_id + nonce
    assert packet.startswith(header)
    assert len(packet) == len(header) + len(pack_body(beat())) + TAG_SIZE
    # The whole header (label, key id and nonce included) is the associated data.
    assert AESGCM(key).decrypt(nonce, packet[len(header) :], header) == pack_body(beat())
    assert b"api" not in packet  # the name is encrypted


def test_every_sealed_packet_has_a_fresh_nonce() -> None:
    codec = GossipCodec(["s"])
    packets = [codec.encode(beat(seq)) for seq in range(50)]
    nonces = {p[11 : 11 + NONCE_SIZE] for p in packets}  # 7-byte prefix + key id
    assert len(nonces) == 50


def test_different_secrets_give_different_key_ids_and_keys() -> None:
    one = GossipCodec(["one"]).encode(beat(), nonce=bytes(12))
    two = GossipCodec(["two"]).encode(beat(), nonce=bytes(12))
    assert one[7:11] != two[7:11]
    assert one[23:] != two[23:]


# -- round trips ----------------------------------------------------------------------


@given(heartbeats, labels)
def test_plain_round_trip(heartbeat: Heartbeat, label: str) -> None:
    codec = GossipCodec(label=label)
    assert codec.decode(codec.encode(heartbeat), NOW) == heartbeat


@settings(max_examples=50)
@given(heartbeats, labels, st.binary(min_size=1, max_size=40))
def test_sealed_round_trip(heartbeat: Heartbeat, label: str, secret: bytes) -> None:
    sender = GossipCodec([secret], label=label)
    receiver = GossipCodec([secret], label=label)
    assert receiver.decode(sender.encode(heartbeat), NOW) == heartbeat


def test_later_versions_may_append_body_fields() -> None:
    body = msgpack.packb(["api@10.0.0.7:4401", 1, 2, NOW_MS, "more", {"x": 1}])
    assert unpack_body(body) == Heartbeat(NODE, 1, 2, NOW_MS)


# -- secrets --------------------------------------------------------------------------


def test_rotation_first_secret_sends_all_are_accepted() -> None:
    old_only = GossipCodec(["old"])
    rotating = GossipCodec(["new", "old"])  # step 1 of a rotation: accepts both, sends new
    new_only = GossipCodec(["new"])
    from_rotating = rotating.encode(beat(seq=1))
    assert isinstance(GossipCodec(["old", "new"]).decode(from_rotating, NOW), Heartbeat)
    assert isinstance(new_only.decode(from_rotating, NOW), Heartbeat)
    assert dropped(old_only.decode(from_rotating, NOW)) is DropReason.UNKNOWN_KEY
    assert isinstance(rotating.decode(old_only.encode(beat(seq=2)), NOW), Heartbeat)


def test_secret_and_no_secret_never_meet() -> None:
    plain, sealed = GossipCodec(), GossipCodec(["s"])
    assert dropped(sealed.decode(plain.encode(beat()), NOW)) is DropReason.UNSEALED
    assert dropped(plain.decode(sealed.encode(beat()), NOW)) is DropReason.SEALED
    assert dropped(GossipCodec(["t"]).decode(sealed.encode(beat()), NOW)) is DropReason.UNKNOWN_KEY


def test_other_cluster_label_is_dropped_plain_and_sealed() -> None:
    assert dropped(GossipCodec(label="a").decode(GossipCodec(label="b").encode(beat()), NOW)) is (
        DropReason.OTHER_CLUSTER
    )
    packet = GossipCodec(["s"], label="b").encode(beat())
    assert dropped(GossipCodec(["s"], label="a").decode(packet, NOW)) is DropReason.OTHER_CLUSTER


def test_label_is_authenticated() -> None:
    """Rewriting the label (length kept) of a sealed packet breaks authentication."""
    packet = GossipCodec(["s"], label="prod").encode(beat())
    forged = packet.replace(b"prod", b"test", 1)
    assert (
        dropped(GossipCodec(["s"], label="test").decode(forged, NOW)) is DropReason.AUTHENTICATION
    )


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError, match="too long"):
        GossipCodec(label="x" * 65)
    with pytest.raises(ConfigError, match="empty"):
        GossipCodec([""])


def test_without_cryptography_plain_works_and_a_secret_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for module in [m for m in sys.modules if m == "cryptography" or m.startswith("cryptography.")]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(ConfigError, match=r"pip install 'skycluster\[gossip\]'"):
        GossipCodec(["s"])
    codec = GossipCodec()
    assert codec.decode(codec.encode(beat()), NOW) == beat()
    # A sealed packet is recognised (and dropped) without the package.
    sealed = b"SKYG\x01\x01\x00" + bytes(KEY_ID_SIZE + NONCE_SIZE + TAG_SIZE + 10)
    assert dropped(codec.decode(sealed, NOW)) is DropReason.SEALED


# -- replay protection -------------------------------------------------------------------


def test_a_replayed_packet_is_dropped() -> None:
    sender, receiver = GossipCodec(["s"]), GossipCodec(["s"])
    packet = sender.encode(beat(seq=0))
    assert isinstance(receiver.decode(packet, NOW), Heartbeat)
    assert dropped(receiver.decode(packet, NOW + 1)) is DropReason.REPLAY
    assert isinstance(receiver.decode(sender.encode(beat(seq=1)), NOW + 1), Heartbeat)
    assert dropped(receiver.decode(packet, NOW + 2)) is DropReason.REPLAY


def test_stale_and_future_packets_are_dropped() -> None:
    sender, receiver = GossipCodec(["s"]), GossipCodec(["s"], max_age=30)
    assert dropped(receiver.decode(sender.encode(beat(time_ms=NOW_MS - 31_000)), NOW)) is (
        DropReason.STALE
    )
    assert dropped(receiver.decode(sender.encode(beat(time_ms=NOW_MS + 31_000)), NOW)) is (
        DropReason.STALE
    )
    assert isinstance(receiver.decode(sender.encode(beat(time_ms=NOW_MS - 29_000)), NOW), Heartbeat)


def test_reordering_within_the_window_is_accepted_once() -> None:
    guard = ReplayGuard()
    assert guard.check(beat(seq=10), NOW) is None
    assert guard.check(beat(seq=12), NOW) is None
    assert guard.check(beat(seq=11), NOW) is None  # late, but new
    assert dropped_reason(guard.check(beat(seq=11), NOW)) is DropReason.REPLAY
    assert dropped_reason(guard.check(beat(seq=10), NOW)) is DropReason.REPLAY
    assert guard.check(beat(seq=12 + REPLAY_WINDOW), NOW) is None
    assert dropped_reason(guard.check(beat(seq=12), NOW)) is DropReason.REPLAY  # fell out
    assert guard.check(beat(seq=13), NOW) is None  # still inside the window


def dropped_reason(result: Drop | None) -> DropReason | None:
    return None if result is None else result.reason


def test_a_restarted_sender_is_accepted_but_its_old_life_is_not() -> None:
    guard = ReplayGuard(max_age=30)
    old = beat(seq=500, incarnation=1, time_ms=NOW_MS - 5000)
    assert guard.check(old, NOW - 5) is None
    new = beat(seq=0, incarnation=2, time_ms=NOW_MS)
    assert guard.check(new, NOW) is None
    # A recording of the previous incarnation, even with a new sequence number.
    replayed = beat(seq=501, incarnation=1, time_ms=NOW_MS - 4000)
    assert dropped_reason(guard.check(replayed, NOW)) is DropReason.REPLAY
    assert guard.check(beat(seq=1, incarnation=2, time_ms=NOW_MS + 1000), NOW + 1) is None


def test_a_sender_silent_for_max_age_starts_afresh() -> None:
    guard = ReplayGuard(max_age=10)
    assert guard.check(beat(seq=100, incarnation=1, time_ms=NOW_MS + 9000), NOW) is None
    # It restarts with its clock set back: the new incarnation's timestamps are older
    # than the last one heard. Refused while the old one was heard recently...
    restarted = beat(seq=0, incarnation=2, time_ms=NOW_MS + 1000)
    assert dropped_reason(guard.check(restarted, NOW + 1)) is DropReason.REPLAY
    # ...accepted once the old incarnation has been silent for max_age.
    assert guard.check(beat(seq=1, incarnation=2, time_ms=NOW_MS + 2000), NOW + 11) is None


def test_replay_state_is_bounded() -> None:
    guard = ReplayGuard(max_senders=10)
    for i in range(100):
        assert guard.check(beat(node=NodeName(f"n{i}", "10.0.0.1", 1)), NOW) is None
    assert len(guard) == 10


# -- bad input ------------------------------------------------------------------------------


def test_oversized_and_foreign_packets() -> None:
    codec = GossipCodec()
    assert dropped(codec.decode(b"SKYG" + bytes(MAX_PACKET_SIZE), NOW)) is DropReason.OVERSIZED
    assert dropped(codec.decode(b"M-SEARCH * HTTP/1.1\r\n", NOW)) is DropReason.FOREIGN
    assert dropped(codec.decode(b"", NOW)) is DropReason.TRUNCATED
    assert dropped(codec.decode(b"\x00", NOW)) is DropReason.FOREIGN
    assert dropped(codec.decode(b"SKYG\x02\x00\x00", NOW)) is DropReason.VERSION
    assert dropped(codec.decode(b"SKYG\x01\x07\x00", NOW)) is DropReason.KIND
    assert dropped(codec.decode(b"SKYG\x01\x00\x05ab", NOW)) is DropReason.TRUNCATED


@pytest.mark.parametrize(
    "body",
    [
        msgpack.packb("api@10.0.0.7:4401"),
        msgpack.packb(["api@10.0.0.7:4401", 1, 2]),
        msgpack.packb(["api@10.0.0.7", 1, 2, 3]),  # no port: nowhere to dial
        msgpack.packb(["not a name", 1, 2, 3]),
        msgpack.packb([b"api@10.0.0.7:1", 1, 2, 3]),
        msgpack.packb(["api@10.0.0.7:1", -1, 2, 3]),
        msgpack.packb(["api@10.0.0.7:1", True, 2, 3]),
        msgpack.packb(["api@10.0.0.7:1", 1, 2.5, 3]),
        msgpack.packb(["api@10.0.0.7:70000", 1, 2, 3]),
        b"\xc1",  # never used in msgpack
        msgpack.packb(["api@10.0.0.7:1", 1, 2, 3]) + b"\x00",  # trailing bytes
        b"",
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    packet = b"SKYG\x01\x00\x00" + body
    assert dropped(GossipCodec().decode(packet, NOW)) is DropReason.MALFORMED


@given(st.binary(max_size=MAX_PACKET_SIZE + 50))
def test_random_bytes_never_raise(data: bytes) -> None:
    for codec in (GOSSIP_PLAIN, GOSSIP_SEALED):
        result = codec.decode(data, NOW)
        assert isinstance(result, Drop | Heartbeat)
        if isinstance(result, Heartbeat):
            assert codec is GOSSIP_PLAIN  # only an unauthenticated codec can be fooled


@given(st.binary(max_size=200))
def test_random_bodies_after_a_valid_header_never_raise(body: bytes) -> None:
    result = GOSSIP_PLAIN.decode(b"SKYG\x01\x00\x00" + body, NOW)
    assert isinstance(result, Drop | Heartbeat)


GOSSIP_PLAIN = GossipCodec()
GOSSIP_SEALED = GossipCodec(["fuzz"])


@given(heartbeats, st.data())
def test_every_truncation_is_dropped(heartbeat: Heartbeat, data: st.DataObject) -> None:
    for codec in (GossipCodec(), GossipCodec(["s"])):
        packet = codec.encode(heartbeat)
        cut = data.draw(st.integers(0, len(packet) - 1))
        assert isinstance(
            GossipCodec(["s"] if codec.sealed else []).decode(packet[:cut], NOW), Drop
        )


@given(heartbeats, st.data())
def test_any_tampering_with_a_sealed_packet_is_detected(
    heartbeat: Heartbeat, data: st.DataObject
) -> None:
    packet = GossipCodec(["s"], label="lab").encode(heartbeat)
    position = data.draw(st.integers(0, len(packet) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(packet)
    tampered[position] ^= flip
    result = GossipCodec(["s"], label="lab").decode(bytes(tampered), NOW)
    assert isinstance(result, Drop)
    assert result.reason is not DropReason.MALFORMED  # never read past authentication


@given(heartbeats, st.binary(min_size=1, max_size=40))
def test_appending_to_a_sealed_packet_is_detected(heartbeat: Heartbeat, extra: bytes) -> None:
    packet = GossipCodec(["s"]).encode(heartbeat)
    assume(len(packet) + len(extra) <= MAX_PACKET_SIZE)
    assert dropped(GossipCodec(["s"]).decode(packet + extra, NOW)) is DropReason.AUTHENTICATION


def test_packet_size_limit_holds_for_the_longest_names() -> None:
    longest = NodeName("n" * 255, "h" * 63 + ("." + "h" * 63) * 3, 65535)
    heartbeat = Heartbeat(longest, 2**64 - 1, 2**64 - 1, 2**64 - 1)
    for codec in (GossipCodec(label="l" * 64), GossipCodec(["s"], label="l" * 64)):
        packet = codec.encode(heartbeat)
        assert len(packet) <= MAX_PACKET_SIZE
        assert struct.unpack_from(">4sBBB", packet)[0] == MAGIC
