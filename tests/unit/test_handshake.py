"""The handshake state machine, driven in memory: two Handshake objects talk to each
other through a test "wire" that may drop, tamper with or append bytes."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.distribution import frames
from skycluster.distribution.handshake import (
    MAX_HANDSHAKE_FRAME,
    MAX_METADATA,
    NONCE_SIZE,
    PREAMBLE,
    Established,
    Event,
    Handshake,
    HandshakeError,
    Introduction,
    PeerHello,
    Refused,
    RejectReason,
)
from skycluster.names import NodeName

COOKIE = b"s3cret-Cookie-value-42"
OTHER_COOKIE = b"another-cookie-value"

I_NAME = "ini@127.0.0.1:4401"
A_NAME = "acc@127.0.0.1:4402"


def info(name: str, **kw: Any) -> Introduction:
    return Introduction(NodeName.parse(name), kw.pop("creation", 7), **kw)


def initiator(*, cookie: bytes = COOKIE, me: Introduction | None = None, **kw: Any) -> Handshake:
    return Handshake(initiator=True, me=me or info(I_NAME), cookie=cookie, **kw)


def acceptor(*, cookie: bytes = COOKIE, me: Introduction | None = None, **kw: Any) -> Handshake:
    return Handshake(initiator=False, me=me or info(A_NAME), cookie=cookie, **kw)


def seeded(seed: int) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return rng.randbytes


# --- the in-memory wire -----------------------------------------------------------------------

Tamper = Callable[[str, int, bytes], bytes | None]  # (direction, message index, bytes) -> bytes


@dataclass
class Side:
    hs: Handshake
    events: list[Event] = field(default_factory=list)
    error: Exception | None = None
    closed: bool = False

    @property
    def established(self) -> Established | None:
        done = [e for e in self.events if isinstance(e, Established)]
        return done[0] if done else None


@dataclass
class Run:
    ini: Side
    acc: Side
    sent: list[bytes]  # every message that crossed the wire, as received
    errors: list[Exception]

    @property
    def any_established(self) -> bool:
        return self.ini.established is not None or self.acc.established is not None


def drive(
    ini: Handshake,
    acc: Handshake,
    *,
    tamper: Tamper | None = None,
    admit: Callable[[PeerHello], RejectReason | None] = lambda _: None,
) -> Run:
    """Run a handshake to its end. A side that fails sends what it has queued (a
    REJECT) and closes, as the link does; bytes to a closed side are dropped."""
    sides = {"to_acceptor": Side(acc), "to_initiator": Side(ini)}
    run = Run(sides["to_initiator"], sides["to_acceptor"], [], [])
    queue: list[tuple[str, bytes]] = [("to_acceptor", ini.initiate())]
    counts = {"to_acceptor": 0, "to_initiator": 0}
    back = {"to_acceptor": "to_initiator", "to_initiator": "to_acceptor"}
    while queue:
        direction, data = queue.pop(0)
        index = counts[direction]
        counts[direction] += 1
        if tamper is not None:
            changed = tamper(direction, index, data)
            if changed is None:  # dropped
                continue
            data = changed
        run.sent.append(data)
        side = sides[direction]
        if side.closed:
            continue
        out: list[bytes] = []
        try:
            events = side.hs.receive(data)
        except (HandshakeError, frames.FrameError) as exc:
            side.error = exc
            side.closed = True
            run.errors.append(exc)
            events = []
        for event in events:
            side.events.append(event)
            if isinstance(event, PeerHello):
                reason = admit(event)
                if reason is None:
                    out.append(side.hs.admit())
                else:
                    out.append(side.hs.refuse(reason))
                    side.closed = True
            elif isinstance(event, Refused):
                side.closed = True
        out.append(side.hs.outgoing())
        reply = b"".join(out)
        if reply:
            queue.append((back[direction], reply))
    return run


def assert_cookie_hidden(run: Run, *cookies: bytes) -> None:
    for cookie in cookies:
        for data in run.sent:
            assert cookie not in data
        for exc in run.errors:
            assert cookie.decode() not in str(exc)
            assert cookie.decode() not in repr(exc)
            assert str(cookie) not in str(exc)


_DELETE = object()


def _message(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    message = {**base, "nonce": b"\x01" * NONCE_SIZE, "creation": 1, "hidden": False}
    message["metadata"] = {}
    message.update(changes)
    return {k: v for k, v in message.items() if v is not _DELETE}


def hello_frame(**changes: Any) -> dict[str, Any]:
    base = {"t": "hello", "versions": [1], "name": I_NAME, "address": "127.0.0.1:4401"}
    return _message(base, changes)


def challenge_frame(**changes: Any) -> dict[str, Any]:
    base = {"t": "challenge", "version": 1, "name": A_NAME, "address": "127.0.0.1:4402"}
    return _message(base, changes)


def decode_frames(data: bytes) -> list[Any]:
    return [frames.unpack(p) for p in frames.FrameDecoder(1 << 20).feed(data)]


# --- success --------------------------------------------------------------------------------


def test_success_with_metadata_both_ways() -> None:
    me_i = info(I_NAME, creation=11, address="127.0.0.1:4401", metadata={"role": "web", "n": 1})
    me_a = info(
        A_NAME, creation=22, hidden=True, address="127.0.0.1:4402", metadata={"tags": ["a", "b"]}
    )
    ini = initiator(me=me_i, expect=NodeName.parse("acc@127.0.0.1"))
    acc = acceptor(me=me_a)
    run = drive(ini, acc)
    assert run.errors == []
    assert ini.done and acc.done
    assert run.ini.established is not None and run.acc.established is not None
    assert run.ini.established.peer == Introduction(
        NodeName.parse("acc@127.0.0.1"), 22, True, "127.0.0.1:4402", {"tags": ["a", "b"]}
    )
    assert run.acc.established.peer == Introduction(
        NodeName.parse("ini@127.0.0.1"), 11, False, "127.0.0.1:4401", {"role": "web", "n": 1}
    )
    assert run.ini.established.rest == b"" and run.acc.established.rest == b""
    assert ini.peer == run.ini.established.peer
    # the acceptor saw the initiator once, before admitting it
    assert [type(e) for e in run.acc.events] == [PeerHello, Established]
    assert [type(e) for e in run.ini.events] == [Established]
    assert_cookie_hidden(run, COOKIE)


def test_success_in_the_other_direction() -> None:
    run = drive(initiator(me=info(A_NAME)), acceptor(me=info(I_NAME)))
    assert run.errors == []
    assert run.ini.established is not None and run.acc.established is not None
    assert run.ini.established.peer.name.identity == "ini@127.0.0.1"
    assert run.acc.established.peer.name.identity == "acc@127.0.0.1"


def test_messages_on_the_wire() -> None:
    run = drive(initiator(), acceptor())
    hello, challenge, reply, ack = run.sent
    assert hello.startswith(PREAMBLE)
    (h,) = decode_frames(hello[len(PREAMBLE) :])
    assert h["t"] == "hello" and h["versions"] == [1] and h["name"] == "ini@127.0.0.1"
    assert isinstance(h["nonce"], bytes) and len(h["nonce"]) == NONCE_SIZE
    (c,) = decode_frames(challenge)
    assert c["t"] == "challenge" and c["version"] == 1 and c["name"] == "acc@127.0.0.1"
    assert c["nonce"] != h["nonce"]
    (r,) = decode_frames(reply)
    (a,) = decode_frames(ack)
    assert r["t"] == "reply" and a["t"] == "ack"
    assert len(r["proof"]) == len(a["proof"]) == 32
    assert r["proof"] != a["proof"]


def test_nonces_are_fresh_so_proofs_differ_between_runs() -> None:
    first, second = drive(initiator(), acceptor()), drive(initiator(), acceptor())
    assert first.sent[2] != second.sent[2] and first.sent[3] != second.sent[3]


def test_feeding_one_byte_at_a_time() -> None:
    ini, acc = initiator(), acceptor()
    hello = ini.initiate()
    events: list[Event] = []
    for i in range(len(hello)):
        events += acc.receive(hello[i : i + 1])
    assert [type(e) for e in events] == [PeerHello]
    challenge = acc.admit()
    for i in range(len(challenge)):
        assert ini.receive(challenge[i : i + 1]) == []
    reply = ini.outgoing()
    for i in range(len(reply)):
        events += acc.receive(reply[i : i + 1])
    assert isinstance(events[-1], Established)
    ack = acc.outgoing()
    done: list[Event] = []
    for i in range(len(ack)):
        done += ini.receive(ack[i : i + 1])
    assert len(done) == 1 and isinstance(done[0], Established)


def test_versions_negotiate_the_highest_common() -> None:
    ini, acc = initiator(versions=(2, 1)), acceptor(versions=(1, 2, 3))
    run = drive(ini, acc)
    assert run.errors == [] and run.ini.established and run.acc.established
    (c,) = decode_frames(run.sent[1])
    assert c["version"] == 2


metadata_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
node_infos = st.builds(
    Introduction,
    st.sampled_from([I_NAME, A_NAME, "x@[::1]:1", "y@host.example", "z@10.1.2.3"]).map(
        NodeName.parse
    ),
    st.integers(0, 2**63 - 1),
    st.booleans(),
    st.none() | st.sampled_from(["127.0.0.1:4401", "[::1]:9"]),
    st.dictionaries(st.text(max_size=8), metadata_values, max_size=4),
)


@settings(max_examples=50)
@given(node_infos, node_infos)
def test_each_side_learns_exactly_what_the_other_said(
    me_i: Introduction, me_a: Introduction
) -> None:
    run = drive(initiator(me=me_i), acceptor(me=me_a))
    assert run.errors == []
    assert run.ini.established is not None and run.acc.established is not None
    assert run.ini.established.peer == Introduction(
        me_a.name.with_port(None), me_a.creation, me_a.hidden, me_a.address, me_a.metadata
    )
    assert run.acc.established.peer == Introduction(
        me_i.name.with_port(None), me_i.creation, me_i.hidden, me_i.address, me_i.metadata
    )


def test_expect_ignores_the_port_hint() -> None:
    run = drive(initiator(expect=NodeName.parse("acc@127.0.0.1:9999")), acceptor())
    assert run.errors == [] and run.ini.established is not None


# --- authentication -------------------------------------------------------------------------


def test_wrong_cookie_fails_on_both_sides() -> None:
    run = drive(initiator(cookie=COOKIE), acceptor(cookie=OTHER_COOKIE))
    assert not run.any_established
    assert isinstance(run.acc.error, HandshakeError)
    assert "could not prove the cookie" in str(run.acc.error)
    # the acceptor tells the initiator why before closing
    assert run.ini.events == [Refused("auth")]
    assert decode_frames(run.sent[-1]) == [{"t": "reject", "reason": "auth"}]
    assert_cookie_hidden(run, COOKIE, OTHER_COOKIE)


def test_wrong_cookie_fails_on_the_initiator_even_if_the_reject_is_lost() -> None:
    def drop_reject(direction: str, index: int, data: bytes) -> bytes | None:
        return None if direction == "to_initiator" and index == 1 else data

    run = drive(initiator(), acceptor(cookie=OTHER_COOKIE), tamper=drop_reject)
    assert not run.any_established
    assert isinstance(run.acc.error, HandshakeError)
    assert not run.ini.hs.done


@pytest.mark.parametrize("proof", [b"\x00" * 32, b"", "text", None, 5])
def test_initiator_rejects_an_ack_that_does_not_prove_the_cookie(proof: object) -> None:
    ini = initiator()
    acc = acceptor()
    acc.receive(ini.initiate())
    ini.receive(acc.admit())
    assert ini.outgoing()
    with pytest.raises(HandshakeError, match="could not prove the cookie") as info_:
        ini.receive(frames.encode({"t": "ack", "proof": proof}))
    assert not ini.done
    assert COOKIE.decode() not in str(info_.value)


def test_acceptor_with_a_different_cookie_cannot_fool_the_initiator() -> None:
    # An acceptor that accepts any REPLY (an impostor) still cannot make a valid ACK.
    ini = initiator()
    impostor = acceptor(cookie=OTHER_COOKIE)
    impostor.receive(ini.initiate())
    ini.receive(impostor.admit())
    forged = impostor._proof(b"skycluster/1 acceptor proof")
    with pytest.raises(HandshakeError, match="could not prove the cookie"):
        ini.receive(frames.encode({"t": "ack", "proof": forged}))


def test_reflected_acceptor_proof_fails_where_a_replay_of_the_same_transcript_succeeds() -> None:
    # Deterministic nonces let an attacker recreate one transcript exactly: the replayed
    # initiator proof is then valid (this shows the transcript is identical), but the
    # acceptor's own proof sent back as the initiator's is not.
    honest = drive(initiator(random=seeded(1)), acceptor(random=seeded(2)))
    hello, _, reply, ack = honest.sent
    acceptor_proof = decode_frames(ack)[0]["proof"]

    replay = acceptor(random=seeded(2))
    assert isinstance(replay.receive(hello)[0], PeerHello)
    replay.admit()
    assert isinstance(replay.receive(reply)[0], Established)

    reflect = acceptor(random=seeded(2))
    reflect.receive(hello)
    reflect.admit()
    with pytest.raises(HandshakeError, match="could not prove the cookie"):
        reflect.receive(frames.encode({"t": "reply", "proof": acceptor_proof}))
    assert decode_frames(reflect.outgoing()) == [{"t": "reject", "reason": "auth"}]


def test_replayed_reply_fails_against_a_fresh_nonce() -> None:
    honest = drive(initiator(), acceptor())
    hello, _, reply, _ = honest.sent
    fresh = acceptor()
    fresh.receive(hello)
    fresh.admit()
    with pytest.raises(HandshakeError, match="could not prove the cookie"):
        fresh.receive(reply)


def _flip(target: str, position: int, mask: int) -> Tamper:
    def tamper(direction: str, index: int, data: bytes) -> bytes:
        if direction == target and index == 0 and position < len(data):
            data = data[:position] + bytes([data[position] ^ mask]) + data[position + 1 :]
        return data

    return tamper


def _message_length(direction: str) -> int:
    run = drive(initiator(random=seeded(3)), acceptor(random=seeded(4)))
    return len(run.sent[0 if direction == "to_acceptor" else 1])


@pytest.mark.parametrize("mask", [0x01, 0x80, 0xFF])
@pytest.mark.parametrize("direction", ["to_acceptor", "to_initiator"], ids=["HELLO", "CHALLENGE"])
def test_tampering_any_byte_of_hello_or_challenge_fails(direction: str, mask: int) -> None:
    length = _message_length(direction)
    header_end = (len(PREAMBLE) if direction == "to_acceptor" else 0) + frames.HEADER_SIZE
    for position in range(length):
        run = drive(
            initiator(random=seeded(3), expect=NodeName.parse(A_NAME)),
            acceptor(random=seeded(4)),
            tamper=_flip(direction, position, mask),
        )
        assert not run.any_established, f"byte {position} changed with {mask:#x} went unnoticed"
        if position >= header_end:
            # a changed length may leave a side waiting (a timeout in real life); any
            # other change is detected at once
            assert run.errors, f"byte {position} changed with {mask:#x}: no error"
        assert_cookie_hidden(run, COOKIE)


def test_tampering_the_reply_fails() -> None:
    length = len(drive(initiator(), acceptor()).sent[2])
    for position in range(frames.HEADER_SIZE, length):

        def tamper(direction: str, index: int, data: bytes, position: int = position) -> bytes:
            if direction == "to_acceptor" and index == 1:
                data = data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]
            return data

        run = drive(initiator(), acceptor(), tamper=tamper)
        assert not run.any_established
        assert run.errors


# --- versions, preamble, stray protocols ----------------------------------------------------


@pytest.mark.parametrize("versions", [(0,), (2,), (2, 3)])
def test_unknown_versions_get_reject_version(versions: tuple[int, ...]) -> None:
    run = drive(initiator(versions=versions), acceptor())
    assert not run.any_established
    assert isinstance(run.acc.error, HandshakeError)
    assert "no protocol version in common" in str(run.acc.error)
    assert decode_frames(run.sent[-1]) == [{"t": "reject", "reason": "version"}]
    assert run.ini.events == [Refused("version")]


def test_a_future_hello_with_other_fields_still_gets_reject_version() -> None:
    acc = acceptor()
    with pytest.raises(HandshakeError, match="no protocol version in common"):
        acc.receive(PREAMBLE + frames.encode({"t": "hello", "versions": [2], "key": b"x"}))
    assert decode_frames(acc.outgoing()) == [{"t": "reject", "reason": "version"}]


def test_initiator_rejects_a_challenge_with_a_version_it_did_not_offer() -> None:
    ini = initiator()
    ini.initiate()
    with pytest.raises(HandshakeError, match="unsupported version 2"):
        ini.receive(frames.encode(challenge_frame(version=2)))


@pytest.mark.parametrize("reason", list(RejectReason))
def test_refusal_reaches_the_initiator(reason: RejectReason) -> None:
    run = drive(initiator(), acceptor(), admit=lambda _: reason)
    assert not run.any_established
    assert run.ini.events == [Refused(reason.value)]
    assert run.acc.hs.done and run.ini.hs.done


@pytest.mark.parametrize(
    "data", [b"XXXX", b"SKYD" + frames.encode({}), b"\x00\x00\x00\x10", b"skyc"]
)
def test_bad_preamble(data: bytes) -> None:
    with pytest.raises(HandshakeError, match=r"not a skycluster peer \(bad preamble\)"):
        acceptor().receive(data)


def test_preamble_in_pieces() -> None:
    hello = initiator().initiate()
    acc = acceptor()
    assert acc.receive(hello[:1]) == []
    assert acc.receive(hello[1:3]) == []
    assert isinstance(acc.receive(hello[3:])[0], PeerHello)
    bad = acceptor()
    assert bad.receive(b"SK") == []
    with pytest.raises(HandshakeError, match="bad preamble"):
        bad.receive(b"ZZ")


@pytest.mark.parametrize(
    "request_",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"HEAD / HTTP/1.0\r\n",
        b"PUT /x HTTP/1.1\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ],
)
def test_http_request_is_named_as_such(request_: bytes) -> None:
    with pytest.raises(HandshakeError, match="an HTTP request arrived on the distribution port"):
        acceptor().receive(request_)
    acc = acceptor()
    assert acc.receive(request_[:2]) == []
    with pytest.raises(HandshakeError, match="HTTP request"):
        acc.receive(request_[2:])


def test_oversized_handshake_frame_fails_on_its_header() -> None:
    acc = acceptor()
    with pytest.raises(HandshakeError, match="exceeds the limit") as info_:
        acc.receive(PREAMBLE + struct.pack(">I", MAX_HANDSHAKE_FRAME + 1))
    assert str(info_.value).startswith("handshake frame of")
    ini = initiator()
    ini.initiate()
    with pytest.raises(HandshakeError, match="exceeds the limit"):
        ini.receive(struct.pack(">I", 2**32 - 1))


def test_frame_at_the_handshake_limit_is_read_then_judged() -> None:
    def hello_of(pad: int) -> bytes:
        return bytes(msgpack.packb(hello_frame(pad=b"x" * pad), use_bin_type=True))

    size = MAX_HANDSHAKE_FRAME - len(hello_of(0))
    payload = hello_of(size - (len(hello_of(size)) - MAX_HANDSHAKE_FRAME))
    assert len(payload) == MAX_HANDSHAKE_FRAME
    events = acceptor().receive(PREAMBLE + frames.encode_payload(payload))
    assert isinstance(events[0], PeerHello)  # unknown fields are ignored


# --- missing and invalid fields ---------------------------------------------------------------

BAD_HELLOS: list[tuple[str, Any, str]] = [
    ("no name", hello_frame(name=_DELETE), "without a node name"),
    ("name not text", hello_frame(name=5), "without a node name"),
    ("bad name", hello_frame(name="no-at-sign"), "is not a valid node name"),
    ("long bad name", hello_frame(name="x" * 5000), "is not a valid node name"),
    ("no creation", hello_frame(creation=_DELETE), "incarnation"),
    ("creation bool", hello_frame(creation=True), "incarnation"),
    ("creation text", hello_frame(creation="1"), "incarnation"),
    ("no nonce", hello_frame(nonce=_DELETE), "32-byte nonce"),
    ("short nonce", hello_frame(nonce=b"\x00" * 31), "32-byte nonce"),
    ("long nonce", hello_frame(nonce=b"\x00" * 33), "32-byte nonce"),
    ("text nonce", hello_frame(nonce="x" * 32), "32-byte nonce"),
    ("hidden text", hello_frame(hidden="yes"), "'hidden' flag is not a boolean"),
    ("hidden int", hello_frame(hidden=1), "'hidden' flag is not a boolean"),
    ("address int", hello_frame(address=5), "address is not a host:port string"),
    ("address long", hello_frame(address="x" * 301), "address is not a host:port string"),
    ("metadata list", hello_frame(metadata=[1]), "metadata is not a map"),
    ("metadata big", hello_frame(metadata={"k": "x" * MAX_METADATA}), "metadata is not a map"),
    ("no versions", hello_frame(versions=_DELETE), "without a version list"),
    ("versions int", hello_frame(versions=1), "without a version list"),
    ("no type", hello_frame(t=_DELETE), "unexpected None message"),
    ("wrong type", hello_frame(t="challenge"), "unexpected 'challenge' message"),
    ("reply first", {"t": "reply", "proof": b"\x00" * 32}, "unexpected 'reply' message"),
    ("not a map", [1, 2], "not a map"),
    ("nil", None, "not a map"),
]


@pytest.mark.parametrize(("label", "message", "why"), BAD_HELLOS, ids=[b[0] for b in BAD_HELLOS])
def test_acceptor_rejects_bad_hello(label: str, message: Any, why: str) -> None:
    acc = acceptor()
    with pytest.raises(HandshakeError) as info_:
        acc.receive(PREAMBLE + frames.encode(message))
    assert why in str(info_.value)
    assert len(str(info_.value)) < 1000
    assert acc.outgoing() == b""  # nothing but a version mismatch is answered


def test_acceptor_rejects_empty_and_undecodable_payloads() -> None:
    with pytest.raises(HandshakeError, match="not a map"):
        acceptor().receive(PREAMBLE + frames.encode_payload(b""))
    with pytest.raises(frames.FrameError):
        acceptor().receive(PREAMBLE + frames.encode_payload(b"\xc1"))
    with pytest.raises(frames.FrameError):
        acceptor().receive(PREAMBLE + frames.encode_payload(b"\x81\x80\x00"))


def test_metadata_at_the_limit_is_accepted() -> None:
    small = {"k": "x" * (MAX_METADATA - 20)}
    assert len(frames.encode(small)) <= MAX_METADATA
    events = acceptor().receive(PREAMBLE + frames.encode(hello_frame(metadata=small)))
    assert isinstance(events[0], PeerHello)
    assert events[0].peer.metadata == small


BAD_CHALLENGES: list[tuple[str, Any, str]] = [
    ("no name", challenge_frame(name=_DELETE), "without a node name"),
    ("short nonce", challenge_frame(nonce=b"1"), "32-byte nonce"),
    ("no version", challenge_frame(version=_DELETE), "unsupported version None"),
    ("ack first", {"t": "ack", "proof": b"\x00" * 32}, "unexpected 'ack' message"),
    ("hello back", hello_frame(), "unexpected 'hello' message"),
    ("metadata list", challenge_frame(metadata=[]), "metadata is not a map"),
]


@pytest.mark.parametrize(
    ("label", "message", "why"), BAD_CHALLENGES, ids=[b[0] for b in BAD_CHALLENGES]
)
def test_initiator_rejects_bad_challenge(label: str, message: Any, why: str) -> None:
    ini = initiator()
    ini.initiate()
    with pytest.raises(HandshakeError) as info_:
        ini.receive(frames.encode(message))
    assert why in str(info_.value)
    assert ini.outgoing() == b""


def test_expect_mismatch_names_both_nodes() -> None:
    run = drive(
        initiator(expect=NodeName.parse("b@127.0.0.1:4402")),
        acceptor(me=info("c@127.0.0.1:4402")),
    )
    assert not run.any_established
    assert isinstance(run.ini.error, HandshakeError)
    assert str(run.ini.error) == "reached c@127.0.0.1 but expected b@127.0.0.1"
    assert len(run.sent) == 2  # the initiator answered nothing


def test_peer_that_sends_before_being_admitted_fails() -> None:
    acc = acceptor()
    hello = initiator().initiate()
    with pytest.raises(HandshakeError, match="before it was admitted"):
        acc.receive(hello + frames.encode({"t": "reply", "proof": b"\x00" * 32}))


def test_bytes_are_refused_before_initiate_and_after_the_end() -> None:
    with pytest.raises(HandshakeError, match="state start"):
        initiator().receive(b"x")
    run = drive(initiator(), acceptor())
    with pytest.raises(HandshakeError, match="state done"):
        run.ini.hs.receive(b"x")
    with pytest.raises(HandshakeError, match="state done"):
        run.acc.hs.receive(b"x")


def test_api_misuse_raises_runtime_error() -> None:
    ini = initiator()
    ini.initiate()
    with pytest.raises(RuntimeError):
        ini.initiate()
    with pytest.raises(RuntimeError):
        acceptor().admit()


# --- bytes after the handshake ----------------------------------------------------------------

LINK_BYTES = frames.encode([1, 0]) + frames.encode([3, ["x@127.0.0.1:1"]]) + b"\x00\x00\x00\x09ab"


def _up_to_ack() -> tuple[Handshake, bytes]:
    """An initiator waiting for the ACK, and the ACK."""
    ini, acc = initiator(), acceptor()
    acc.receive(ini.initiate())
    ini.receive(acc.admit())
    acc.receive(ini.outgoing())
    return ini, acc.outgoing()


def test_bytes_after_the_ack_are_handed_over_at_every_split() -> None:
    for cut in range(len(LINK_BYTES) + 1):
        ini, ack = _up_to_ack()
        (established,) = ini.receive(ack + LINK_BYTES[:cut])
        assert isinstance(established, Established)
        assert established.rest == LINK_BYTES[:cut]


def test_rest_when_the_ack_arrives_split_with_the_link_bytes() -> None:
    for cut in range(1, len(_up_to_ack()[1])):
        ini, ack = _up_to_ack()
        assert ini.receive(ack[:cut]) == []
        (established,) = ini.receive(ack[cut:] + LINK_BYTES)
        assert isinstance(established, Established)
        assert established.rest == LINK_BYTES


def test_bytes_after_the_reply_are_handed_over_to_the_acceptor() -> None:
    for cut in range(len(LINK_BYTES) + 1):
        ini, acc = initiator(), acceptor()
        acc.receive(ini.initiate())
        ini.receive(acc.admit())
        (established,) = acc.receive(ini.outgoing() + LINK_BYTES[:cut])
        assert isinstance(established, Established)
        assert established.rest == LINK_BYTES[:cut]
        (up,) = ini.receive(acc.outgoing())  # the ACK is still sent
        assert isinstance(up, Established)


# --- secrecy --------------------------------------------------------------------------------


def test_cookie_never_on_the_wire_nor_in_errors_across_scenarios() -> None:
    scenarios = [
        drive(initiator(), acceptor()),
        drive(initiator(), acceptor(cookie=OTHER_COOKIE)),
        drive(initiator(cookie=OTHER_COOKIE), acceptor()),
        drive(initiator(versions=(9,)), acceptor()),
        drive(initiator(expect=NodeName.parse("z@127.0.0.1")), acceptor()),
        drive(initiator(), acceptor(), tamper=_flip("to_acceptor", 40, 1)),
        drive(initiator(), acceptor(), tamper=_flip("to_initiator", 40, 1)),
    ]
    for run in scenarios:
        assert_cookie_hidden(run, COOKIE, OTHER_COOKIE)
        assert all(COOKIE.hex() not in d.hex() for d in run.sent)
    assert sum(len(run.errors) for run in scenarios) >= 5


# --- fuzzing --------------------------------------------------------------------------------


def _feed_acceptor(data: bytes, cuts: list[int]) -> None:
    acc = acceptor()
    try:
        for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
            for event in acc.receive(data[start:end]):
                if isinstance(event, PeerHello):
                    acc.admit()
            if acc.done:
                return
    except (HandshakeError, frames.FrameError):
        pass


@given(st.binary(max_size=200), st.data())
def test_random_bytes_to_an_acceptor(data: bytes, draw: st.DataObject) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=5)))
    _feed_acceptor(data, cuts)


@given(st.binary(max_size=200), st.data())
def test_random_bytes_after_the_preamble(data: bytes, draw: st.DataObject) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=5)))
    _feed_acceptor(PREAMBLE + data, [c + len(PREAMBLE) for c in cuts])


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=10,
)
hello_values = {
    "t": st.sampled_from(["hello", "reply", "challenge", "ack", "reject"]) | msgpack_values,
    "versions": st.lists(st.integers(-1, 3) | msgpack_values, max_size=3) | msgpack_values,
    "name": st.sampled_from([I_NAME, "a@[::1]:1", "bad"]) | msgpack_values,
    "creation": msgpack_values,
    "nonce": st.binary(min_size=32, max_size=32) | msgpack_values,
    "hidden": msgpack_values,
    "address": msgpack_values,
    "metadata": msgpack_values,
    "proof": st.binary(min_size=32, max_size=32) | msgpack_values,
}
handshake_maps = st.fixed_dictionaries({}, optional=hello_values)


@settings(max_examples=300)
@given(st.lists(handshake_maps, min_size=1, max_size=3))
def test_random_handshake_maps_to_an_acceptor(messages: list[dict[str, Any]]) -> None:
    data = PREAMBLE + b"".join(frames.encode(m) for m in messages)
    _feed_acceptor(data, [])


@settings(max_examples=300)
@given(st.lists(handshake_maps, min_size=1, max_size=3))
def test_random_handshake_maps_to_an_initiator(messages: list[dict[str, Any]]) -> None:
    ini = initiator()
    ini.initiate()
    try:
        for message in messages:
            ini.receive(frames.encode(message))
            if ini.done:
                return
    except (HandshakeError, frames.FrameError):
        pass
