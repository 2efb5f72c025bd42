"""The Erlang distribution handshake core, both roles against each other and against
hand-made messages. Against real erl nodes: tests/integration/test_erlang_handshake_with_erl.py."""

from __future__ import annotations

import hashlib
import struct

import pytest

from skycluster.erlang import flags as dflags
from skycluster.erlang.flags import Flag
from skycluster.erlang.handshake import (
    ErlangHandshake,
    Established,
    HandshakeError,
    NameReceived,
    Refused,
    Status,
    check_node_name,
    digest,
)

COOKIE = b"secret"


def pair(
    cookie_a: bytes = COOKIE, cookie_b: bytes = COOKIE, **kwargs: object
) -> tuple[ErlangHandshake, ErlangHandshake]:
    a = ErlangHandshake(initiator=True, name="a@host", creation=7, cookie=cookie_a, **kwargs)  # type: ignore[arg-type]
    b = ErlangHandshake(initiator=False, name="b@host", creation=9, cookie=cookie_b)
    return a, b


def run(
    a: ErlangHandshake, b: ErlangHandshake, status: Status = Status.OK
) -> tuple[Established, Established]:
    (named,) = b.receive(a.initiate())
    assert isinstance(named, NameReceived) and named.peer == b.peer
    assert a.receive(b.accept(status)) == []
    if status is Status.ALIVE:  # a answers 'strue', b sends its challenge
        assert b.receive(a.outgoing()) == []
        assert a.receive(b.outgoing()) == []
    (done_b,) = b.receive(a.outgoing())
    (done_a,) = a.receive(b.outgoing())
    assert isinstance(done_a, Established) and isinstance(done_b, Established)
    return done_a, done_b


def test_both_roles_agree() -> None:
    a, b = pair(expect="b@host")
    done_a, done_b = run(a, b)
    assert (done_a.peer.name, done_a.peer.creation) == ("b@host", 9)
    assert (done_b.peer.name, done_b.peer.creation) == ("a@host", 7)
    assert done_a.flags == done_b.flags
    assert done_a.flags & dflags.REQUIRED == dflags.REQUIRED
    assert done_a.flags & Flag.PUBLISHED and a.done and b.done


@pytest.mark.parametrize("status", [Status.OK_SIMULTANEOUS, Status.ALIVE])
def test_other_accepting_statuses(status: Status) -> None:
    run(*pair(), status=status)


def test_alive_declined_by_the_initiator() -> None:
    a, b = pair()
    b.receive(a.initiate())
    b.accept(Status.ALIVE)
    with pytest.raises(HandshakeError, match="keep its existing connection"):
        b.receive(struct.pack(">H", 6) + b"sfalse")


@pytest.mark.parametrize("status", [Status.NOK, Status.NOT_ALLOWED])
def test_refusals_reach_the_initiator(status: Status) -> None:
    a, b = pair()
    b.receive(a.initiate())
    assert a.receive(b.refuse(status)) == [Refused(status.value)]
    assert a.done and b.done


def test_a_wrong_cookie_is_caught_by_the_acceptor() -> None:
    a, b = pair(cookie_a=b"other")
    b.receive(a.initiate())
    a.receive(b.accept())
    with pytest.raises(HandshakeError, match="different cookies"):
        b.receive(a.outgoing())
    assert b.outgoing() == b""  # nothing is sent: the connection closes


def test_a_wrong_cookie_is_caught_by_the_initiator() -> None:
    """An acceptor that accepts any digest still cannot fake its own."""
    a, b = pair(cookie_b=b"other")
    b.receive(a.initiate())
    a.receive(b.accept())
    reply = a.outgoing()
    challenge = struct.unpack_from(">I", reply, 3)[0]
    forged = struct.pack(">Hc16s", 17, b"a", digest(b"other", challenge))
    with pytest.raises(HandshakeError, match="acknowledgement digest is wrong"):
        a.receive(forged)


def test_digest_is_md5_of_the_cookie_and_the_decimal_challenge() -> None:
    assert digest(b"cookie", 4294967295) == hashlib.md5(b"cookie4294967295").digest()


def test_the_initiator_checks_who_answered() -> None:
    a, b = pair(expect="c@host")
    b.receive(a.initiate())
    with pytest.raises(HandshakeError, match="dialled 'c@host' but 'b@host' answered"):
        a.receive(b.accept())


def test_an_old_name_message_is_refused_with_the_version() -> None:
    b = ErlangHandshake(initiator=False, name="b@host", creation=1, cookie=COOKIE)
    old = struct.pack(">cHI", b"n", 5, 0x3FFFF) + b"old@host"
    with pytest.raises(HandshakeError, match=r"'old@host' sent an old name message.*version 5"):
        b.receive(struct.pack(">H", len(old)) + old)


def test_an_old_challenge_is_refused() -> None:
    a = ErlangHandshake(initiator=True, name="a@host", creation=1, cookie=COOKIE)
    a.initiate()
    a.receive(struct.pack(">H", 3) + b"sok")
    old = struct.pack(">cHII", b"n", 5, 0x3FFFF, 1) + b"b@host"
    with pytest.raises(HandshakeError, match="old challenge"):
        a.receive(struct.pack(">H", len(old)) + old)


@pytest.mark.parametrize(
    ("peer_flags", "message"),
    [
        (int(dflags.MANDATORY_25 & ~Flag.HANDSHAKE_23), "older than 23"),
        (int(dflags.MANDATORY_25), "lacks UNLINK_ID, V4_NC"),
        (int(Flag.MANDATORY_25_DIGEST), "lacks UNLINK_ID, V4_NC"),
    ],
)
def test_missing_capabilities_are_refused(peer_flags: int, message: str) -> None:
    a = ErlangHandshake(initiator=True, name="a@host", creation=1, cookie=COOKIE, flags=peer_flags)
    b = ErlangHandshake(initiator=False, name="b@host", creation=1, cookie=COOKIE)
    with pytest.raises(HandshakeError, match=message):
        b.receive(a.initiate())
    assert b.outgoing() == struct.pack(">H", 12) + b"snot_allowed"


def test_mandatory_25_digest_stands_for_the_25_flags() -> None:
    flags = int(Flag.MANDATORY_25_DIGEST | dflags.MANDATORY_26)
    assert dflags.missing(flags) == []
    a = ErlangHandshake(initiator=True, name="a@host", creation=1, cookie=COOKIE, flags=flags)
    b = ErlangHandshake(initiator=False, name="b@host", creation=1, cookie=COOKIE)
    run(a, b)


def test_flags_read_as_names() -> None:
    assert dflags.describe(int(Flag.PUBLISHED | Flag.V4_NC)) == "PUBLISHED|V4_NC"
    assert dflags.describe(1 << 60) == hex(1 << 60)


def test_name_me_is_refused() -> None:
    flags = int(dflags.BASE | Flag.NAME_ME)
    a = ErlangHandshake(initiator=True, name="a@host", creation=1, cookie=COOKIE, flags=flags)
    b = ErlangHandshake(initiator=False, name="b@host", creation=1, cookie=COOKIE)
    with pytest.raises(HandshakeError, match="NAME_ME"):
        b.receive(a.initiate())


def name_message(size: int, name: bytes) -> bytes:
    body = struct.pack(">cQIH", b"N", int(dflags.BASE), 1, size) + name
    return struct.pack(">H", len(body)) + body


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x00\x00", "message of 0 bytes"),
        (b"\xff\xff", "message of 65535 bytes"),
        (b"\x00\x03GET", "not an Erlang send_name"),
        (name_message(9, b"ab"), "9 bytes announced"),
        (name_message(0, b""), "not a node name"),
        (name_message(2, b"\xff\xfe"), "not UTF-8"),
    ],
)
def test_bad_name_messages(raw: bytes, message: str) -> None:
    b = ErlangHandshake(initiator=False, name="b@host", creation=1, cookie=COOKIE)
    with pytest.raises(HandshakeError, match=message):
        b.receive(raw)


def test_every_split_point_and_the_bytes_after_the_handshake() -> None:
    a, b = pair()
    hello = a.initiate()
    for cut in range(len(hello) + 1):
        b = ErlangHandshake(
            initiator=False,
            name="b@host",
            creation=9,
            cookie=COOKIE,
            random=lambda n: b"\x00\x00\x30\x39",
        )
        events = b.receive(hello[:cut]) + b.receive(hello[cut:])
        assert len(events) == 1 and isinstance(events[0], NameReceived)
    answer = b.accept()
    for byte in answer:
        a.receive(bytes([byte]))
    b.receive(a.outgoing())
    tick = b"\x00\x00\x00\x00"
    (done,) = a.receive(b.outgoing() + tick)
    assert isinstance(done, Established) and done.rest == tick


def test_misuse_is_a_programming_error() -> None:
    a, b = pair()
    with pytest.raises(RuntimeError):
        b.accept()
    b.receive(a.initiate())
    with pytest.raises(ValueError):
        b.accept(Status.NOK)
    with pytest.raises(ValueError):
        b.refuse(Status.OK)
    with pytest.raises(HandshakeError, match="waiting for a decision"):
        b.receive(b"\x00")
    with pytest.raises(RuntimeError):
        a.initiate()


@pytest.mark.parametrize("name", ["nohost", "@host", "name@", "a@b@c", "x" * 250 + "@hosts"])
def test_node_names(name: str) -> None:
    with pytest.raises(ValueError):
        check_node_name(name)
    assert check_node_name("py@127.0.0.1") == "py@127.0.0.1"
