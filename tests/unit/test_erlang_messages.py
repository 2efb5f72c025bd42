"""Distribution messages after the handshake (framing, ticks, control messages) and
Erlang's tick rules, without I/O. Against a real erl: test_erlang_link_with_erl.py."""

from __future__ import annotations

import struct

import pytest
from erlang_strategies import canon, pids, terms
from hypothesis import given, settings
from hypothesis import strategies as st

from skycluster.erlang import Atom, Pid, TermError
from skycluster.erlang import terms as codec
from skycluster.erlang.messages import (
    TICK,
    Control,
    DistMessage,
    FrameReader,
    MessageError,
    decode,
    encode,
    reg_send,
    send,
)
from skycluster.erlang.ticks import TickPolicy, Verdict

ME = Pid(Atom("py@127.0.0.1"), 1, 0, 1234)


@given(pids, st.text(max_size=20).map(Atom), terms)
@settings(max_examples=100)
def test_reg_send_round_trip(sender: Pid, name: Atom, message: object) -> None:
    frame = encode(reg_send(sender, name, message))
    (got,) = FrameReader(1 << 20).feed(frame)
    assert got.kind is Control.REG_SEND and got.control == (6, sender, Atom(""), name)
    assert canon(got.payload) == canon(message)


def test_layout_is_pass_through() -> None:
    frame = encode(send(ME, Atom("hi")))
    body = frame[4:]
    assert struct.unpack(">I", frame[:4])[0] == len(body) and body[0] == 112
    assert body[1:] == codec.encode((2, Atom(""), ME)) + codec.encode(Atom("hi"))


def test_messages_without_payload() -> None:
    link = DistMessage((int(Control.LINK), ME, ME))
    (got,) = FrameReader(1 << 20).feed(encode(link))
    assert got == link and not got.has_payload and got.kind is Control.LINK
    assert DistMessage((99, 1)).kind == 99
    with pytest.raises(ValueError, match="payload"):
        encode(DistMessage((int(Control.LINK), ME, ME), 1))
    with pytest.raises(ValueError, match="payload"):
        encode(DistMessage((int(Control.SEND), Atom(""), ME)))


def test_ticks_are_counted_and_frames_split_anywhere() -> None:
    stream = TICK + encode(send(ME, 1)) + TICK + encode(reg_send(ME, Atom("x"), [1, 2])) + TICK
    for cut in range(len(stream) + 1):
        reader = FrameReader(1 << 20)
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert [m.payload for m in got] == [1, [1, 2]] and reader.ticks == 3
        assert reader.buffered == 0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (b"", "empty"),
        (bytes([68, 0]), "atom cache header"),
        (bytes([69, 0]), "fragments"),
        (bytes([131, 97, 1]), "starts with byte 131"),
        (bytes([112]) + codec.encode(Atom("x")), "not a tuple"),
        (bytes([112]) + codec.encode((2, Atom(""), ME)), "without its payload"),
        (bytes([112]) + codec.encode((1, ME, ME)) + b"\x83a\x01", "carries bytes"),
        (bytes([112]) + codec.encode((2, Atom(""), ME)) + codec.encode(1) + b"x", "bytes follow"),
    ],
)
def test_bad_messages(frame: bytes, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        decode(frame)


def test_bad_terms_inside_messages_are_term_errors() -> None:
    with pytest.raises(TermError):
        decode(bytes([112, 131, 104, 2, 97]))
    with pytest.raises(MessageError, match="limit is 100"):
        FrameReader(100).feed(struct.pack(">I", 101))


def test_ticks_follow_erlangs_rules() -> None:
    policy = TickPolicy(ticktime=60.0, now=0.0)
    assert policy.interval == 15.0 and policy.next_check == 15.0
    assert policy.check(10.0) is Verdict.WAIT  # not yet time
    policy.received()
    assert policy.check(15.0) is Verdict.SEND_TICK  # nothing sent for a period
    policy.sent()
    policy.received()
    assert policy.check(30.0) is Verdict.WAIT
    # Silence from the peer: down on the fourth silent check, ticking meanwhile.
    assert [policy.check(t) for t in (45.0, 60.0, 75.0)] == [Verdict.SEND_TICK] * 3
    assert policy.check(90.0) is Verdict.DOWN


def test_a_peer_that_answers_now_and_then_stays_up() -> None:
    policy = TickPolicy(ticktime=4.0, now=0.0)
    verdicts = []
    for step in range(1, 40):
        if step % 3 == 0:  # a tick from the peer every 3 s: within 4 checks of 1 s
            policy.received()
        verdicts.append(policy.check(float(step)))
    assert Verdict.DOWN not in verdicts


def test_ticktime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="net_ticktime"):
        TickPolicy(ticktime=0, now=0.0)
