"""The pure parts of messaging: frame building, fragments, the codec, inboxes."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skycluster.distribution import frames
from skycluster.errors import UnencodableMessage
from skycluster.messaging import codec, wire
from skycluster.messaging.inbox import Inbox

messages = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text() | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)


@given(st.lists(messages, min_size=1, max_size=20), st.sampled_from([wire.SEND, wire.PUBLISH]))
def test_batch_frames_decode_to_their_messages(batch: list[Any], kind: int) -> None:
    payload = wire.batch_payload(kind, codec.encode_key("box"), [codec.encode(m) for m in batch])
    assert frames.frame_kind(payload) == kind
    assert codec.Decoder().decode(payload) == [kind, "box", batch]


def test_call_reply_and_fragment_frames() -> None:
    call = wire.call_payload(codec.encode_key("box"), codec.encode_key(7), codec.encode([1]))
    assert msgpack.unpackb(call) == [wire.CALL, "box", 7, [1]]
    reply = wire.reply_payload(codec.encode_key(7) + codec.encode_key(0), codec.encode("ok"))
    assert msgpack.unpackb(reply) == [wire.REPLY, 7, 0, "ok"]
    for size in (0, 255, 256, 65535, 65536, 70000):
        chunk = memoryview(b"c" * size)
        assert msgpack.unpackb(wire.fragment_payload(chunk, size % 2 == 0)) == [
            wire.FRAGMENT,
            size % 2 == 0,
            b"c" * size,
        ]
    assert frames.frame_kind(b"\x92\x01\x05") == 1  # PING
    assert frames.frame_kind(b"\x05") == 0 and frames.frame_kind(b"") == 0


def test_the_heads_the_senders_write_make_whole_frames() -> None:
    """What a channel writes: a CALL's or REPLY's head then the encoded message, a
    batch as pieces (one message alone makes a frame of its own too)."""
    call = wire.call_head(codec.encode_key("box"), codec.encode_key(7)) + codec.encode([1])
    assert msgpack.unpackb(call) == [wire.CALL, "box", 7, [1]]
    reply = wire.reply_head(codec.encode_key(7) + codec.encode_key(wire.NO_MAILBOX))
    assert msgpack.unpackb(reply + codec.encode("box")) == [wire.REPLY, 7, 1, "box"]
    for kind in (wire.SEND, wire.PUBLISH):
        for count in (1, 15, 16, 70000):
            messages = [codec.encode(n) for n in range(count)]
            parts = wire.batch_parts(kind, codec.encode_key("t"), messages)
            assert parts[3:] == messages
            assert msgpack.unpackb(b"".join(parts)) == [kind, "t", list(range(count))]
            assert b"".join(parts) == wire.batch_payload(kind, codec.encode_key("t"), messages)


def test_reassembler_joins_and_drops_oversized_frames() -> None:
    parts = wire.Reassembler(limit=10_000)
    assert parts.feed(True, b"a" * 4000) is None
    assert parts.feed(False, b"b" * 10) == b"a" * 4000 + b"b" * 10
    # too large: raises once, skips the rest of that frame, then works again
    assert parts.feed(True, b"x" * 6000) is None
    with pytest.raises(wire.TooLarge, match="10000"):
        parts.feed(True, b"x" * 6000)
    assert parts.feed(True, b"x" * 6000) is None
    assert parts.feed(False, b"x") is None
    assert parts.feed(False, b"next") == b"next"


def test_registered_types_and_unknown_codes() -> None:
    codec.register_type(Decimal, 9, lambda d: str(d).encode(), lambda b: Decimal(b.decode()))
    data = codec.encode({"price": Decimal("1.25"), "t": (1, 2)})
    assert codec.Decoder().decode(data) == {"price": Decimal("1.25"), "t": [1, 2]}
    with pytest.raises(ValueError, match="registered already"):
        codec.register_type(complex, 9, lambda c: b"", lambda b: 0j)
    with pytest.raises(UnencodableMessage, match="register_type"):
        codec.encode([object()])
    assert codec.encode([1]) == b"\x91\x01"  # the packer is usable after a failure
    decoder = codec.Decoder()
    value = decoder.decode(msgpack.packb([1, msgpack.ExtType(99, b"?")]))
    assert decoder.failed is not None and "99" in decoder.failed.why
    assert codec.contains_undecodable(value) and not codec.contains_undecodable([1, {"a": 2}])


def test_inbox_holds_and_drains() -> None:
    inbox = Inbox(maxsize=4)
    drained: list[Inbox] = []
    assert not inbox.put_many([1, 2, 3])
    assert inbox.put_many([4, 5, 6])  # over the bound: the node holds its link back
    inbox.hold(drained.append)
    assert [inbox.get_nowait() for _ in range(3)] == [1, 2, 3]
    assert drained == []  # 3 left: not yet half empty
    assert inbox.get_nowait() == 4
    assert drained == [inbox] and not inbox.blocking
    with pytest.raises(LookupError):
        Inbox().get_nowait()


def test_inbox_wakes_async_and_thread_getters() -> None:
    inbox = Inbox()

    async def main() -> None:
        waiting = asyncio.create_task(inbox.get())
        await asyncio.sleep(0)  # let it wait
        putter = threading.Thread(target=inbox.put_many, args=(["a"],))
        putter.start()
        async with asyncio.timeout(10):
            assert await waiting == "a"
        putter.join()

    asyncio.run(main())
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(inbox.receive(timeout=10)))
    reader.start()
    inbox.put_many(["b"])
    reader.join(10)
    assert got == ["b"]
    inbox.put_many(["c"])
    inbox.close()
    assert inbox.receive(timeout=1) == "c"  # queued messages are still taken
    with pytest.raises(EOFError):
        inbox.receive(timeout=1)

    async def ended() -> None:
        with pytest.raises(StopAsyncIteration):
            await inbox.get()

    asyncio.run(ended())


@given(st.lists(messages, min_size=0, max_size=20), st.sampled_from([wire.SEND, wire.PUBLISH]))
def test_message_sizes_of_a_batch(batch: list[Any], kind: int) -> None:
    encoded = [codec.encode(m) for m in batch]
    payload = wire.batch_payload(kind, codec.encode_key("box"), encoded)
    assert wire.message_sizes(payload) == [len(m) for m in encoded]


def test_message_sizes_of_calls_and_replies_and_of_what_is_no_messaging_frame() -> None:
    request = codec.encode({"q": b"x" * 70_000})
    call = wire.call_payload(codec.encode_key("box"), codec.encode_key(7), request)
    assert wire.message_sizes(call) == [len(request)]
    value = codec.encode("y" * 300)
    reply = wire.reply_payload(codec.encode_key(7) + codec.encode_key(wire.OK), value)
    assert wire.message_sizes(reply) == [len(value)]
    for bad in (b"", b"\x93", call[:-1], msgpack.packb([wire.SEND, "box"]), msgpack.packb(5)):
        with pytest.raises(ValueError, match="messaging frame"):
            wire.message_sizes(bad)
